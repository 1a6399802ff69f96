"""Secrets never leak, on the real stack: the daemon runs with a distinct secret string in
every place the stack accepts any value -- the issuer's app secret (from a file, shared
with the sandbox through `--app-secret-file`), the DSN's `sslpassword` query parameter
(unused without an encrypted client key), the SASL and key passwords and an OAuth client
secret in Kafka `properties` (unused on the plaintext listener), the audit checkpoint key.
The issuer's base URL carries userinfo. In both dialects (syncd's sandbox and Nuonuo's,
whose token request carries the app secret) it invoices a real order through two HTTP 500
answers (every signed request carries the app secret) and dead-letters a crafted poison
record. Then its log, /metrics, /readyz, the operator commands' output
(`status`, `dlq list`) and the dead-letter record's headers and value are searched for
every secret: zero hits. (The offline sweep against refused connections is
tests/unit/test_secret_leaks.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, Producer

from tests import crafted
from tests.integration.daemon_harness import DIALECTS, IT_SCHEMA, ORDER_TOPIC, world
from tests.integration.stack import Stack

SECRETS = {
    "issuer app_secret_file": "LiveLeakAppSecret5d1c",
    "issuer base_url userinfo": "LiveLeakUrlPw0b3a",
    "database dsn ?sslpassword=": "LiveLeakSslPw8e27",
    "kafka sasl_password": "LiveLeakSaslPw3f90",
    "kafka ssl_key_password": "LiveLeakKeyPw61ab",
    "kafka properties sasl.oauthbearer.config": "LiveLeakOauth7c44",
    "audit checkpoint_key_file": "LiveLeakCheckpointKey29e0",
}
POISON = "key_decimal_scale_negative"


def hits(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [where for where, secret in SECRETS.items() if secret in text]


def dead_letters(bootstrap: str, topic: str, want: int, timeout: float = 60) -> list[object]:
    """Every record of the dead-letter topic, polled until `want` are there."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-leak-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    records: list[object] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(records) < want:
            records += [m for m in consumer.consume(10, 1.0) if m.error() is None]
    finally:
        consumer.close()
    return records


def syncd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_daemon_log_metrics_and_dead_letters_hold_no_secret(
    it_erp: Stack, tmp_path: Path, dialect: str
):
    app_secret = tmp_path / "app-secret"
    app_secret.write_text(SECRETS["issuer app_secret_file"] + "\n")
    checkpoint_key = tmp_path / "checkpoint-key"
    checkpoint_key.write_text(SECRETS["audit checkpoint_key_file"] + "\n")
    oauth = f"clientId=syncd clientSecret={SECRETS['kafka properties sasl.oauthbearer.config']}"
    separator = "&" if "?" in it_erp.dsn else "?"
    sandbox = {**DIALECTS[dialect], "extra_args": ["--app-secret-file", str(app_secret)]}
    with world(it_erp, tmp_path, **sandbox) as w:
        userinfo = f"syncd:{SECRETS['issuer base_url userinfo']}@"
        base_url = w.sandbox.url.replace("://", f"://{userinfo}", 1)
        d = w.daemon(
            issuer={"app_secret": None, "app_secret_file": str(app_secret), "base_url": base_url}
        )
        data = yaml.safe_load(d.config_path.read_text())
        data["database"]["dsn"] = (
            f"{it_erp.dsn}{separator}sslpassword={SECRETS['database dsn ?sslpassword=']}"
        )
        data["kafka"]["sasl_password"] = SECRETS["kafka sasl_password"]
        data["kafka"]["ssl_key_password"] = SECRETS["kafka ssl_key_password"]
        data["kafka"]["properties"]["sasl.oauthbearer.config"] = oauth
        data["audit"] = {"checkpoint_key_file": str(checkpoint_key)}
        data["logging"]["level"] = "DEBUG"
        d.config_path.write_text(yaml.safe_dump(data))
        from syncd.config import load_config

        registered = "\n".join(load_config(d.config_path).secret_values())
        assert [w for w, s in SECRETS.items() if s not in registered] == []

        d.start()
        d.wait_ready()
        # the issuer's error path runs too: its first two issue calls answer 500
        w.sandbox.set_faults(fail_next_issue_calls=2, error_mode="http_500")
        order = w.create_order()
        key, value = crafted.corpus(IT_SCHEMA)[POISON]
        producer = Producer({"bootstrap.servers": it_erp.bootstrap})
        producer.produce(ORDER_TOPIC, key=key, value=value)
        producer.flush(30)
        w.wait_issued([order], timeout=120)
        letters = dead_letters(it_erp.bootstrap, data["kafka"]["dead_letter_topic"], want=1)
        assert len(letters) == 1, d.output()[-3000:]
        metrics = d.metrics()
        assert 'reason="undecodable"' in metrics
        assert 'status_class="5xx"' in metrics
        readyz = httpx.get(f"http://127.0.0.1:{d.metrics_port}/readyz", timeout=5).text
        commands = [
            syncd("status", "-c", str(d.config_path), "--json"),
            syncd("status", "-c", str(d.config_path)),
            syncd("dlq", "list", "-c", str(d.config_path), "--json"),
            syncd("dlq", "list", "-c", str(d.config_path)),
        ]
        assert d.terminate() == 0
        log = d.output()

    (letter,) = letters
    headers = letter.headers() or []  # type: ignore[attr-defined]
    assert any(name.startswith("syncd.") for name, _v in headers)  # the reason is there
    header_text = "\n".join(f"{name}={(v or b'').decode(errors='replace')}" for name, v in headers)
    assert hits(header_text) == []
    assert hits(letter.value() or b"") == []  # type: ignore[attr-defined]
    assert hits(letter.key() or b"") == []  # type: ignore[attr-defined]
    assert hits(metrics) == []
    assert hits(readyz) == []
    assert [c.returncode for c in commands] == [0, 0, 0, 0], [c.stderr for c in commands]
    printed = {i: hits(c.stdout + c.stderr) for i, c in enumerate(commands)}
    assert {i: found for i, found in printed.items() if found} == {}
    assert "dead letter" in log.lower() or "dead-letter" in log.lower()
    assert "Traceback" not in log
    assert hits(log) == []
