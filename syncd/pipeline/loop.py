"""The consumer loop: Debezium topics in, ledger intent and stored offsets out.

One thread owns the Kafka consumer. Per poll batch it classifies records (pure), dead-letters
what it cannot act on, and records intent plus the partitions' next offsets in ONE database
transaction (`syncd.pipeline.intake`). Documents then advance on the driver's worker pool. The loop
never blocks on the provider or on a sick database: it pauses partitions instead, keeps
polling (so the group membership and the liveness heartbeat stay healthy) and resumes when
it can.

Offsets live in the ERP database next to the ledger (`syncd.offsets`), fenced by the
partition lease epoch claimed on assignment; Kafka's committed offset is only a fallback
for a first start and a monitoring aid.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from syncd.changes import RecordPosition
from syncd.config import SyncdConfig
from syncd.kafka.deadletter import dead_letter_headers
from syncd.kafka.endoffsets import EndOffsets
from syncd.kafka.progress import PartitionProgress
from syncd.ledger import repository as repo
from syncd.ledger.errors import FencedError
from syncd.ledger.models import DocumentRow
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.lifecycle import RESUME_STATES, DocumentState
from syncd.observability.health import HealthServer
from syncd.observability.logs import bind
from syncd.observability.metrics import DocumentOutcome, Metrics
from syncd.pipeline.driver import Driver
from syncd.pipeline.intake import Classified, Classifier, Intake, IntakeResult, Kind
from syncd.pipeline.poison import Failure, failure_of
from syncd.safetext import printable, reason_of

log = logging.getLogger(__name__)

TP = tuple[str, int]

BATCH_SIZE = 500
POLL_TIMEOUT = 0.2
DB_BACKOFF_MAX = 15.0
LAG_INTERVAL = 5.0
LEDGER_GAUGE_INTERVAL = 15.0
DEFERRED_RECHECK_INTERVAL = 5.0
#: librdkafka properties an operator may set for the consumer that a producer rejects.
_CONSUMER_ONLY = frozenset(
    {
        "auto.offset.reset",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "heartbeat.interval.ms",
        "fetch.min.bytes",
        "fetch.wait.max.ms",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "group.instance.id",
        "isolation.level",
        "queued.min.messages",
        "queued.max.messages.kbytes",
    }
)
#: How often due open documents of the assigned partitions are (re-)submitted: picks up
#: `syncd retry` and any document whose scheduled step was lost.
RESUME_SWEEP_INTERVAL = 10.0


@dataclass(slots=True)
class PartitionState:
    progress: PartitionProgress
    epoch: int | None  # None: not claimed yet (database unreachable at assignment)
    stored: int | None = None  # last offset stored in the database
    last_event_ts_ms: int | None = None
    #: documents of this partition the driver holds (dropped on revoke, counted for
    #: `max_in_flight_per_partition`); removed when they settle
    doc_ids: set[int] = field(default_factory=set)
    full: bool = False  # paused: its own in-flight limit reached


class Pipeline:
    def __init__(
        self,
        config: SyncdConfig,
        *,
        engine: Engine,
        driver_factory: Callable[[Callable[[DocumentRow], None]], Driver],
        metrics: Metrics,
        health: HealthServer,
        owner: str,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._metrics = metrics
        self._health = health
        self._owner = owner
        self._group = config.kafka.group_id
        self._classifier = Classifier(config)
        self._intake = Intake(config, group=self._group, owner=owner)
        self._settled: queue.SimpleQueue[tuple[int, str | None, int | None]] = queue.SimpleQueue()
        self._driver = driver_factory(self._on_settled)
        self._partitions: dict[TP, PartitionState] = {}
        self._deferred: dict[int, list[Classified]] = {}
        self._stop = threading.Event()
        self._paused_bp = False
        self._paused_db: set[TP] = set()
        self._db_ok = True
        self._db_backoff = 1.0
        self._db_retry_at = 0.0
        self._joined = False
        self._last_lag = 0.0
        self._last_gauges = 0.0
        self._last_deferred_check = 0.0
        self._last_sweep = time.monotonic()
        # Debezium's heartbeat topic keeps freshness moving while the ERP tables are idle.
        self._topics = sorted(
            {*config.topics(), f"__debezium-heartbeat.{config.kafka.topic_prefix}"}
        )
        client = config.kafka.client_config()
        # Defaults first; the operator's librdkafka properties may tune them (timeouts,
        # reset policy), but never the settings exactly-once depends on (set last).
        consumer_conf: dict[str, Any] = {
            "auto.offset.reset": "earliest",
            # Notice a document topic created after start within 30 s, not librdkafka's 5 min.
            "topic.metadata.refresh.interval.ms": 30000,
            "session.timeout.ms": 30000,
            "max.poll.interval.ms": 300000,
            # librdkafka prefetches up to 64 MB by default: ~8,000 schema-carrying change
            # events, minutes of work for a daemon bounded by its in-flight limit. 16 MB
            # (~2,000 events, several seconds) keeps the fetcher ahead without holding
            # a backlog in memory.
            "queued.max.messages.kbytes": 16384,
            "client.id": f"syncd-{owner}",
            **client,
            **(consumer_overrides or {}),
            "group.id": self._group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": False,
        }
        self._consumer = Consumer(consumer_conf, logger=logging.getLogger("syncd.kafka"))
        producer_conf = {k: v for k, v in client.items() if k not in _CONSUMER_ONLY}
        # Lag gauges: end offsets asked on a connection of their own (syncd.kafka.endoffsets).
        self._end_offsets = EndOffsets(
            {**producer_conf, "client.id": f"syncd-lag-{owner}"},
            logger=logging.getLogger("syncd.kafka"),
        )
        self._producer = Producer(
            {
                **producer_conf,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "client.id": f"syncd-dlq-{owner}",
            },
            logger=logging.getLogger("syncd.kafka"),
        )
        health.add_readiness_check("group", lambda: (self._joined, "consumer group not joined"))
        health.add_readiness_check("database", lambda: (self._db_ok, "ERP database unreachable"))

    # ------------------------------------------------------------------ public

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("consuming %s as group %s", ", ".join(self._topics), self._group)
        try:
            while not self._stop.is_set():
                self._iteration()
        finally:
            self._shutdown()

    # ------------------------------------------------------------------ the loop

    def _iteration(self) -> None:
        self._health.beat()
        self._metrics.heartbeat()
        now = time.monotonic()
        self._drain_settled()
        if self._paused_db and now >= self._db_retry_at:
            self._retry_after_db_failure()
        try:
            messages = self._fetch()
        except KafkaException as exc:
            log.warning("consume failed: %s", exc)
            messages = []
        if messages:
            self._process(messages)
        self._backpressure()
        if now - self._last_deferred_check > DEFERRED_RECHECK_INTERVAL and self._deferred:
            self._last_deferred_check = now
            self._recheck_deferred(list(self._deferred))
        if now - self._last_sweep > RESUME_SWEEP_INTERVAL:
            self._last_sweep = now
            self._sweep_due()
        if now - self._last_lag > LAG_INTERVAL:
            self._last_lag = now
            self._report_lag()
        if (ends := self._end_offsets.collect()) is not None:
            self._record_lag(ends)
        if now - self._last_gauges > LEDGER_GAUGE_INTERVAL:
            self._last_gauges = now
            self._report_ledger()

    def _fetch(self) -> list[Message]:
        """The records the fetcher already holds, or else the first to arrive within
        POLL_TIMEOUT together with any that came with it.

        `consume(n, timeout)` returns early only once it has n records: at a moderate rate
        every batch would wait out the whole timeout, adding up to POLL_TIMEOUT to each
        document's latency. Under load the batches still grow on their own: whatever
        arrives while one batch is processed is the next batch.
        """
        consume = self._consumer.consume
        messages = consume(num_messages=BATCH_SIZE, timeout=0)
        if not messages:
            messages = consume(num_messages=1, timeout=POLL_TIMEOUT)
            if messages:
                messages += consume(num_messages=BATCH_SIZE - 1, timeout=0)
        return messages

    def _process(self, messages: list[Message]) -> None:
        records: list[Classified] = []
        dead: list[tuple[Classified, list[tuple[str, bytes | None]]]] = []
        first_offsets: dict[TP, int] = {}
        skipped: dict[TP, int] = {}
        consumed: dict[str, int] = {}
        newest: dict[TP, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.debug("consumer: %s", err)  # e.g. no heartbeat topic yet
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            tp = (topic, partition)
            state = self._partitions.get(tp)
            if state is None:
                continue  # revoked while the batch was in flight: the new owner reads it
            if state.epoch is None or tp in self._paused_db:
                # Fetched before the pause took effect: read it again once resumed.
                skipped.setdefault(tp, offset)
                continue
            first_offsets.setdefault(tp, offset)
            state.progress.seen(offset)
            consumed[topic] = consumed.get(topic, 0) + 1
            c = self._classifier.classify(
                RecordPosition(topic, partition, offset), msg.key(), msg.value()
            )
            ts = c.heartbeat_ts_ms or (c.event.source_ts_ms if c.event else c.source_ts_ms)
            if ts is not None:
                state.last_event_ts_ms = ts
                newest[tp] = ts
            if c.kind is Kind.DEAD_LETTER:
                dead.append((c, _header_list(msg.headers())))
            records.append(c)
        # Counters and gauges once per batch (the same values; labels() per record was
        # a measurable part of the loop's time per event).
        for topic, count in consumed.items():
            self._metrics.events_consumed.labels(topic=topic).inc(count)
        for (topic, partition), ts in newest.items():
            self._metrics.set_partition_position(topic, partition, last_event_ts_ms=ts)
        for (topic, partition), offset in skipped.items():
            ktp = KafkaTopicPartition(topic, partition, offset)
            try:
                self._consumer.pause([ktp])
                self._consumer.seek(ktp)
            except KafkaException as exc:
                log.warning("could not rewind %s[%d]: %s", topic, partition, exc)
            self._paused_db.add((topic, partition))
        if not records:
            return
        if dead and not self._dead_letter(dead):
            self._db_failure(first_offsets, "dead-letter topic unreachable")
            return
        self._commit_batch(records, first_offsets)

    def _dead_letter(self, dead: list[tuple[Classified, list[tuple[str, bytes | None]]]]) -> bool:
        """Produce each record's original bytes (and headers) to the dead-letter topic."""
        topic = self._config.kafka.dead_letter_topic
        for c, headers in dead:
            with bind(
                topic=c.position.topic, partition=c.position.partition, offset=c.position.offset
            ):
                log.error("dead letter (%s): %s", c.code, printable(c.reason))
            self._producer.produce(
                topic,
                key=c.key,
                value=c.value,
                headers=list(dead_letter_headers(c.position, c.code, c.reason, headers)),
            )
            self._metrics.dead_letters.labels(topic=c.position.topic, reason=c.code).inc()
            if c.doc is not None:
                self._metrics.document_settled(c.doc.name, DocumentOutcome.DEAD)
        remaining = self._producer.flush(10.0)
        return int(remaining) == 0

    def _commit_batch(self, records: list[Classified], first_offsets: dict[TP, int]) -> None:
        try:
            result, positions = self._record(records)
        except Exception as exc:  # routed by syncd.pipeline.poison: fenced, outage or poison
            failure = failure_of(exc)
            if failure is Failure.FENCED:
                assert isinstance(exc, FencedError)
                log.warning(
                    "fenced: %s; dropping the batch (another replica owns the partition)", exc
                )
                self._drop_partition((exc.topic, exc.partition))
            elif failure is Failure.OUTAGE:
                self._db_failure(first_offsets, reason_of(exc))
            else:  # a record the intake cannot handle: find it, keep the rest
                log.error(
                    "batch of %d record(s) failed (%s); retrying record by record",
                    len(records),
                    reason_of(exc),
                )
                self._isolate(records)
            return
        self._db_ok = True
        self._db_backoff = 1.0
        self._apply(result, positions)

    def _record(
        self, records: list[Classified]
    ) -> tuple[IntakeResult, dict[LedgerTP, tuple[int, int]]]:
        """Intake + offsets in one transaction."""
        with self._engine.begin() as conn:
            result = self._intake.run(conn, records, offsets={}, epochs={})
            positions = self._positions_after(result)
            if positions:
                repo.store_offsets(conn, self._group, positions)
        return result, positions

    def _isolate(self, records: list[Classified]) -> None:
        """One transaction per record; a record that still fails is dead-lettered with the
        error, so one bad document never stalls its partition or stops the daemon."""
        for i, c in enumerate(records):
            if (c.position.topic, c.position.partition) not in self._partitions:
                continue  # fenced or revoked by an earlier record of this batch
            try:
                result, positions = self._record([c])
            except Exception as exc:  # routed by syncd.pipeline.poison
                failure = failure_of(exc)
                if failure is Failure.FENCED:
                    assert isinstance(exc, FencedError)
                    self._drop_partition((exc.topic, exc.partition))
                    continue
                if failure is Failure.OUTAGE:
                    rest: dict[TP, int] = {}
                    for later in records[i:]:
                        rest.setdefault(
                            (later.position.topic, later.position.partition), later.position.offset
                        )
                    self._db_failure(rest, reason_of(exc))
                    return
                poisoned = Classified(
                    c.position,
                    Kind.DEAD_LETTER,
                    f"intake failed: {reason_of(exc)}",
                    c.key,
                    c.value,
                    event=c.event,
                    doc=c.doc,
                    decision=c.decision,
                    code="intake_failed",
                )
                log.error(
                    "record %s cannot be recorded (%s); dead-lettering it",
                    c.position,
                    reason_of(exc),
                )
                if not self._dead_letter([(poisoned, [])]):
                    self._db_failure(
                        {(c.position.topic, c.position.partition): c.position.offset},
                        "dead-letter topic unreachable",
                    )
                    return
                try:
                    result, positions = self._record([replace(c, kind=Kind.IGNORE)])
                except Exception as again:
                    self._db_failure(
                        {(c.position.topic, c.position.partition): c.position.offset},
                        type(again).__name__,
                    )
                    return
            self._apply(result, positions)

    def _positions_after(self, result: IntakeResult) -> dict[LedgerTP, tuple[int, int]]:
        positions: dict[LedgerTP, tuple[int, int]] = {}
        for tp, finished in result.finished.items():
            state = self._partitions.get(tp)
            if state is None or state.epoch is None:
                continue
            position = state.progress.commit_position_if_done(finished)
            if position != state.stored:
                positions[LedgerTP(*tp)] = (position, state.epoch)
        return positions

    def _apply(self, result: IntakeResult, positions: dict[LedgerTP, tuple[int, int]]) -> None:
        now = time.time()
        for tp, finished in result.finished.items():
            state = self._partitions.get(tp)
            if state is None:
                continue
            for offset in finished:
                state.progress.done(offset)
        for tp_key, (position, _) in positions.items():
            state = self._partitions.get((tp_key.topic, tp_key.partition))
            if state is not None:
                state.stored = position
                self._metrics.offsets_committed(tp_key.topic, tp_key.partition, now)
        for issue_id, c in result.deferred:
            self._deferred.setdefault(issue_id, []).append(c)
        for doc_name, outcome in result.outcomes:
            self._metrics.document_settled(doc_name, DocumentOutcome(outcome))
        for doc_id in result.to_drive:
            row = result.rows.get(doc_id)
            if row is not None:
                self._track(row)
            self._driver.submit(doc_id, row=row)

    # ------------------------------------------------------------------ database trouble

    def _db_failure(self, first_offsets: dict[TP, int], why: str) -> None:
        """Rewind the batch's partitions, pause them, retry later. Nothing is lost: the
        records will be consumed again from the first offset of the failed batch."""
        self._db_ok = False
        self._db_retry_at = time.monotonic() + self._db_backoff
        log.warning(
            "batch not recorded (%s); pausing %d partition(s), retry in %.0f s",
            why,
            len(first_offsets),
            self._db_backoff,
        )
        self._db_backoff = min(DB_BACKOFF_MAX, self._db_backoff * 2)
        for tp, offset in first_offsets.items():
            state = self._partitions.get(tp)
            if state is None:
                continue
            state.progress.rewind(offset)
            ktp = KafkaTopicPartition(tp[0], tp[1], offset)
            try:
                self._consumer.pause([ktp])
                self._consumer.seek(ktp)
            except KafkaException as exc:
                log.warning("could not rewind %s[%d]: %s", tp[0], tp[1], exc)
            self._paused_db.add(tp)
        self._metrics.partitions_paused.set(len(self._paused_db))

    def _retry_after_db_failure(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                unclaimed = [tp for tp, s in self._partitions.items() if s.epoch is None]
            claimed = self._claim(unclaimed) if unclaimed else {}
        except (OperationalError, DBAPIError):
            claimed = None
        if claimed is None:
            # Still no lease: the partitions stay paused (consuming without a lease epoch
            # would have nowhere safe to record progress).
            self._db_retry_at = time.monotonic() + self._db_backoff
            self._db_backoff = min(DB_BACKOFF_MAX, self._db_backoff * 2)
            return
        self._db_ok = True
        held = list(self._paused_db)
        self._paused_db.clear()
        resume = self._resumable(held)
        if resume and not self._paused_bp:
            self._consumer.resume(resume)
        self._metrics.partitions_paused.set(0 if not self._paused_bp else len(self._partitions))
        log.info("ERP database reachable again; resumed %d partition(s)", len(resume))

    # ------------------------------------------------------------------ backpressure

    def _backpressure(self) -> None:
        limit = self._config.pipeline.max_in_flight
        inflight = self._driver.active_count + sum(len(v) for v in self._deferred.values())
        if not self._paused_bp and inflight >= limit:
            self._paused_bp = True
            self._consumer.pause(self._assigned())
            self._metrics.partitions_paused.set(len(self._partitions))
            log.info(
                "backpressure: %d documents in flight (limit %d); partitions paused",
                inflight,
                limit,
            )
        elif self._paused_bp and inflight <= int(limit * 0.75):
            self._paused_bp = False
            self._consumer.resume(self._resumable(self._partitions))
            self._metrics.partitions_paused.set(len(self._paused_db))
        self._partition_backpressure()

    def _partition_backpressure(self) -> None:
        """Pause a partition whose own documents reach `max_in_flight_per_partition`, so
        one busy partition cannot take every slot of the replica."""
        per = self._config.pipeline.max_in_flight_per_partition
        if per is None:
            return
        pause: list[KafkaTopicPartition] = []
        resume: list[TP] = []
        for tp, state in self._partitions.items():
            held = len(state.doc_ids)
            if not state.full and held >= per:
                state.full = True
                pause.append(KafkaTopicPartition(*tp))
            elif state.full and held <= int(per * 0.75):
                state.full = False
                resume.append(tp)
        if pause:
            self._consumer.pause(pause)
            log.info(
                "partition limit: %s at %d documents in flight; paused",
                ", ".join(f"{p.topic}[{p.partition}]" for p in pause),
                per,
            )
        if resume and not self._paused_bp:
            self._consumer.resume(self._resumable(resume))

    def _resumable(self, tps: Iterable[TP]) -> list[KafkaTopicPartition]:
        """Of `tps`, the partitions nothing else holds paused (database, own limit)."""
        out = []
        for tp in tps:
            state = self._partitions.get(tp)
            if state is not None and not state.full and tp not in self._paused_db:
                out.append(KafkaTopicPartition(*tp))
        return out

    def _assigned(self) -> list[KafkaTopicPartition]:
        return [KafkaTopicPartition(t, p) for (t, p) in self._partitions]

    # ------------------------------------------------------------------ settled documents

    def _on_settled(self, row: DocumentRow) -> None:
        # Called on driver threads: hand over to the loop thread.
        self._settled.put((row.id, row.source_topic, row.source_partition))

    def _drain_settled(self) -> None:
        ready: list[int] = []
        while True:
            try:
                doc_id, topic, partition = self._settled.get_nowait()
            except queue.Empty:
                break
            if topic is not None and partition is not None:
                state = self._partitions.get((topic, partition))
                if state is not None:
                    state.doc_ids.discard(doc_id)
            if doc_id in self._deferred:
                ready.append(doc_id)
        if ready:
            self._recheck_deferred(ready)

    def _recheck_deferred(self, issue_ids: list[int]) -> None:
        records = [
            c
            for i in issue_ids
            for c in self._deferred.get(i, [])
            if (c.position.topic, c.position.partition) in self._partitions
        ]
        if not records:
            for i in issue_ids:
                self._deferred.pop(i, None)
            return
        try:
            result, positions = self._record(records)
        except Exception as exc:  # routed by syncd.pipeline.poison
            failure = failure_of(exc)
            if failure is Failure.FENCED:
                assert isinstance(exc, FencedError)
                self._drop_partition((exc.topic, exc.partition))
            elif failure is Failure.POISON:
                # one of them cannot be recorded: record them one by one, dead-letter it
                for i in issue_ids:
                    self._deferred.pop(i, None)
                self._isolate(records)
            return  # an outage: they stay deferred; the periodic re-check tries again
        for i in issue_ids:
            self._deferred.pop(i, None)
        self._apply(result, positions)

    def _sweep_due(self) -> None:
        """Submit the due open documents of the claimed partitions (`Driver.submit` ignores
        the ones already scheduled). Stops at the in-flight limit; the next sweep goes on."""
        claimed = [
            LedgerTP(t, p)
            for (t, p), s in self._partitions.items()
            if s.epoch is not None and (t, p) not in self._paused_db
        ]
        if not claimed or not self._db_ok:
            return
        limit = self._config.pipeline.max_in_flight
        submitted = 0
        after = 0
        try:
            with self._engine.connect() as conn:
                while self._driver.active_count < limit:
                    page = repo.documents_to_resume(
                        conn,
                        partitions=claimed,
                        due_before=datetime.now(UTC),
                        after_id=after,
                        states=RESUME_STATES | {DocumentState.BLOCKED},
                    )
                    for row in page:
                        if not self._driver.is_active(row.id):
                            submitted += 1
                            self._track(row)
                        # Due by the ledger (e.g. `syncd retry`): run it now, even if the
                        # driver planned its next look for later.
                        self._driver.submit(row.id, expedite=row.next_attempt_at is not None)
                    if len(page) < 500:
                        break
                    after = page[-1].id
        except (OperationalError, DBAPIError) as exc:
            log.debug("resume sweep skipped: %s", type(exc).__name__)
            return
        if submitted:
            log.info("resume sweep: submitted %d due document(s)", submitted)

    def _track(self, row: DocumentRow) -> None:
        if row.source_topic is not None and row.source_partition is not None:
            state = self._partitions.get((row.source_topic, row.source_partition))
            if state is not None:
                state.doc_ids.add(row.id)

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._joined = True
        self._metrics.rebalances.labels(event="assign").inc()
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._partitions[tp] = PartitionState(PartitionProgress(start=-1), epoch=None)
        stored = self._claim(tps, assign=False)
        assignment = []
        for p in partitions:
            tp = (p.topic, p.partition)
            offset = stored.get(tp) if stored is not None else None
            assignment.append(
                KafkaTopicPartition(
                    p.topic, p.partition, offset if offset is not None else OFFSET_STORED
                )
            )
            if offset is not None:
                self._partitions[tp].progress.start = offset
                self._partitions[tp].stored = offset
        consumer.incremental_assign(assignment)
        if stored is None:
            # Database unreachable: hold these partitions until the claim succeeds.
            consumer.pause(assignment)
            self._paused_db.update(tps)
            self._db_ok = False
            self._db_retry_at = time.monotonic() + self._db_backoff
        elif self._paused_bp:
            consumer.pause(assignment)
        self._metrics.assigned_partitions.set(len(self._partitions))
        log.info("assigned %s", ", ".join(f"{t}[{p}]" for t, p in tps))

    def _claim(self, tps: list[TP], assign: bool = True) -> dict[TP, int | None] | None:
        """Claim leases, load stored offsets, resume the partitions' open documents."""
        rtps = [LedgerTP(t, p) for t, p in tps]
        try:
            with self._engine.begin() as conn:
                epochs = repo.claim_partitions(conn, self._group, self._owner, rtps)
                offsets = repo.load_offsets(conn, self._group, rtps)
            resume: list[DocumentRow] = []
            after = 0
            with self._engine.connect() as conn:
                while True:
                    page = repo.documents_to_resume(
                        conn,
                        partitions=rtps,
                        after_id=after,
                        states=RESUME_STATES | {DocumentState.BLOCKED},
                    )
                    resume += page
                    if len(page) < 500:
                        break
                    after = page[-1].id
        except (OperationalError, DBAPIError) as exc:
            log.warning(
                "cannot claim %d partition(s) yet: %s: %s",
                len(tps),
                type(exc).__name__,
                _first_line(exc),
            )
            return None
        result: dict[TP, int | None] = {}
        for tp in tps:
            rtp = LedgerTP(*tp)
            state = self._partitions.get(tp)
            if state is None:
                continue
            state.epoch = epochs[rtp]
            result[tp] = offsets.get(rtp)
            if assign and result[tp] is not None:
                offset = result[tp]
                assert offset is not None
                state.progress.start = offset
                state.stored = offset
                try:
                    self._consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
                except KafkaException as exc:
                    log.warning("seek %s[%d] to %d failed: %s", tp[0], tp[1], offset, exc)
        for row in resume:
            self._track(row)
            self._driver.submit(row.id, row=row)
        if resume:
            log.info("resuming %d open document(s) of the assigned partitions", len(resume))
        return result

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._metrics.rebalances.labels(event="revoke").inc()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._metrics.rebalances.labels(event="lost").inc()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.incremental_unassign(partitions)

    def _drop_partition(self, tp: TP) -> None:
        self._forget([tp])

    def _forget(self, tps: list[TP]) -> None:
        doc_ids: set[int] = set()
        for tp in tps:
            state = self._partitions.pop(tp, None)
            if state is not None:
                doc_ids |= state.doc_ids
            self._paused_db.discard(tp)
            self._metrics.forget_partition(*tp)
        for issue_id in list(self._deferred):
            kept = [
                c
                for c in self._deferred[issue_id]
                if (c.position.topic, c.position.partition) not in tps
            ]
            if kept:
                self._deferred[issue_id] = kept
            else:
                del self._deferred[issue_id]
        self._driver.forget(doc_ids)
        self._metrics.assigned_partitions.set(len(self._partitions))
        if tps:
            log.info("released %s", ", ".join(f"{t}[{p}]" for t, p in tps))

    # ------------------------------------------------------------------ gauges

    def _report_lag(self) -> None:
        self._end_offsets.ask(list(self._partitions))
        commits = [
            KafkaTopicPartition(t, p, s.stored)
            for (t, p), s in self._partitions.items()
            if s.stored is not None and s.stored >= 0
        ]
        if commits:
            # A monitoring aid only: the database holds the real positions.
            with contextlib.suppress(KafkaException):
                self._consumer.commit(offsets=commits, asynchronous=True)

    def _record_lag(self, ends: dict[TP, int]) -> None:
        now_ms = time.time() * 1000
        for tp, high in ends.items():
            state = self._partitions.get(tp)
            if state is None:
                continue  # released since the question went out
            position = state.progress.commit_position()
            if position < 0:
                continue
            lag = max(0, high - position)
            lag_s = 0.0
            if lag > 0 and state.last_event_ts_ms is not None:
                lag_s = max(0.0, (now_ms - state.last_event_ts_ms) / 1000.0)
            self._metrics.set_partition_position(tp[0], tp[1], lag_messages=lag, lag_seconds=lag_s)

    def _report_ledger(self) -> None:
        try:
            with self._engine.connect() as conn:
                counts = repo.count_by_state(conn)
        except (OperationalError, DBAPIError):
            self._db_ok = False
            return
        self._metrics.set_ledger_counts(counts)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self._config.pipeline.drain_deadline_seconds
        log.info(
            "shutting down: draining in-flight documents (deadline %.0f s)",
            self._config.pipeline.drain_deadline_seconds,
        )
        with contextlib.suppress(KafkaException):
            self._consumer.pause(self._assigned())
        still = self._driver.stop(deadline)
        if still:
            log.warning(
                "%d document step(s) still running at the deadline; they stay in the "
                "ledger and are resumed by the next owner",
                still,
            )
        try:
            self._report_lag()  # last Kafka commit of the stored positions
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close: %s", exc)
        self._producer.flush(5.0)
        log.info("stopped")


def _header_list(headers: object) -> list[tuple[str, bytes | None]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    out: list[tuple[str, bytes | None]] = []
    for k, v in items:  # type: ignore[attr-defined]
        out.append((str(k), v.encode() if isinstance(v, str) else v))
    return out


def _first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the statement)."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip()
    return text_.splitlines()[0][:300] if text_ else type(orig).__name__
