"""syncd through the secured stack (SYNCD_STACK_SECURE=1): every transport verified.

The daemon issues and writes back through Kafka SASL_SSL (SCRAM-SHA-512, the stack's CA),
PostgreSQL `sslmode=verify-full` as a role that may log in over TLS only, and the sandbox
over HTTPS trusted through `issuer.ca_file`; then once more through the mutual-TLS
listener with a client certificate. The Debezium connector rendered from a verify-full
DSN reads PostgreSQL over TLS. And each way trust can be wrong -- a CA that signed
nothing, a wrong SCRAM password, a host name the certificate does not name, an issuer
whose CA is unknown -- is one line from `syncd check-config --live`, within its timeout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine, text

from syncd.config import parse_config
from syncd.debezium.connector import render
from tests.integration.daemon_harness import IT_SCHEMA, Daemon, World, it_config_data, world
from tests.integration.stack import Stack

#: `check-config --live` gets this long per dependency; the whole command must end well
#: within a small multiple of it (no hang on a handshake that cannot succeed).
LIVE_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def secured(it_erp: Stack) -> Stack:
    for port in (it_erp.sasl_port, it_erp.mtls_port):
        with socket.socket() as s:
            s.settimeout(5)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                pytest.fail(
                    f"the secured listener 127.0.0.1:{port} is not up: start the stack with "
                    "SYNCD_STACK_SECURE=1 (make stack-up-secure)"
                )
    assert (it_erp.tls_dir / "ca.pem").is_file()
    return it_erp


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the stack serves."""
    where = tmp_path_factory.mktemp("other-ca")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=some other CA", "-keyout", str(where / "ca.key"),
            "-out", str(where / "ca.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return where / "ca.pem"


class TlsRole:
    """A login role that may connect over TLS only (member of the stack's `syncd_tls`
    group: `hostssl ... scram-sha-256`, plain `host` lines reject it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = f"syncd_tls_{uuid.uuid4().hex[:8]}"
        self.password = secrets.token_hex(12)

    def create(self) -> TlsRole:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE ROLE {self.name} LOGIN PASSWORD '{self.password}' IN ROLE syncd_tls"
            )
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {IT_SCHEMA} TO {self.name}")
            conn.exec_driver_sql(
                f"GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA {IT_SCHEMA} TO {self.name}"
            )
        return self

    def grant_ledger(self, schema: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO {self.name}')
            conn.exec_driver_sql(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO {self.name}')
            conn.exec_driver_sql(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{schema}" TO {self.name}')

    def dsn(self, stack: Stack, ca: Path, host: str = "127.0.0.1", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"sslrootcert": ca, **params}.items())
        return (
            f"postgresql+psycopg://{self.name}:{self.password}@{host}:{stack.pg_port}/erp"
            f"?sslmode=verify-full&{query}"
        )

    def tls_sessions(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s "
                        "USING (pid) WHERE a.usename = :u AND s.ssl"
                    ),
                    {"u": self.name},
                ).scalar_one()
            )

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                {"u": self.name},
            )
            conn.exec_driver_sql(f"DROP OWNED BY {self.name}")
            conn.exec_driver_sql(f"DROP ROLE {self.name}")


@pytest.fixture
def tls_role(secured: Stack, erp_engine: Engine) -> Iterator[TlsRole]:
    role = TlsRole(erp_engine).create()
    try:
        yield role
    finally:
        role.drop()


def sasl_kafka(stack: Stack, tmp: Path, **over: Any) -> dict[str, Any]:
    password_file = tmp / "kafka-sasl-password"
    password_file.write_text(over.pop("password", stack.scram_password) + "\n")
    return {
        "bootstrap_servers": f"127.0.0.1:{stack.sasl_port}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "syncd",
        "sasl_password_file": str(password_file),
        "ssl_ca_location": str(over.pop("ca", stack.tls_dir / "ca.pem")),
        **over,
    }


def mtls_kafka(stack: Stack) -> dict[str, Any]:
    tls = stack.tls_dir
    return {
        "bootstrap_servers": f"127.0.0.1:{stack.mtls_port}",
        "security_protocol": "SSL",
        "ssl_ca_location": str(tls / "ca.pem"),
        "ssl_certificate_location": str(tls / "client.pem"),
        "ssl_key_location": str(tls / "client.key"),
    }


def tls_sandbox(stack: Stack) -> dict[str, Path]:
    tls = stack.tls_dir
    return {"tls_cert": tls / "server.pem", "tls_key": tls / "server.key", "tls_ca": tls / "ca.pem"}


def secured_daemon(w: World, role: TlsRole, kafka: dict[str, Any]) -> Daemon:
    """The test's daemon config with every transport secured."""
    path = w.config_file()
    data = yaml.safe_load(path.read_text())
    data["kafka"].update(kafka)
    data["database"]["dsn"] = role.dsn(w.stack, w.stack.tls_dir / "ca.pem")
    data["issuer"]["ca_file"] = str(w.stack.tls_dir / "ca.pem")
    assert data["issuer"]["base_url"].startswith("https://")
    path.write_text(yaml.safe_dump(data))
    d = Daemon(path, w.tmp / f"syncd-tls-{len(w.daemons)}.log", data["metrics"]["port"])
    w.daemons.append(d)
    return d


def test_daemon_issues_through_sasl_ssl_verify_full_and_https(
    secured: Stack, tls_role: TlsRole, tmp_path: Path
) -> None:
    with world(secured, tmp_path, **tls_sandbox(secured)) as w:
        tls_role.grant_ledger(w.schema)
        d = secured_daemon(w, tls_role, sasl_kafka(secured, tmp_path)).start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(3)]
        w.wait_issued(ids)
        w.verdict(issued=ids)
        # Its database sessions are TLS ones (the role could not log in otherwise).
        assert tls_role.tls_sessions() >= 1
        assert d.terminate() == 0
        assert tls_role.password not in d.output() and secured.scram_password not in d.output()


def test_daemon_issues_through_the_mutual_tls_listener(
    secured: Stack, tls_role: TlsRole, tmp_path: Path
) -> None:
    with world(secured, tmp_path, **tls_sandbox(secured)) as w:
        tls_role.grant_ledger(w.schema)
        d = secured_daemon(w, tls_role, mtls_kafka(secured)).start()
        d.wait_ready()
        ids = [w.create_order()]
        w.wait_issued(ids)
        w.verdict(issued=ids)


def test_rendered_connector_reads_postgres_over_verified_tls(
    secured: Stack, tls_role: TlsRole, erp_engine: Engine
) -> None:
    """`connectors render` carries the DSN's verify-full and CA into database.ssl*; the
    connector registered from it holds a TLS replication session."""
    name = f"syncd-tls-{uuid.uuid4().hex[:6]}"
    slot = name.replace("-", "_")
    data = it_config_data(secured)
    data["database"]["dsn"] = tls_role.dsn(secured, secured.tls_dir / "ca.pem")
    data["kafka"]["topic_prefix"] = slot
    data["connector"].update(
        name=name,
        slot_name=slot,
        publication_name=slot,
        snapshot_mode="no_data",
        database={"user": "postgres"},
    )
    body = render(parse_config(yaml.safe_dump(data)))
    conf = body["config"]
    assert conf["database.sslmode"] == "verify-full"
    assert conf["database.sslrootcert"] == str(secured.tls_dir / "ca.pem")
    assert tls_role.password not in str(body)
    url = f"{secured.connect_url}/connectors/{name}"
    httpx.put(f"{url}/config", json=conf, timeout=30).raise_for_status()
    try:
        deadline = time.monotonic() + 90
        ssl_session: bool | None = None
        while time.monotonic() < deadline:
            with erp_engine.connect() as conn:
                ssl_session = conn.execute(
                    text(
                        "SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s "
                        "ON s.pid = r.active_pid WHERE r.slot_name = :slot"
                    ),
                    {"slot": slot},
                ).scalar()
            if ssl_session is not None:
                break
            status = httpx.get(f"{url}/status", timeout=10).json()
            assert "FAILED" not in str(status), status
            time.sleep(0.5)
        assert ssl_session is True, f"slot {slot} not streaming over TLS"
    finally:
        httpx.delete(url, timeout=30)
        _drop_slot(erp_engine, slot)


def _drop_slot(engine: Engine, slot: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), engine.begin() as conn:
            active = conn.execute(
                text("SELECT active FROM pg_replication_slots WHERE slot_name = :s"), {"s": slot}
            ).scalar()
            if active is None:
                break
            if not active:
                conn.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
                break
        time.sleep(0.5)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP PUBLICATION IF EXISTS {slot}")


# ---------------------------------------------------------------------- trust gone wrong


def live_check(tmp: Path, stack: Stack, **sections: dict[str, Any]) -> tuple[int, list[str], float]:
    """`syncd check-config --live` on the test config with `sections` merged in:
    (exit code, stderr lines, seconds)."""
    data = it_config_data(stack)
    for name, values in sections.items():
        data[name].update(values)
    path = tmp / f"check-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "check-config", "-c", str(path), "--live", "--quiet",
         "--timeout", str(LIVE_TIMEOUT)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and not result.stdout.strip(), result
    return result.returncode, lines, time.monotonic() - started


def test_the_secured_config_passes_the_live_check(
    secured: Stack, tls_role: TlsRole, tmp_path: Path
) -> None:
    with world(secured, tmp_path, **tls_sandbox(secured)) as w:
        code, lines, _ = live_check(
            tmp_path,
            secured,
            kafka=sasl_kafka(secured, tmp_path),
            database={"dsn": tls_role.dsn(secured, secured.tls_dir / "ca.pem")},
            issuer={"base_url": w.sandbox.url, "ca_file": str(secured.tls_dir / "ca.pem")},
        )
    assert code == 0, lines
    assert lines[-1].endswith("OK (live)")


@pytest.mark.parametrize(
    ("case", "exit_code", "needle"),
    [
        ("kafka-unknown-ca", 5, "certificate verify failed"),
        ("kafka-wrong-password", 5, "Authentication failed"),
        ("kafka-mtls-without-client-cert", 5, "unreachable"),
        ("postgres-host-name-mismatch", 4, 'does not match host name "syncd-db.invalid"'),
        ("postgres-unknown-ca", 4, "certificate verify failed"),
        ("issuer-unknown-ca", 2, "issuer.base_url: TLS to 127.0.0.1:"),
    ],
)
def test_wrong_trust_is_one_clear_line(
    secured: Stack,
    tls_role: TlsRole,
    other_ca: Path,
    tmp_path: Path,
    case: str,
    exit_code: int,
    needle: str,
) -> None:
    ca = secured.tls_dir / "ca.pem"
    kafka = sasl_kafka(secured, tmp_path)
    dsn = tls_role.dsn(secured, ca)
    issuer: dict[str, Any] = {}
    if case == "kafka-unknown-ca":
        kafka = sasl_kafka(secured, tmp_path, ca=other_ca)
    elif case == "kafka-wrong-password":
        kafka = sasl_kafka(secured, tmp_path, password="not-the-password")
    elif case == "kafka-mtls-without-client-cert":
        kafka = {**mtls_kafka(secured), "ssl_certificate_location": None, "ssl_key_location": None}
    elif case == "postgres-host-name-mismatch":
        # Connects to 127.0.0.1 but checks the certificate against another name.
        dsn = tls_role.dsn(secured, ca, host="syncd-db.invalid", hostaddr="127.0.0.1")
    elif case == "postgres-unknown-ca":
        dsn = tls_role.dsn(secured, other_ca)
    with contextlib.ExitStack() as stack:
        if case == "issuer-unknown-ca":
            w = stack.enter_context(world(secured, tmp_path, **tls_sandbox(secured)))
            issuer = {"base_url": w.sandbox.url, "ca_file": str(other_ca)}
        code, lines, took = live_check(
            tmp_path,
            secured,
            kafka=kafka,
            database={"dsn": dsn},
            issuer=issuer,
        )
    assert code == exit_code, lines
    # (the test topics' dead-letter topic may not exist yet: a warning, not the problem)
    problem = [line for line in lines if not line.endswith("problem(s)") and "warning:" not in line]
    assert len(problem) == 1, lines
    assert needle in problem[0], problem[0]
    assert tls_role.password not in problem[0] and secured.scram_password not in problem[0]
    assert took < 3 * LIVE_TIMEOUT + 15, f"{case}: {took:.1f} s"
