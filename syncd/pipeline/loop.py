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

Invariant: a record's offset is stored only in the transaction that records what the
record means, or once its dead letter is durable. Whether a failure while recording is
poison, an outage or a fence is decided by `syncd.pipeline.poison.failure_of`, never here;
the loop carries out the answer: fenced drops the partition, an outage rewinds and pauses
the batch's partitions, poison is isolated record by record and dead-lettered.

The pieces it wires: `syncd.kafka.client` (client configurations), `syncd.pipeline.partitions`
(ownership, start offsets, pauses), `syncd.pipeline.deferred` (reversals waiting for their
invoice), `syncd.kafka.deadletter` (the dead-letter producer), `syncd.kafka.endoffsets` (lag)
and the driver (documents in flight).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from syncd.changes import RecordPosition
from syncd.config import SyncdConfig
from syncd.kafka import client
from syncd.kafka.deadletter import DeadLetterProducer, headers_of
from syncd.kafka.endoffsets import EndOffsets
from syncd.ledger import reconcile as ledger_reconcile
from syncd.ledger import repository as repo
from syncd.ledger.errors import FencedError
from syncd.ledger.models import DocumentRow
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.lifecycle import RESUME_STATES, DocumentState
from syncd.observability.health import HealthServer
from syncd.observability.logs import bind
from syncd.observability.metrics import DocumentOutcome, Metrics
from syncd.pipeline.classify import Classified, Classifier, Kind
from syncd.pipeline.deferred import DeferredReversals
from syncd.pipeline.driver import Driver
from syncd.pipeline.intake import Intake, IntakeResult
from syncd.pipeline.partitions import Partitions
from syncd.pipeline.poison import Failure, failure_of
from syncd.safetext import printable, reason_of

log = logging.getLogger(__name__)

TP = tuple[str, int]

BATCH_SIZE = 500
POLL_TIMEOUT = 0.2
LAG_INTERVAL = 5.0
LEDGER_GAUGE_INTERVAL = 15.0
DEFERRED_RECHECK_INTERVAL = 5.0
#: How often due open documents of the assigned partitions are (re-)submitted: picks up
#: `syncd retry` and any document whose scheduled step was lost.
RESUME_SWEEP_INTERVAL = 10.0
#: At most how many batches (`ledger.prune_batch_size`, one short transaction each) of
#: payloads past `ledger.payload_retention_days` are pruned per round (every
#: `ledger.prune_interval_seconds`).
PRUNE_BATCHES_PER_ROUND = 10


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
        self._deferred = DeferredReversals()
        self._stop = threading.Event()
        self._last_lag = 0.0
        self._last_gauges = 0.0
        self._last_deferred_check = 0.0
        self._last_sweep = time.monotonic()
        self._last_prune = 0.0
        # Debezium's heartbeat topic keeps freshness moving while the ERP tables are idle.
        self._topics = sorted(
            {*config.topics(), f"__debezium-heartbeat.{config.kafka.topic_prefix}"}
        )
        kafka_log = logging.getLogger("syncd.kafka")
        self._consumer = Consumer(
            client.consumer_config(config.kafka, owner=owner, overrides=consumer_overrides),
            logger=kafka_log,
        )
        # Lag gauges: end offsets asked on a connection of their own (syncd.kafka.endoffsets).
        self._end_offsets = EndOffsets(
            client.end_offsets_config(config.kafka, owner=owner), logger=kafka_log
        )
        self._dead_letters = DeadLetterProducer(
            Producer(
                client.dead_letter_producer_config(config.kafka, owner=owner), logger=kafka_log
            ),
            config.kafka.dead_letter_topic,
        )
        self._partitions = Partitions(
            consumer=self._consumer,
            engine=engine,
            metrics=metrics,
            group=self._group,
            owner=owner,
            max_in_flight=config.pipeline.max_in_flight,
            max_in_flight_per_partition=config.pipeline.max_in_flight_per_partition,
            on_claimed=self._resume_claimed,
            on_released=self._release,
        )
        health.add_readiness_check(
            "group", lambda: (self._partitions.joined, "consumer group not joined")
        )
        health.add_readiness_check(
            "database", lambda: (self._partitions.db_ok, "ERP database unreachable")
        )

    # ------------------------------------------------------------------ public

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._consumer.subscribe(
            self._topics,
            on_assign=self._partitions.on_assign,
            on_revoke=self._partitions.on_revoke,
            on_lost=self._partitions.on_lost,
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
        if self._partitions.retry_due(now):
            self._partitions.retry_database()
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
            self._recheck_deferred(self._deferred.issue_ids())
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
        if now - self._last_prune > self._config.ledger.prune_interval_seconds:
            self._last_prune = now
            self._prune_payloads()

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
            if state.epoch is None or self._partitions.held_for_database(tp):
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
                dead.append((c, headers_of(msg.headers())))
            records.append(c)
        # Counters and gauges once per batch: the same values, without a labels() lookup
        # per record on the hot path.
        for topic, count in consumed.items():
            self._metrics.events_consumed.labels(topic=topic).inc(count)
        for (topic, partition), ts in newest.items():
            self._metrics.set_partition_position(topic, partition, last_event_ts_ms=ts)
        self._partitions.hold_fetched(skipped)
        if not records:
            return
        if dead and not self._dead_letter(dead):
            self._partitions.pause_for_database(first_offsets, "dead-letter topic unreachable")
            return
        self._commit_batch(records, first_offsets)

    def _dead_letter(self, dead: list[tuple[Classified, list[tuple[str, bytes | None]]]]) -> bool:
        """Produce each record's original bytes (and headers) to the dead-letter topic; True
        once every one is durable (only then may the records' offsets be stored)."""
        for c, headers in dead:
            with bind(
                topic=c.position.topic, partition=c.position.partition, offset=c.position.offset
            ):
                log.error("dead letter (%s): %s", c.code, printable(c.reason))
            self._dead_letters.send(c.position, c.code, c.reason, c.key, c.value, headers)
            self._metrics.dead_letters.labels(topic=c.position.topic, reason=c.code).inc()
            if c.doc is not None:
                self._metrics.document_settled(c.doc.name, DocumentOutcome.DEAD)
        return self._dead_letters.flush(10.0)

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
                self._partitions.drop((exc.topic, exc.partition))
            elif failure is Failure.OUTAGE:
                self._partitions.pause_for_database(first_offsets, reason_of(exc))
            else:  # a record the intake cannot handle: find it, keep the rest
                log.error(
                    "batch of %d record(s) failed (%s); retrying record by record",
                    len(records),
                    reason_of(exc),
                )
                self._isolate(records)
            return
        self._partitions.database_ok()
        self._apply(result, positions)

    def _record(
        self, records: list[Classified]
    ) -> tuple[IntakeResult, dict[LedgerTP, tuple[int, int]]]:
        """Intake + offsets in one transaction (the intake stores them)."""
        with self._engine.begin() as conn:
            result = self._intake.run(conn, records, self._partitions, self._deferred)
        return result, result.positions

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
                    self._partitions.drop((exc.topic, exc.partition))
                    continue
                if failure is Failure.OUTAGE:
                    rest: dict[TP, int] = {}
                    for later in records[i:]:
                        rest.setdefault(
                            (later.position.topic, later.position.partition), later.position.offset
                        )
                    self._partitions.pause_for_database(rest, reason_of(exc))
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
                    self._partitions.pause_for_database(
                        {(c.position.topic, c.position.partition): c.position.offset},
                        "dead-letter topic unreachable",
                    )
                    return
                try:
                    result, positions = self._record([replace(c, kind=Kind.IGNORE)])
                except Exception as again:
                    self._partitions.pause_for_database(
                        {(c.position.topic, c.position.partition): c.position.offset},
                        type(again).__name__,
                    )
                    return
            self._apply(result, positions)

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
            self._deferred.add(issue_id, c)
        for doc_name, outcome in result.outcomes:
            self._metrics.document_settled(doc_name, DocumentOutcome(outcome))
        for doc_id in result.to_drive:
            row = result.rows.get(doc_id)
            if row is not None:
                self._partitions.track(row)
            self._driver.submit(doc_id, row=row)

    # ------------------------------------------------------------------ backpressure

    def _backpressure(self) -> None:
        """Deferred reversals count as documents in flight (`syncd.pipeline.deferred`)."""
        self._partitions.backpressure(self._driver.active_count + self._deferred.count)

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
            self._partitions.settled(doc_id, topic, partition)
            if doc_id in self._deferred:
                ready.append(doc_id)
        if ready:
            self._recheck_deferred(ready)

    def _recheck_deferred(self, issue_ids: list[int]) -> None:
        records = self._deferred.records(issue_ids, self._partitions)
        if not records:
            self._deferred.drop(issue_ids)
            return
        try:
            result, positions = self._record(records)
        except Exception as exc:  # routed by syncd.pipeline.poison
            failure = failure_of(exc)
            if failure is Failure.FENCED:
                assert isinstance(exc, FencedError)
                self._partitions.drop((exc.topic, exc.partition))
            elif failure is Failure.POISON:
                # one of them cannot be recorded: record them one by one, dead-letter it
                self._deferred.drop(issue_ids)
                self._isolate(records)
            return  # an outage: they stay deferred; the periodic re-check tries again
        self._deferred.drop(issue_ids)
        self._apply(result, positions)

    def _sweep_due(self) -> None:
        """Submit the due open documents of the claimed partitions (`Driver.submit` ignores
        the ones already scheduled). Stops at the in-flight limit; the next sweep goes on."""
        claimed = self._partitions.claimed()
        if not claimed or not self._partitions.db_ok:
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
                            self._partitions.track(row)
                        # Due by the ledger (e.g. `syncd retry`): run it now, even if the
                        # driver planned its next look for later.
                        self._driver.submit(row.id, expedite=row.next_attempt_at is not None)
                    if len(page) < 500:
                        break
                    after = page[-1].id
                # Documents the approver role decided on: the driver carries it out.
                for row in repo.decided_awaiting(conn, partitions=claimed, limit=limit):
                    if not self._driver.is_active(row.id):
                        submitted += 1
                        self._partitions.track(row)
                    self._driver.submit(row.id, row=row)
        except (OperationalError, DBAPIError) as exc:
            log.debug("resume sweep skipped: %s", type(exc).__name__)
            return
        if submitted:
            log.info("resume sweep: submitted %d due document(s)", submitted)

    # ------------------------------------------------------------------ partitions come and go

    def _resume_claimed(self, rows: list[DocumentRow]) -> None:
        """The open documents of newly claimed partitions: the driver resumes them."""
        for row in rows:
            self._driver.submit(row.id, row=row)

    def _release(self, tps: list[TP], doc_ids: set[int]) -> None:
        """Partitions gone (revoked, lost, fenced): their next owner resumes what they held."""
        self._deferred.drop_partitions(tps)
        self._driver.forget(doc_ids)

    # ------------------------------------------------------------------ gauges

    def _report_lag(self) -> None:
        self._end_offsets.ask(self._partitions.tps())
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
        fetched = self._fetch_positions(list(ends))
        for tp, high in ends.items():
            state = self._partitions.get(tp)
            if state is None:
                continue  # released since the question went out
            position = state.progress.commit_position()
            if state.progress.pending_count == 0:
                # Nothing in flight: where the consumer stands is where we are. Its position
                # moves past transaction markers (the Connect worker writes exactly-once, so
                # every batch ends with one), which are never delivered as records: counted
                # from the last record seen, an idle partition would lag by one forever.
                position = max(position, fetched.get(tp, -1))
            if position < 0:
                continue
            lag = max(0, high - position)
            lag_s = 0.0
            if lag > 0 and state.last_event_ts_ms is not None:
                lag_s = max(0.0, (now_ms - state.last_event_ts_ms) / 1000.0)
            self._metrics.set_partition_position(tp[0], tp[1], lag_messages=lag, lag_seconds=lag_s)

    def _fetch_positions(self, tps: list[TP]) -> dict[TP, int]:
        """The consumer's own positions (next offset it will hand out), where it has one."""
        try:
            found = self._consumer.position([KafkaTopicPartition(t, p) for t, p in tps])
        except KafkaException:
            return {}
        return {(x.topic, x.partition): x.offset for x in found if x.offset >= 0}

    def _report_ledger(self) -> None:
        try:
            with self._engine.connect() as conn:
                counts = repo.count_by_state(conn)
                stuck = repo.count_stuck_documents(
                    conn, timedelta(seconds=self._config.pipeline.stuck_after_seconds)
                )
                reconciled = ledger_reconcile.latest_run(conn)
        except (OperationalError, DBAPIError):
            self._partitions.database_unreachable()
            return
        self._metrics.set_ledger_counts(counts)
        self._metrics.set_stuck_documents(stuck)
        if reconciled is not None:
            self._metrics.set_reconcile(reconciled.by_class, reconciled.finished_at.timestamp())

    # ------------------------------------------------------------------ retention

    def _prune_payloads(self) -> None:
        """Retention of personal data: drop the stored payloads of documents settled more
        than `ledger.payload_retention_days` ago, in small batches (`docs/security.md`).
        Any replica may do it: rows another one is pruning are skipped."""
        days = self._config.ledger.payload_retention_days
        if days is None or not self._partitions.db_ok:
            return
        pruned = 0
        try:
            for _ in range(PRUNE_BATCHES_PER_ROUND):
                with self._engine.begin() as conn:
                    n = repo.prune_payloads(
                        conn,
                        timedelta(days=days),
                        actor=self._owner,
                        limit=self._config.ledger.prune_batch_size,
                    )
                pruned += n
                if n < self._config.ledger.prune_batch_size:
                    break
        except (OperationalError, DBAPIError) as exc:
            log.warning("payload pruning skipped: %s", type(exc).__name__)
        if pruned:
            log.info("pruned the stored payloads of %d settled document(s)", pruned)
            self._metrics.payloads_pruned.inc(pruned)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self._config.pipeline.drain_deadline_seconds
        log.info(
            "shutting down: draining in-flight documents (deadline %.0f s)",
            self._config.pipeline.drain_deadline_seconds,
        )
        with contextlib.suppress(KafkaException):
            self._consumer.pause(self._partitions.assigned())
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
        self._dead_letters.close(5.0)
        log.info("stopped")
