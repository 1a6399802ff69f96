"""The intake's batch path records exactly what the per-record path records.

Real Debezium events of real ERP orders (schema `erp_it`) go through `Intake.run` twice:
once as one poll batch (new keys: a few batch queries and one multi-row INSERT) and once
record by record (the plain path), each into its own ledger schema. Both ledgers must hold
the same documents -- identities, serials, states and frozen payloads -- and a key that
occurs twice in the batch (confirmed, then cancelled) must be handled in order. Replaying
the batch records nothing new.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTP
from sqlalchemy import Engine, text

from syncd.changes import RecordPosition
from syncd.config import parse_config
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.observability.metrics import DocumentOutcome
from syncd.pipeline.classify import Classified, Classifier, Kind
from syncd.pipeline.intake import Intake, IntakeResult
from tests.integration.daemon_harness import (
    IT_SCHEMA,
    ORDER_TOPIC,
    high_watermarks,
    it_config_data,
    world,
)
from tests.integration.stack import Stack


def _events(
    stack: Stack, start: dict[int, int], order_ids: set[int], count: int
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"it-batch-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([KafkaTP(ORDER_TOPIC, p, o) for p, o in start.items()])
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 90
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            body = json.loads(msg.value() or b"{}")
            after = body.get("payload", body).get("after") or {}
            if after.get("id") in order_ids:
                out.append((msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value()))
    finally:
        consumer.close()
    assert len(out) >= count, f"only {len(out)} of {count} events arrived"
    return sorted(out, key=lambda e: (e[0], e[1]))


def _ledger(engine: Engine, schema: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT source_key, kind, revision, serial, state, payload "
                f'FROM "{schema}".documents '
                "ORDER BY source_key, kind, revision"
            )
        ).mappings()
        return [dict(r) for r in rows]


def _run(
    stack: Stack, schema: str, intake: Intake, batches: list[list[Classified]]
) -> list[IntakeResult]:
    engine = ledger_engine(stack.dsn, schema)
    try:
        results = []
        for batch in batches:
            with engine.begin() as conn:
                # no partition claimed here: the intake stores no offsets
                results.append(intake.run(conn, batch, {}))
        return results
    finally:
        engine.dispose()


def test_batch_path_records_the_same_documents_as_the_per_record_path(
    it_erp: Stack, tmp_path: Path
) -> None:
    with world(it_erp, tmp_path) as w:
        start = high_watermarks(it_erp.bootstrap, ORDER_TOPIC)
        ids = [w.create_order(lines=1 + n % 3) for n in range(8)]
        cancelled = ids[-1]
        w.set_status(cancelled, "CANCELLED", cancel_reason="ERROR")
        # 8 inserts, 8 confirmations, 1 cancellation
        events = _events(it_erp, start, set(ids), count=17)
        config = parse_config(yaml.safe_dump(it_config_data(it_erp)))
        classifier = Classifier(config)
        records = [
            classifier.classify(RecordPosition(ORDER_TOPIC, p, o), k, v) for p, o, k, v in events
        ]
        records = [r for r in records if r.kind in (Kind.ISSUE, Kind.REVERSE)]
        assert sum(r.kind is Kind.ISSUE for r in records) == 8
        assert sum(r.kind is Kind.REVERSE for r in records) == 1

        batched, single = f"syncd_b{uuid.uuid4().hex[:8]}", f"syncd_s{uuid.uuid4().hex[:8]}"
        try:
            for schema in (batched, single):
                upgrade(it_erp.dsn, schema)
            intake = Intake(config, group="it-batch", owner="it-batch")
            [together] = _run(it_erp, batched, intake, [records])
            one_by_one = _run(it_erp, single, intake, [[r] for r in records])

            a, b = _ledger(w.engine, batched), _ledger(w.engine, single)
            assert a == b
            assert len(a) == 8 and all(r["state"] == "READY" for r in a)
            for row in a:
                order_id = json.loads(row["source_key"])["id"]
                assert row["payload"]["serial"] == row["serial"]
                assert len(row["payload"]["lines"]) == 1 + ids.index(order_id) % 3
            # the cancelled order's reversal waits for its invoice, in both paths
            assert [d for d, _ in together.deferred] and len(together.deferred) == 1
            assert sum(len(r.deferred) for r in one_by_one) == 1
            assert len(together.to_drive) >= 8
            # (partition, offset): two partitions may well hold the same offsets
            finished = {(tp, o) for tp, offs in together.finished.items() for o in offs}
            assert len(finished) == 8  # every record but the deferred cancellation
            with w.engine.connect() as conn:
                orders: dict[Any, Any] = dict(
                    conn.execute(
                        text(
                            f"SELECT id, order_no FROM {IT_SCHEMA}.sales_order WHERE id = ANY(:ids)"
                        ),
                        {"ids": ids},
                    ).all()
                )
            for row in a:
                assert row["payload"]["remark"] == orders[json.loads(row["source_key"])["id"]]

            # a redelivered batch changes nothing
            [again] = _run(it_erp, batched, intake, [records])
            assert _ledger(w.engine, batched) == a
            assert [o for _, o in again.outcomes].count(DocumentOutcome.DUPLICATE) == 8
        finally:
            with w.engine.begin() as conn:
                for schema in (batched, single):
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
