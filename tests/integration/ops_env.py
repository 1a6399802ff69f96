"""An isolated copy of the demo ERP for operator-command tests.

Each environment gets its own database (the demo schema loaded from config/demo/erp.sql),
ledger schema, consumer group, topic prefix, dead-letter topic and ports, so tests never
touch the `erp` database, the lead's daemon or its topics. `with_connector` also registers
a Debezium connector of its own (own slot and publication) and removes all of it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, create_engine, text

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.config import SyncdConfig, load_config
from syncd.debezium.connector import render
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from tests.integration.sandbox_process import free_port
from tests.integration.stack import REPO_DIR, Stack

SERVER = os.environ.get(
    "SYNCD_TEST_PG",
    f"postgresql+psycopg://postgres@127.0.0.1:{os.environ.get('SYNCD_PG_PORT', '15432')}",
)


@dataclass
class OpsEnv:
    name: str  # short unique slug, also the database name
    stack: Stack
    config_path: Path
    sandbox_port: int
    metrics_port: int

    @property
    def dsn(self) -> str:
        return f"{SERVER}/{self.name}"

    @property
    def config(self) -> SyncdConfig:
        return load_config(self.config_path)

    def erp(self) -> Engine:
        return create_engine(self.dsn, pool_size=2, max_overflow=0)

    def ledger(self) -> Engine:
        return ledger_engine(
            self.dsn, self.config.database.schema_name, pool_size=2, max_overflow=0
        )

    def syncd(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_DIR,
        )


def _admin() -> Engine:
    return create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")


def create_env(stack: Stack, directory: Path, **overrides: Any) -> OpsEnv:
    """Database with the demo schema and a migrated ledger, plus a config file for it."""
    slug = f"opstest_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{slug}"'))
    admin.dispose()
    erp = create_engine(f"{SERVER}/{slug}")
    with erp.begin() as c:
        c.exec_driver_sql((REPO_DIR / "config" / "demo" / "erp.sql").read_text())
    erp.dispose()
    data = yaml.safe_load((REPO_DIR / "config" / "demo.yaml").read_text())
    sandbox_port, metrics_port = free_port(), free_port()
    data["kafka"].update(
        bootstrap_servers=stack.bootstrap,
        group_id=f"syncd-{slug}",
        topic_prefix=slug,
        dead_letter_topic=f"{slug}.dead-letter",
    )
    data["database"].update(dsn=f"{SERVER}/{slug}", schema_name="syncd_ops")
    data["issuer"].update(
        base_url=f"http://127.0.0.1:{sandbox_port}", app_key=DEV_APP_KEY, app_secret=DEV_APP_SECRET
    )
    data["metrics"].update(port=metrics_port)
    data["connector"].update(name=slug.replace("_", "-"), slot_name=slug, publication_name=slug)
    data["pipeline"]["retry"].update(
        max_attempts=3, backoff_base_seconds=0.2, backoff_max_seconds=1
    )
    for key, value in overrides.items():
        data.setdefault(key, {}).update(value)
    path = directory / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = OpsEnv(slug, stack, path, sandbox_port, metrics_port)
    upgrade(env.dsn, "syncd_ops")
    return env


def drop_env(env: OpsEnv) -> None:
    """Drop the database and every topic named after the env (its own, nobody else's)."""
    kafka = AdminClient({"bootstrap.servers": env.stack.bootstrap})
    mine = [
        t
        for t in kafka.list_topics(timeout=10).topics
        if t.startswith(f"{env.name}.") or t == f"__debezium-heartbeat.{env.name}"
    ]
    if mine:
        for future in kafka.delete_topics(mine, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)
    admin = _admin()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{env.name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def with_connector(env: OpsEnv) -> Iterator[None]:
    """Register a Debezium connector for the env's database; remove it and its slot after."""
    body = render(env.config)
    name = body["name"]
    url = f"{env.stack.connect_url}/connectors/{name}"
    httpx.put(f"{url}/config", json=body["config"], timeout=30).raise_for_status()
    try:
        deadline = time.monotonic() + 120
        while True:
            status = httpx.get(f"{url}/status", timeout=10)
            if status.status_code == 200:
                s = status.json()
                if (
                    s["connector"]["state"] == "RUNNING"
                    and s["tasks"]
                    and all(t["state"] == "RUNNING" for t in s["tasks"])
                ):
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"connector {name} not running: {status.text}")
            time.sleep(1)
        yield
    finally:
        httpx.delete(url, timeout=30)
        slot = env.config.connector.slot_name
        admin = _admin()
        deadline = time.monotonic() + 60
        with admin.connect() as c:
            while time.monotonic() < deadline:
                row = c.execute(
                    text("SELECT active FROM pg_replication_slots WHERE slot_name = :s"),
                    {"s": slot},
                ).first()
                if row is None:
                    break
                if not row.active:
                    c.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
                    break
                time.sleep(0.5)
        admin.dispose()


@dataclass
class Daemon:
    env: OpsEnv
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(self.env.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_DIR,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()
        deadline = time.monotonic() + 90
        ready = f"http://127.0.0.1:{self.env.metrics_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready, timeout=1).status_code == 200:
                    return self
            time.sleep(0.3)
        raise RuntimeError(f"daemon not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def parse_json(stdout: str) -> Any:
    return json.loads(stdout)
