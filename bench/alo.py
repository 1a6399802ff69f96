"""The at-least-once peer: what a user would run instead of syncd, done well.

A key-ordered parallel consumer, with the behaviour of Confluent's Parallel Consumer in
KEY order: many keys in flight at once, the records of one key strictly one after
another in offset order, and each partition's offset committed to Kafka as far as the
records before it are finished (contiguous), so a crash re-delivers what was in flight
-- at least once. What it leaves out is exactly what syncd adds for exactly-once: no
ledger (nothing remembers a document was sent), no write-back transaction with a ledger
transition (the ERP UPDATE is its own statement, autocommitted), no validation (the
invoice is mapped from the row and sent; the platform judges it).

Everything else is the same as syncd's, so a bench run compares only the price of
exactly-once: the same topic, decoder and rules (`Classifier`), the same invoice
arithmetic and payload, the same provider client and HTTP pool, the same write-back
UPDATE, the same `pipeline.max_in_flight` and `pipeline.workers`, the same timed queue
of steps (`syncd.pipeline.scheduler`, so a document waiting for "processing" holds no
thread) and the same status-poll interval.

    python bench/alo.py --config CONFIG --offsets '{"0": 123, ...}' --status STATUS.json

Runs until SIGTERM/SIGINT (or --seconds), writing {"consumed", "documents", "failed"} to
--status about twice a second, and prints the same JSON when it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from sqlalchemy import Engine, create_engine

from syncd.changes import RecordPosition
from syncd.commands.run import issuer_settings
from syncd.config import DocumentConfig, SyncdConfig, load_config
from syncd.erp.lines import load_lines
from syncd.erp.writeback import ResultStatus, WriteBack, apply_writeback
from syncd.identity import DocumentIdentity, serial_for
from syncd.invoice.from_erp import source_ref
from syncd.invoice.model import Buyer, InvoiceType, Party, PriceBasis
from syncd.invoice.taxmath import LineInput, build_invoice
from syncd.issuers.base import (
    Duplicate,
    Issued,
    Issuer,
    IssueResult,
    NotFound,
    OutcomeUnknown,
    Processing,
    Retryable,
)
from syncd.issuers.registry import create_issuer
from syncd.kafka.client import consumer_config
from syncd.kafka.progress import PartitionProgress
from syncd.lifecycle import RetryPolicy
from syncd.pipeline.classify import Classified, Classifier, Kind
from syncd.pipeline.scheduler import Scheduler

log = logging.getLogger("alo")
#: how often contiguous offsets are committed to Kafka
COMMIT_EVERY = 1.0
#: a failed step (network, database) is tried again after this long: at least once
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class Work:
    """One record and where its processing stands."""

    id: int
    partition: int
    offset: int
    key: bytes | None
    classified: Classified
    payload: dict[str, Any] | None = None
    serial: str = ""
    polls: int = 0
    resend: bool = False  # the platform does not have it: send it again


@dataclass
class KeyOrder:
    """Per-key order and contiguous progress (pure bookkeeping, the caller locks).

    A record may start only when every earlier record of its key is finished; a
    partition's commit position is its lowest unfinished offset."""

    starts: Mapping[int, int]
    queues: dict[tuple[int, bytes | None], deque[Work]] = field(default_factory=dict)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)
    outstanding: int = 0

    def offer(self, work: Work) -> bool:
        """Take `work` in; True if it may start now (no earlier record of its key waits)."""
        progress = self.progress.get(work.partition)
        if progress is None:
            progress = self.progress[work.partition] = PartitionProgress(
                self.starts.get(work.partition, work.offset)
            )
        progress.seen(work.offset)
        self.outstanding += 1
        key = (work.partition, work.key)
        queue = self.queues.get(key)
        if queue is not None:
            queue.append(work)
            return False
        self.queues[key] = deque([work])
        return True

    def finish(self, work: Work) -> Work | None:
        """`work` is done; returns the next record of its key, which may start now."""
        self.progress[work.partition].done(work.offset)
        self.outstanding -= 1
        key = (work.partition, work.key)
        queue = self.queues[key]
        queue.popleft()
        if queue:
            return queue[0]
        del self.queues[key]
        return None

    def positions(self) -> dict[int, int]:
        return {p: progress.commit_position() for p, progress in self.progress.items()}


def invoice_payload(
    doc: DocumentConfig,
    row: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    identity: DocumentIdentity,
) -> dict[str, Any]:
    """The invoice of one bench order, mapped by hand as a user would for their own
    tables (the bench's ERP columns, config/demo/erp.sql), with syncd's tax arithmetic and
    payload model but no mapping checks or business-rule validation."""
    seller = doc.seller
    assert seller is not None  # resolved by SyncdConfig
    invoice = build_invoice(
        serial=serial_for(identity),
        invoice_type=InvoiceType(row["invoice_type"]),
        seller=Party(
            name=seller.name,
            tax_id=seller.tax_id,
            address=seller.address,
            phone=seller.phone,
            bank_name=seller.bank_name,
            bank_account=seller.bank_account,
        ),
        buyer=Buyer(name=row["buyer_name"], tax_id=row.get("buyer_tax_id")),
        lines=[
            LineInput(
                name=line["item_name"],
                tax_code=line["tax_code"],
                quantity=line["quantity"],
                unit_price=line["unit_price"],
                tax_rate=line["tax_rate"].normalize(),
                spec=line.get("spec"),
                unit=line.get("unit"),
                discount_amount=line.get("discount_amount") or None,
            )
            for line in lines
        ],
        price_basis=PriceBasis.TAX_INCLUSIVE
        if row.get("price_includes_tax")
        else PriceBasis.TAX_EXCLUSIVE,
        source=source_ref(identity),
        currency=(row.get("currency") or "CNY").upper(),
        remark=row.get("order_no"),
    )
    return invoice.model_dump(mode="json")


def issued_at(result: Issued) -> datetime:
    try:
        parsed = datetime.fromisoformat(result.issued_at.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Runner:
    """The consumer loop (main thread) and the document steps (the scheduler's workers)."""

    def __init__(
        self, config: SyncdConfig, issuer: Issuer, engine: Engine, starts: Mapping[int, int]
    ) -> None:
        self.config = config
        self.doc = next(iter(config.documents.values()))
        self.issuer = issuer
        self.engine = engine
        self.max_in_flight = config.pipeline.max_in_flight
        self.policy = RetryPolicy(poll_interval=config.pipeline.poll_interval_seconds)
        self.rng = random.Random()  # jitter, not security
        self.lock = threading.Condition()
        self.order = KeyOrder(starts)
        self.works: dict[int, Work] = {}
        self.consumed = 0
        self.documents = 0
        self.failed = 0
        self.scheduler = Scheduler(self._step, workers=config.pipeline.workers)

    # ------------------------------------------------------------------ the consumer side

    def offer(self, work: Work) -> None:
        with self.lock:
            self.consumed += 1
            startable = self.order.offer(work)
        if startable:
            self._start(work)

    def _start(self, work: Work | None) -> None:
        while work is not None:
            if work.classified.kind is Kind.ISSUE:
                with self.lock:
                    self.works[work.id] = work
                self.scheduler.submit(work.id)
                return
            work = self._complete(work, document=False)  # nothing to do for this record

    def _complete(self, work: Work, *, document: bool, failed: bool = False) -> Work | None:
        with self.lock:
            self.works.pop(work.id, None)
            self.documents += document
            self.failed += failed
            self.lock.notify_all()
            return self.order.finish(work)

    def wait_for_room(self, stop: threading.Event) -> None:
        with self.lock:
            while self.order.outstanding >= self.max_in_flight and not stop.is_set():
                self.lock.wait(0.2)

    def positions(self) -> dict[int, int]:
        with self.lock:
            return self.order.positions()

    def status(self) -> dict[str, int]:
        with self.lock:
            return {"consumed": self.consumed, "documents": self.documents, "failed": self.failed}

    # ------------------------------------------------------------------ one step

    def _step(self, work_id: int) -> None:
        with self.lock:
            work = self.works[work_id]
        try:
            delay = self._advance(work)
        except Exception:
            log.exception("record %s/%s failed; trying again", work.partition, work.offset)
            delay = RETRY_SECONDS
        if delay is None:
            self.scheduler.finish(work_id)
            self._start(self._complete(work, document=True))
        elif delay < 0:
            self.scheduler.finish(work_id)
            self._start(self._complete(work, document=False, failed=True))
        else:
            self.scheduler.reschedule(work_id, delay)

    def _advance(self, work: Work) -> float | None:
        """One provider call; None when the document is written back, a delay to call
        again after, or -1 when the platform refused it for good (logged, skipped)."""
        result: IssueResult
        if work.payload is None:
            event = work.classified.event
            decision = work.classified.decision
            assert event is not None and decision is not None and decision.identity is not None
            row = event.after or {}
            with self.engine.connect() as conn:
                lines = load_lines(conn, self.doc, row.get(self.doc.lines.references or "id"))
            work.payload = invoice_payload(self.doc, row, lines, decision.identity)
            work.serial = str(work.payload["serial"])
            result = self.issuer.issue(work.payload)
        elif work.resend:
            work.resend = False
            result = self.issuer.issue(work.payload)
        else:
            result = self.issuer.query(work.serial)
        if isinstance(result, Issued):
            event = work.classified.event
            assert event is not None
            key = {c: (event.after or {}).get(c) for c in self.doc.write_back_keys}
            writeback = WriteBack(
                ResultStatus.ISSUED,
                invoice_no=result.invoice_no,
                issued_at=issued_at(result),
                url=next(iter(result.files.values()), None) if result.files else None,
            )
            with self.engine.begin() as conn:
                apply_writeback(conn, self.doc, key, writeback)
            return None
        if isinstance(result, (Processing, Duplicate, OutcomeUnknown)):
            work.polls += 1
            return self.policy.poll_delay(work.polls - 1, self.rng)
        if isinstance(result, (Retryable, NotFound)):
            work.resend = True
            return RETRY_SECONDS
        log.error("document %s refused: %s", work.serial, result)
        return -1.0

    def stop(self, deadline: float) -> None:
        self.scheduler.stop(deadline)


def write_status(path: Path | None, status: Mapping[str, int]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description="key-ordered at-least-once parallel consumer")
    parser.add_argument("--config", required=True, help="a syncd config (topics, DSN, issuer)")
    parser.add_argument("--offsets", required=True, help='JSON {"partition": start offset}')
    parser.add_argument("--status", type=Path, help="JSON progress file, rewritten as it runs")
    parser.add_argument("--seconds", type=float, default=900.0, help="stop after this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config)
    topic = config.topics()[0]
    workers = config.pipeline.workers
    issuer = create_issuer(config.primary_issuer.provider, issuer_settings(config, workers))
    engine = create_engine(config.database.dsn_value(), pool_size=min(workers, 32) + 4)
    starts = {int(p): int(o) for p, o in json.loads(args.offsets).items()}
    consumer = Consumer(consumer_config(config.kafka, owner="alo"))
    consumer.assign([KafkaTP(topic, p, o) for p, o in starts.items()])
    classifier = Classifier(config)
    runner = Runner(config, issuer, engine, starts)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    deadline = time.monotonic() + args.seconds
    committed: dict[int, int] = {}
    last_commit = last_status = 0.0
    next_id = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            runner.wait_for_room(stop)
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                classified = classifier.classify(
                    RecordPosition(topic, partition, offset), msg.key(), msg.value()
                )
                next_id += 1
                runner.offer(Work(next_id, partition, offset, msg.key(), classified))
            now = time.monotonic()
            if now - last_commit >= COMMIT_EVERY:
                last_commit = now
                positions = runner.positions()
                moved = [
                    KafkaTP(topic, p, o) for p, o in positions.items() if committed.get(p) != o
                ]
                if moved:
                    consumer.commit(offsets=moved, asynchronous=True)
                    committed.update(positions)
            if now - last_status >= 0.5:
                last_status = now
                write_status(args.status, runner.status())
    finally:
        runner.stop(time.monotonic() + 10)
        positions = runner.positions()
        if positions:
            with contextlib.suppress(KafkaException):
                consumer.commit(offsets=[KafkaTP(topic, p, o) for p, o in positions.items()])
        consumer.close()
        issuer.close()
        engine.dispose()
    status = runner.status()
    write_status(args.status, status)
    print(json.dumps(status))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
