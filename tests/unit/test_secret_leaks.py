"""Secrets never leak (issue 20): a distinct secret string in every place a secret can be
configured -- YAML, `*_file` keys, `secrets_dir`, environment variables; the issuer secret,
the base URL's userinfo, the DSN's password and secret query parameters, the SASL and key
passwords, an inline PEM key and an OAuth client secret in Kafka `properties` -- then
every offline command (check-config incl. --live against refused connections, connectors
render, preview with a failing database) in-process, and a real `syncd run` subprocess
pointed at closed loopback ports (refused connections) until it has logged its failures;
its /metrics page is scraped, then it is stopped. Every operator command (status, dlq,
retry, approve/reject, migrate, grants, audit, backfill, decode) runs against the same refused
connections. All output, logs and metrics are searched for the secret strings: zero hits.
(The issuer secret is one key for every provider: nuonuo's app secret is
`issuer.app_secret` too.) The daemon on the real stack, with a dead letter written, is
tests/integration/test_secret_leaks_live.py."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syncd.cli import main
from tests.unit.config_helpers import DATA, DEMO, ROOT

SECRETS = {
    "issuer app_secret (app_secret_file)": "LeakAppSecret7c1e",
    "issuer base_url userinfo": "LeakUrlPassword41d",
    "issuer proxy userinfo": "LeakProxyPassword0c7",
    "database dsn password (secrets_dir)": "LeakDbPassword9a2",
    "database dsn ?password=": "LeakDbQueryPw5b8",
    "database dsn ?sslpassword=": "LeakDbSslPw3e6",
    "kafka sasl_password (environment)": "LeakSaslPw2f4",
    "kafka ssl_key_password_file": "LeakKeyPw8d3",
    "kafka properties ssl.key.pem": "LeakPemBodyMIIEvQIBADANBgkqhkiG9w0BAQEFAASC0123456789",
    "kafka properties sasl.oauthbearer.config": "LeakOauthSecret6a9",
    "audit checkpoint_key_file": "LeakCheckpointKey0f5e2d",
}
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    f"{SECRETS['kafka properties ssl.key.pem']}\n"
    "-----END PRIVATE KEY-----\n"
)


def _closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port() -> int:
    return _closed_port()


def hits(text: str) -> list[str]:
    return [where for where, secret in SECRETS.items() if secret in text]


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """The demo config with every secret seeded, and the environment that carries some."""
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_"):
            monkeypatch.delenv(name)
    kafka_port, db_port, issuer_port = _closed_port(), _closed_port(), _closed_port()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "database__dsn").write_text(
        f"postgresql+psycopg://syncd:{SECRETS['database dsn password (secrets_dir)']}"
        f"@127.0.0.1:{db_port}/erp?password={SECRETS['database dsn ?password=']}"
        f"&sslpassword={SECRETS['database dsn ?sslpassword=']}&connect_timeout=2\n"
    )
    (tmp_path / "app-secret").write_text(SECRETS["issuer app_secret (app_secret_file)"] + "\n")
    (tmp_path / "key-password").write_text(SECRETS["kafka ssl_key_password_file"] + "\n")
    (tmp_path / "checkpoint-key").write_text(SECRETS["audit checkpoint_key_file"] + "\n")
    oauth = f"clientId=syncd clientSecret={SECRETS['kafka properties sasl.oauthbearer.config']}"
    text = DEMO.read_text(encoding="utf-8")
    edits = {
        "  bootstrap_servers: 127.0.0.1:19092\n": (
            f"  bootstrap_servers: 127.0.0.1:{kafka_port}\n"
            "  security_protocol: SASL_PLAINTEXT\n"
            "  sasl_mechanism: SCRAM-SHA-512\n"
            "  sasl_username: syncd\n"
            f"  ssl_key_password_file: {tmp_path / 'key-password'}\n"
            "  properties:\n"
            f"    ssl.key.pem: {json.dumps(PEM)}\n"
            f"    sasl.oauthbearer.config: {json.dumps(oauth)}\n"
            "    reconnect.backoff.max.ms: 1000\n"
        ),
        "  base_url: http://127.0.0.1:18700\n": (
            f"  base_url: http://syncd:{SECRETS['issuer base_url userinfo']}"
            f"@127.0.0.1:{issuer_port}\n"
            f"  proxy: http://egress:{SECRETS['issuer proxy userinfo']}@127.0.0.1:{_free_port()}\n"
        ),
        "  app_secret: syncd-dev-secret-do-not-use-in-production\n": (
            f"  app_secret_file: {tmp_path / 'app-secret'}\n"
        ),
        "  migrate_on_start: true\n": "  migrate_on_start: false\n",
        "  drain_deadline_seconds: 20\n": "  drain_deadline_seconds: 2\n",
        "  port: 9464\n": f"  port: {_free_port()}\n",
        "  level: INFO\n": "  level: DEBUG\n",
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    text = f"secrets_dir: {secrets_dir}\n" + text
    text += f"\naudit:\n  checkpoint_key_file: {tmp_path / 'checkpoint-key'}\n"
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    env = {"SYNCD_KAFKA__SASL_PASSWORD": SECRETS["kafka sasl_password (environment)"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Every secret really is in the config: the test seeds what it searches for.
    from syncd.config import load_config

    config = load_config(path)
    registered = "\n".join(config.secret_values())
    assert not [w for w, s in SECRETS.items() if s not in registered]
    return path, env


def test_the_daemon_registers_every_secret_for_log_redaction(seeded):
    """`syncd run` feeds the whole registry to the log redaction, not only the issuer's."""
    from syncd.commands.run import _secrets
    from syncd.config import load_config

    registered = "\n".join(_secrets(load_config(seeded[0])))
    assert [w for w, s in SECRETS.items() if s not in registered] == []


def test_offline_commands_print_no_secret(seeded, capfd, caplog, tmp_path):
    path, _env = seeded
    caplog.set_level(logging.DEBUG)
    runs = [
        ["check-config", "-c", str(path)],
        ["check-config", "-c", str(path), "--format", "json"],
        ["check-config", "-c", str(path), "--live", "--timeout", "2"],
        ["connectors", "render", "-c", str(path)],
        ["preview", "-c", str(path), "--event", str(DATA / "sales_order_confirmed.json")],
    ]
    seen = []
    for argv in runs:
        code = main(argv)
        out, err = capfd.readouterr()
        seen.append((argv, code, out + err))
    # The issuer client against its refused port: the result and the client's repr.
    from syncd.commands.run import issuer_settings
    from syncd.config import load_config
    from syncd.issuers.registry import create_issuer

    config = load_config(path)
    with create_issuer(config.issuer.provider, issuer_settings(config, 1)) as issuer:  # type: ignore[attr-defined]
        result = issuer.query("SERIAL-1")
        seen.append((["issuer", "query"], 0, f"{result!r} {issuer!r}"))
    assert "Connect" in repr(result) or "refused" in repr(result).lower()
    logs = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    leaks = {" ".join(argv[:2]): hits(text) for argv, _code, text in seen if hits(text)}
    assert leaks == {}
    assert hits(logs) == []
    assert [code for _argv, code, _text in seen] == [0, 0, 6, 0, 2, 0]
    # The failing paths really ran: --live and preview could not reach anything.
    live = next(text for argv, _c, text in seen if "--live" in argv)
    assert "database" in live and ("unreachable" in live or "cannot inspect" in live)
    preview = next(text for argv, _c, text in seen if argv[0] == "preview")
    assert "cannot read lines" in preview


def _operator_commands(path: Path) -> list[list[str]]:
    """Every operator command of `syncd --help`, each with --json where it has it."""
    c = ["-c", str(path)]
    doc, why = ["--document", "1"], ["--reason", "r"]
    backfill = ["--document", "sales_order", "--where", "{column: id, above: 0}"]
    runs = [
        ["status", *c, "--kafka-timeout", "1"],
        ["status", *c, "--kafka-timeout", "1", "--json"],
        ["status", *c, "--document", "1"],
        ["status", *c, "--document", "1", "--json"],
        ["dlq", "list", *c, "--timeout", "1"],
        ["dlq", "list", *c, "--timeout", "1", "--json"],
        ["dlq", "replay", *c, "--timeout", "1", *why],
        ["dlq", "replay", *c, "--timeout", "1", *why, "--json"],
        ["dlq", "replay", *c, "--timeout", "1", *why, "--dry-run"],
        ["retry", *c, *doc, *why],
        ["retry", *c, *doc, *why, "--json"],
        ["approve", *c, *doc, *why],
        ["approve", *c, *doc, *why, "--json"],
        ["reject", *c, *doc, *why, "--json"],
        ["migrate", *c],
        ["migrate", *c, "--json"],
        ["migrate", *c, "--check"],
        ["migrate", *c, "--check", "--json"],
        ["grants", *c],
        ["grants", *c, "--json"],
        ["grants", *c, "--people"],
        ["grants", *c, "--people", "--json"],
        ["audit", "show", *c, *doc],
        ["audit", "show", *c, *doc, "--json"],
        ["audit", "verify", *c],
        ["audit", "verify", *c, "--json"],
        ["audit", "export", *c, "--from", "2026-01-01", "--to", "2026-01-02"],
        ["audit", "export", *c, "--from", "2026-01-01", "--to", "2026-01-02", "--json"],
        ["audit", "prune", *c, "--before", "2026-01-01", *why, "--dry-run", "--json"],
        ["audit", "prune", *c, "--before", "2026-01-01", *why, "--json"],
        ["red-forms", "list", *c],
        ["red-forms", "list", *c, "--json"],
        ["red-forms", "list", *c, "--refresh", "--json"],
        ["red-forms", "confirm", "BF00000000000001", *c, *why],
        ["red-forms", "reject", "BF00000000000001", *c, *why, "--json"],
        ["backfill", *c, *backfill, *why],
        ["backfill", *c, *backfill, *why, "--dry-run", "--json"],
        ["reconcile", *c, "--from", "2026-01-01", "--to", "2026-01-31"],
        ["reconcile", *c, "--from", "2026-01-01", "--to", "2026-01-31", "--format", "json"],
        ["export", *c, "--from", "2026-01-01", "--to", "2026-01-02"],
        ["export", *c, "--from", "2026-01-01", "--to", "2026-01-02", "--format", "json"],
        [
            "export",
            *c,
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
            "--format",
            "ubl",
            "--output",
            str(path.parent / "export.zip"),
            "--json",
        ],
        ["files", "get", *c, "--invoice", "1", "--format", "pdf"],
        ["files", "status", *c],
        ["files", "status", *c, "--json"],
        ["files", "fetch", *c],
        ["connectors", "render", *c],
        ["decode", "--event", str(DATA / "sales_order_confirmed.json")],
    ]
    return runs


def test_every_operator_command_against_refused_connections_prints_no_secret(
    seeded, capfd, caplog, tmp_path
):
    """Each command fails (or answers) with its one-line message; no secret, no traceback."""
    path, _env = seeded
    caplog.set_level(logging.DEBUG)
    seen = []
    for argv in _operator_commands(path):
        started = time.monotonic()
        code = main(argv)
        out, err = capfd.readouterr()
        seen.append((argv, code, out + err, time.monotonic() - started))
    logs = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    leaks = {" ".join(argv): hits(text) for argv, _code, text, _t in seen if hits(text)}
    assert leaks == {}
    assert hits(logs) == []
    tracebacks = [" ".join(argv) for argv, _c, text, _t in seen if "Traceback" in text]
    assert tracebacks == []
    # The connection failures really happened: every command that needs the database or
    # Kafka failed (non-zero), and each said something.
    offline = {"grants", "connectors", "decode"}
    failed_online = [
        " ".join(argv) for argv, code, _text, _t in seen if argv[0] not in offline and code == 0
    ]
    assert failed_online == []
    silent = [" ".join(argv) for argv, _c, text, _t in seen if not text.strip()]
    assert silent == []
    slow = [(" ".join(argv), round(t, 1)) for argv, _c, _text, t in seen if t > 15]
    assert slow == []


def test_daemon_logs_and_metrics_hold_no_secret(seeded, tmp_path):
    path, env = seeded
    config_text = path.read_text(encoding="utf-8")
    metrics_port = int(config_text.split("\nmetrics:\n", 1)[1].split("port: ", 1)[1].split()[0])
    out_file, err_file = tmp_path / "daemon.out", tmp_path / "daemon.err"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(path)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=err,
        )
        pages: dict[str, str] = {}
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and proc.poll() is None:
                logged = out_file.read_text(encoding="utf-8", errors="replace")
                if "refused" in logged.lower() and "consuming" in logged:
                    pages = {p: _get(metrics_port, p) for p in ("/metrics", "/readyz")}
                    # Kafka refused (logged) and the database refused (readiness says so).
                    if "ERP database unreachable" in pages["/readyz"]:
                        break
                time.sleep(0.3)
            assert proc.poll() is None, "the daemon must keep running through refused connections"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("the daemon did not stop on SIGTERM")
    stdout = out_file.read_text(encoding="utf-8", errors="replace")
    stderr = err_file.read_text(encoding="utf-8", errors="replace")
    context = f"daemon output:\n{stdout[-3000:]}{stderr[-3000:]}"
    assert "ERP database unreachable" in pages.get("/readyz", ""), context
    assert "syncd_events_consumed_total" in pages["/metrics"]
    assert "refused" in stdout.lower()  # the failure paths were exercised and logged
    assert "received SIGTERM: stopping" in stdout
    assert hits(stdout) == []
    assert hits(stderr) == []
    assert hits(pages["/metrics"] + pages["/readyz"]) == []


def _get(port: int, path: str) -> str:
    """A health page's body, also for an error status (/readyz answers 503 here)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except OSError:
        return ""
