"""Run the real daemon against the real stack, isolated per test.

Isolation: the session creates its own ERP schema `erp_it` (the demo schema under another
name) captured by its own Debezium connector (topic prefix `it`), so tests never see the
demo's orders. Each test gets its own ledger schema, consumer group, sandbox process and
metrics port; its stored offsets are seeded at the topic's end, so a daemon starts exactly
where the test begins -- also after a `kill -9` before it stored anything itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, create_engine, text

from syncd.config import parse_config
from syncd.debezium.connector import render
from syncd.ledger import repository as repo
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.ledger.models import TopicPartition
from tests.integration.sandbox_process import SandboxProcess, free_port
from tests.integration.stack import REPO_DIR, Stack, topic_partitions

IT_SCHEMA = "erp_it"
IT_PREFIX = "it"
IT_CONNECTOR = "syncd-it"
ORDER_TOPIC = f"{IT_PREFIX}.{IT_SCHEMA}.sales_order"
BUYER_TAX_ID = "91110108MA01ABCD2H"
NUONUO_ISSUE = "nuonuo.OpeMplatform.requestBillingNew"
#: The contract suite's dialects: sandbox arguments that make the sandbox speak each one.
DIALECTS: dict[str, dict[str, Any]] = {"sandbox": {}, "nuonuo": {"dialect": "nuonuo"}}
#: The same, where the sandbox's own dialect must refuse repeated serials.
REFUSING_DIALECTS: dict[str, dict[str, Any]] = {
    "sandbox": {"dialect": "refuse-duplicates"},
    "nuonuo": {"dialect": "nuonuo"},
}


def it_config_data(stack: Stack) -> dict[str, Any]:
    """config/demo.yaml moved onto the test schema/connector and the test stack's ports."""
    data = yaml.safe_load((REPO_DIR / "config" / "demo.yaml").read_text())
    data["kafka"]["bootstrap_servers"] = stack.bootstrap
    data["kafka"]["topic_prefix"] = IT_PREFIX
    data["database"]["dsn"] = stack.dsn
    data["connector"].update(name=IT_CONNECTOR, slot_name="syncd_it", publication_name="syncd_it")
    doc = data["documents"]["sales_order"]
    # The demo's corrections (re-issue after a reversal, a return table in the demo
    # schema) are opted into by the tests about them (test_revisions, test_partial_returns):
    # elsewhere a re-confirmation after a reversal must stay "nothing new".
    doc.pop("reissues", None)
    doc.pop("returns", None)
    doc["table"] = f"{IT_SCHEMA}.sales_order"
    doc["lines"]["table"] = f"{IT_SCHEMA}.sales_order_line"
    doc["write_back"]["table"] = f"{IT_SCHEMA}.sales_order"
    data["decimal_scales"] = {
        k.replace("erp.", f"{IT_SCHEMA}.", 1): v for k, v in data.get("decimal_scales", {}).items()
    }
    return data


IT_PARTITIONS = 3


def ensure_topics(bootstrap: str) -> None:
    """The order topic with several partitions (so two replicas can share it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    if ORDER_TOPIC not in existing:
        futures = admin.create_topics([NewTopic(ORDER_TOPIC, IT_PARTITIONS, 1)])
        for future in futures.values():
            with contextlib.suppress(KafkaException):
                future.result(30)


def ensure_it_erp(stack: Stack, engine: Engine) -> None:
    """Create schema erp_it and register its connector (idempotent)."""
    ensure_topics(stack.bootstrap)
    sql = (REPO_DIR / "config" / "demo" / "erp.sql").read_text()
    sql = sql.replace("erp.", f"{IT_SCHEMA}.").replace(
        "SCHEMA IF NOT EXISTS erp;", f"SCHEMA IF NOT EXISTS {IT_SCHEMA};"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    config = parse_config(yaml.safe_dump(it_config_data(stack)))
    connector = render(config)
    body = dict(connector["config"])
    body["database.port"] = str(stack.pg_port)
    url = f"{stack.connect_url}/connectors/{connector['name']}"
    httpx.put(f"{url}/config", json=body, timeout=30).raise_for_status()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/status", timeout=10)
        if status.status_code == 200:
            s = status.json()
            if (
                s["connector"]["state"] == "RUNNING"
                and s["tasks"]
                and all(t["state"] == "RUNNING" for t in s["tasks"])
            ):
                _wait_until_streaming(stack, engine)
                return
            if any(t["state"] == "FAILED" for t in s.get("tasks", [])):
                httpx.post(f"{url}/restart?includeTasks=true&onlyFailed=true", timeout=10)
        time.sleep(0.5)
    raise RuntimeError(f"connector {connector['name']} not RUNNING: {status.text}")


def _wait_until_streaming(stack: Stack, engine: Engine, timeout: float = 90) -> None:
    """Return once the connector streams, i.e. its initial snapshot has been produced.

    A RUNNING task may still be snapshotting the seed orders of erp_it; a test that seeds
    its offsets at the topic's end before those reads land would invoice them. Debezium
    streams only after the snapshot, so a marker row (a DRAFT order: nothing invoices
    it) seen on the topic means the snapshot's records are there too.
    """
    start = high_watermarks(stack.bootstrap, ORDER_TOPIC)
    marker = f"STREAMING-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {IT_SCHEMA}.sales_order (order_no, buyer_name, "
                "buyer_tax_id) VALUES (:no, 'Marker', '91110108MA01ABCD2H')"
            ),
            {"no": marker},
        )
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"it-marker-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([KafkaTP(ORDER_TOPIC, p, o) for p, o in start.items()])
        deadline = time.monotonic() + timeout
        needle = marker.encode()
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None and needle in (msg.value() or b""):
                    return
    finally:
        consumer.close()
    raise RuntimeError(f"connector {IT_CONNECTOR} streams no changes (marker {marker})")


def restart_failed_connector_tasks(stack: Stack) -> None:
    url = f"{stack.connect_url}/connectors/{IT_CONNECTOR}"
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/restart?includeTasks=true&onlyFailed=true", timeout=10)


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "it-watermark"})
    try:
        partitions = topic_partitions(consumer, topic)
        return {
            p: int(consumer.get_watermark_offsets(KafkaTP(topic, p), timeout=10)[1])
            for p in partitions
        }
    finally:
        consumer.close()


@dataclass
class Daemon:
    """One `syncd run` subprocess."""

    config_path: Path
    log_path: Path
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, owner: str | None = None) -> Daemon:
        out = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "syncd", "run", "-c", str(self.config_path)]
        if owner:
            cmd += ["--owner", owner]
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        out.close()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{self.output()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1).status_code
                    == 200
                ):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"daemon not ready in {timeout} s:\n{self.output()[-4000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


@dataclass
class World:
    """Everything one test needs: ERP access, a sandbox, daemon configs, verdicts."""

    stack: Stack
    engine: Engine
    tmp: Path
    sandbox: SandboxProcess
    schema: str = field(default_factory=lambda: f"syncd_t{uuid.uuid4().hex[:8]}")
    group: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")
    daemons: list[Daemon] = field(default_factory=list)
    prefix: str = field(default_factory=lambda: f"T{uuid.uuid4().hex[:6].upper()}")
    _seq: int = 0

    @property
    def provider(self) -> str:
        """The protocol the sandbox speaks: its own (`sandbox`) or Nuonuo's."""
        return "nuonuo" if self.sandbox.dialect == "nuonuo" else "sandbox"

    def issue_calls(self) -> list[dict[str, Any]]:
        """The issue requests the sandbox received, in either dialect."""
        if self.provider == "nuonuo":
            return [r for r in self.sandbox.requests() if r["method"] == NUONUO_ISSUE]
        return [
            r
            for r in self.sandbox.requests()
            if r["method"] == "POST" and r["path"] == "/v1/invoices"
        ]

    def prepare(self) -> None:
        upgrade(self.stack.dsn, self.schema)
        highs = high_watermarks(self.stack.bootstrap, ORDER_TOPIC)
        engine = ledger_engine(self.stack.dsn, self.schema)
        try:
            with engine.begin() as conn:
                tps = [TopicPartition(ORDER_TOPIC, p) for p in highs]
                epochs = repo.claim_partitions(conn, self.group, "test-seed", tps)
                repo.store_offsets(
                    conn, self.group, {tp: (highs[tp.partition], epochs[tp]) for tp in tps}
                )
        finally:
            engine.dispose()

    def config_file(
        self,
        sections: dict[str, Any] | None = None,
        issuer: dict[str, Any] | None = None,
        **pipeline: Any,
    ) -> Path:
        data = it_config_data(self.stack)
        data["kafka"]["group_id"] = self.group
        data["kafka"]["dead_letter_topic"] = f"it.dead-letter.{self.group}"
        # a killed replica's partitions move after 6 s instead of 30 s
        data["kafka"]["properties"] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        data["database"]["schema_name"] = self.schema
        data["issuer"]["base_url"] = self.sandbox.url
        data["issuer"]["read_timeout"] = 3.0
        if self.provider == "nuonuo":
            data["issuer"]["provider"] = "nuonuo"
            data["issuer"]["seller_tax_id"] = data["seller"]["tax_id"]
        data["metrics"]["port"] = free_port()
        data["pipeline"]["migrate_on_start"] = False
        data["pipeline"].setdefault("retry", {}).update(
            backoff_base_seconds=0.2, backoff_max_seconds=2.0, max_attempts=30
        )
        data["pipeline"]["drain_deadline_seconds"] = 10
        data["pipeline"].update(pipeline)
        data["issuer"].update(issuer or {})
        data.update(sections or {})
        path = self.tmp / f"config-{len(self.daemons)}-{uuid.uuid4().hex[:4]}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def daemon(
        self,
        sections: dict[str, Any] | None = None,
        issuer: dict[str, Any] | None = None,
        **pipeline: Any,
    ) -> Daemon:
        path = self.config_file(sections, issuer, **pipeline)
        port = yaml.safe_load(path.read_text())["metrics"]["port"]
        d = Daemon(path, self.tmp / f"syncd-{len(self.daemons)}.log", port)
        self.daemons.append(d)
        return d

    # ------------------------------------------------------------------ ERP side

    def create_order(
        self,
        *,
        lines: int = 2,
        confirm: bool = True,
        buyer_tax_id: str | None = BUYER_TAX_ID,
        invoice_type: str = "ORDINARY",
        rng: random.Random | None = None,
    ) -> int:
        rng = rng or random.Random()
        self._seq += 1
        order_no = f"{self.prefix}-{self._seq:05d}"
        with self.engine.begin() as conn:
            order_id = int(
                conn.execute(
                    text(
                        f"INSERT INTO {IT_SCHEMA}.sales_order (order_no, buyer_name, buyer_tax_id, "
                        "invoice_type, status) VALUES (:no, 'Buyer Ltd.', :tax, :type, 'DRAFT') "
                        "RETURNING id"
                    ),
                    {"no": order_no, "tax": buyer_tax_id, "type": invoice_type},
                ).scalar_one()
            )
            for n in range(1, lines + 1):
                qty = Decimal(rng.randint(1, 9))
                price = Decimal(rng.randint(100, 99999)) / 100
                conn.execute(
                    text(
                        f"INSERT INTO {IT_SCHEMA}.sales_order_line (order_id, line_no, item_name, "
                        "tax_code, unit, quantity, unit_price, tax_rate, amount) VALUES "
                        "(:o, :n, :name, '3040201000000000000', 'hour', :q, :p, :r, :a)"
                    ),
                    {
                        "o": order_id,
                        "n": n,
                        "name": f"Service {n}",
                        "q": qty,
                        "p": price,
                        "r": rng.choice([Decimal("0.13"), Decimal("0.09"), Decimal("0.06")]),
                        "a": (qty * price).quantize(Decimal("0.01")),
                    },
                )
        if confirm:
            self.set_status(order_id, "CONFIRMED")
        return order_id

    def set_status(self, order_id: int, status: str, **columns: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in columns)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {IT_SCHEMA}.sales_order SET status = :s{', ' + sets if sets else ''} "
                    "WHERE id = :id"
                ),
                {"s": status, "id": order_id, **columns},
            )

    def touch(self, order_id: int, remark: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE {IT_SCHEMA}.sales_order SET remark = :r WHERE id = :id"),
                {"r": remark, "id": order_id},
            )

    def orders(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT * FROM {IT_SCHEMA}.sales_order WHERE id = ANY(:ids)"), {"ids": ids}
            ).mappings()
            return {int(r["id"]): dict(r) for r in rows}

    def wait_for(
        self,
        ids: list[int],
        done: Callable[[dict[str, Any]], bool],
        timeout: float = 90,
        what: str = "write-back",
    ) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            rows = self.orders(ids)
            if len(rows) == len(ids) and all(done(r) for r in rows.values()):
                return rows
            time.sleep(0.3)
        pending = {
            i: (r.get("status"), r.get("invoice_status"), r.get("invoice_error"))
            for i, r in rows.items()
            if not done(r)
        }
        logs = "\n".join(d.output()[-3000:] for d in self.daemons)
        raise AssertionError(
            f"{what}: {len(pending)} order(s) not done in {timeout} s: "
            f"{dict(list(pending.items())[:5])}\n--- daemon logs ---\n{logs}"
        )

    def wait_issued(self, ids: list[int], timeout: float = 90) -> dict[int, dict[str, Any]]:
        return self.wait_for(
            ids, lambda r: r["invoice_status"] == "ISSUED" and r["invoice_no"] is not None, timeout
        )

    # ------------------------------------------------------------------ verdicts

    def verdict(self, issued: list[int], reversed_: list[int] = ()) -> None:  # type: ignore[assignment]
        """Exactly one blue invoice per issued order and one red per reversed order, and
        every ERP row carries exactly its invoice number."""
        invoices = self.sandbox.issued()
        blue = [i for i in invoices if i["kind"] == "BLUE"]
        red = [i for i in invoices if i["kind"] == "RED"]
        serials = [i["serial"] for i in invoices]
        assert len(serials) == len(set(serials)), "a serial was issued twice"
        ledger = self.ledger_rows()
        blue_by_no = {i["invoice_no"]: i for i in blue}
        rows = self.orders(list(issued) + list(reversed_))
        expected_blue = len(set(issued) | set(reversed_))
        assert len(blue) == expected_blue, (
            f"sandbox holds {len(blue)} blue invoices, expected {expected_blue}"
        )
        assert len(red) == len(set(reversed_)), (
            f"sandbox holds {len(red)} red invoices, expected {len(set(reversed_))}"
        )
        for order_id in issued:
            row = rows[order_id]
            assert row["invoice_no"] in blue_by_no, f"order {order_id}: {row['invoice_no']}"
        for order_id in reversed_:
            row = rows[order_id]
            assert row["invoice_status"] == "REVERSED"
            assert any(r["original_invoice_no"] == row["invoice_no"] for r in red)
            assert row["red_invoice_no"] in {r["invoice_no"] for r in red}
        by_key = {}
        for r in ledger:
            if r["kind"] == "issue" and r["state"] in ("ISSUED", "REVERSED"):
                assert r["source_key"] not in by_key, f"two issued rows for {r['source_key']}"
                by_key[r["source_key"]] = r

    def ledger_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    text(f'SELECT * FROM "{self.schema}".documents ORDER BY id')
                ).mappings()
            ]

    def cleanup(self) -> None:
        for d in self.daemons:
            d.kill()
        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))


@contextlib.contextmanager
def world(stack: Stack, tmp: Path, **sandbox_args: Any) -> Iterator[World]:
    engine = create_engine(stack.dsn, pool_size=3)
    sandbox = SandboxProcess(store=tmp / "sandbox.db", **sandbox_args).start()
    w = World(stack, engine, tmp, sandbox)
    try:
        w.prepare()
        yield w
    finally:
        w.cleanup()
        sandbox.stop()
        engine.dispose()


def dump(obj: Any) -> str:
    return json.dumps(obj, default=str, indent=1)[:3000]
