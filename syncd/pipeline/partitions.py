"""The partitions this replica owns: where each starts, and which are paused and why.

Ownership. A partition is consumed only under a lease epoch claimed in the ERP database on
assignment, and starts from the offset stored there (`syncd.offsets`); Kafka's committed
offset is only the fallback for a first start. Until the claim succeeds (the database
unreachable at assignment) the partition stays paused: consuming without an epoch would
have nowhere safe to record progress. When a partition goes (revoked, lost, or fenced by
another replica's newer epoch) everything held for it goes too -- its documents' scheduled
steps, its deferred reversals -- because the new owner resumes them from the ledger.

Pausing. Three independent reasons hold partitions paused, and each is lifted only by its
own cause:
* the database: a batch could not be recorded; its partitions are rewound to the batch's
  first offset and retried with backoff (nothing is lost: the records are consumed again);
* global backpressure: the documents in flight reached `max_in_flight`;
* per-partition backpressure: one partition's documents reached
  `max_in_flight_per_partition`, so one busy partition cannot take every slot.
Lifting one reason must never resume a partition another still holds (`_resumable`). The
loop keeps polling while partitions are paused, so the group membership and the liveness
heartbeat stay healthy.

Everything here runs on the loop's thread (librdkafka calls the rebalance callbacks from
inside the loop's `consume`), so none of it is locked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, ItemsView, Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_STORED, Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from syncd.kafka.progress import PartitionProgress
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.lifecycle import RESUME_STATES, DocumentState
from syncd.observability.metrics import Metrics

log = logging.getLogger(__name__)

TP = tuple[str, int]

DB_BACKOFF_MAX = 15.0


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


class Partitions:
    """The assigned partitions' state and the consumer's pause/resume bookkeeping.

    `on_claimed(rows)` receives the open documents of newly claimed partitions (to resume
    them); `on_released(tps, doc_ids)` is told which partitions went and which documents
    the driver held for them (to drop their scheduled steps and deferred reversals).
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        engine: Engine,
        metrics: Metrics,
        group: str,
        owner: str,
        max_in_flight: int,
        max_in_flight_per_partition: int | None,
        on_claimed: Callable[[list[DocumentRow]], None],
        on_released: Callable[[list[TP], set[int]], None],
    ) -> None:
        self._consumer = consumer
        self._engine = engine
        self._metrics = metrics
        self._group = group
        self._owner = owner
        self._max_in_flight = max_in_flight
        self._max_in_flight_per_partition = max_in_flight_per_partition
        self._on_claimed = on_claimed
        self._on_released = on_released
        self._states: dict[TP, PartitionState] = {}
        self._paused_bp = False
        self._paused_db: set[TP] = set()
        self._db_ok = True
        self._db_backoff = 1.0
        self._db_retry_at = 0.0
        #: the consumer group assigned this replica partitions at least once (readiness)
        self.joined = False

    # ------------------------------------------------------------------ state

    def get(self, tp: TP) -> PartitionState | None:
        return self._states.get(tp)

    def __contains__(self, tp: object) -> bool:
        return tp in self._states

    def __len__(self) -> int:
        return len(self._states)

    def items(self) -> ItemsView[TP, PartitionState]:
        return self._states.items()

    def tps(self) -> list[TP]:
        return list(self._states)

    def assigned(self) -> list[KafkaTopicPartition]:
        return [KafkaTopicPartition(t, p) for (t, p) in self._states]

    def claimed(self) -> list[LedgerTP]:
        """The partitions held under a lease and not paused for the database."""
        return [
            LedgerTP(t, p)
            for (t, p), s in self._states.items()
            if s.epoch is not None and (t, p) not in self._paused_db
        ]

    def track(self, row: DocumentRow) -> None:
        """Count `row` as one of its partition's documents in flight."""
        if row.source_topic is not None and row.source_partition is not None:
            state = self._states.get((row.source_topic, row.source_partition))
            if state is not None:
                state.doc_ids.add(row.id)

    def settled(self, doc_id: int, topic: str | None, partition: int | None) -> None:
        """A document the driver held is done: it no longer counts for its partition."""
        if topic is not None and partition is not None:
            state = self._states.get((topic, partition))
            if state is not None:
                state.doc_ids.discard(doc_id)

    # ------------------------------------------------------------------ rebalancing

    def on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self.joined = True
        self._metrics.rebalances.labels(event="assign").inc()
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._states[tp] = PartitionState(PartitionProgress(start=-1), epoch=None)
        stored = self._claim(tps, seek=False)
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
                self._states[tp].progress.start = offset
                self._states[tp].stored = offset
        consumer.incremental_assign(assignment)
        if stored is None:
            # Database unreachable: hold these partitions until the claim succeeds.
            consumer.pause(assignment)
            self._paused_db.update(tps)
            self._db_ok = False
            self._db_retry_at = time.monotonic() + self._db_backoff
        elif self._paused_bp:
            consumer.pause(assignment)
        self._metrics.assigned_partitions.set(len(self._states))
        log.info("assigned %s", ", ".join(f"{t}[{p}]" for t, p in tps))

    def on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._metrics.rebalances.labels(event="revoke").inc()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.incremental_unassign(partitions)

    def on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._metrics.rebalances.labels(event="lost").inc()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.incremental_unassign(partitions)

    def drop(self, tp: TP) -> None:
        """Fenced: another replica claimed `tp` with a newer epoch; stop consuming it here."""
        self._forget([tp])

    def _claim(self, tps: list[TP], seek: bool = True) -> dict[TP, int | None] | None:
        """Claim leases, load stored offsets, resume the partitions' open documents.

        The stored offsets, or None while the database is unreachable. With `seek`, the
        consumer is moved to them (on assignment they go into the assignment instead).
        """
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
            state = self._states.get(tp)
            if state is None:
                continue
            state.epoch = epochs[rtp]
            result[tp] = offsets.get(rtp)
            if seek and result[tp] is not None:
                offset = result[tp]
                assert offset is not None
                state.progress.start = offset
                state.stored = offset
                try:
                    self._consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
                except KafkaException as exc:
                    log.warning("seek %s[%d] to %d failed: %s", tp[0], tp[1], offset, exc)
        if resume:
            for row in resume:
                self.track(row)
            self._on_claimed(resume)
            log.info("resuming %d open document(s) of the assigned partitions", len(resume))
        return result

    def _forget(self, tps: list[TP]) -> None:
        doc_ids: set[int] = set()
        for tp in tps:
            state = self._states.pop(tp, None)
            if state is not None:
                doc_ids |= state.doc_ids
            self._paused_db.discard(tp)
            self._metrics.forget_partition(*tp)
        self._on_released(tps, doc_ids)
        self._metrics.assigned_partitions.set(len(self._states))
        if tps:
            log.info("released %s", ", ".join(f"{t}[{p}]" for t, p in tps))

    # ------------------------------------------------------------------ database pause

    @property
    def db_ok(self) -> bool:
        """The ERP database answered the last time it was asked (readiness)."""
        return self._db_ok

    def database_ok(self) -> None:
        """A batch was recorded: the database is reachable, the backoff starts over."""
        self._db_ok = True
        self._db_backoff = 1.0

    def database_unreachable(self) -> None:
        """The database failed a question outside the batch path (readiness only)."""
        self._db_ok = False

    def held_for_database(self, tp: TP) -> bool:
        return tp in self._paused_db

    def retry_due(self, now: float) -> bool:
        """Partitions are held for the database and their retry time has come."""
        return bool(self._paused_db) and now >= self._db_retry_at

    def hold_fetched(self, first_offsets: dict[TP, int]) -> None:
        """Records fetched before a partition's pause took effect (or before its claim):
        rewind to the first of them and hold the partition; they are read again once it
        resumes."""
        for (topic, partition), offset in first_offsets.items():
            ktp = KafkaTopicPartition(topic, partition, offset)
            try:
                self._consumer.pause([ktp])
                self._consumer.seek(ktp)
            except KafkaException as exc:
                log.warning("could not rewind %s[%d]: %s", topic, partition, exc)
            self._paused_db.add((topic, partition))

    def pause_for_database(self, first_offsets: dict[TP, int], why: str) -> None:
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
            state = self._states.get(tp)
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

    def retry_database(self) -> None:
        """Ask the database again; once it answers, claim what is unclaimed and resume."""
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                unclaimed = [tp for tp, s in self._states.items() if s.epoch is None]
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
        self._metrics.partitions_paused.set(0 if not self._paused_bp else len(self._states))
        log.info("ERP database reachable again; resumed %d partition(s)", len(resume))

    # ------------------------------------------------------------------ backpressure

    def backpressure(self, inflight: int) -> None:
        """Pause every partition while `inflight` documents reach `max_in_flight`; resume
        at three quarters of it. Then the per-partition limit."""
        limit = self._max_in_flight
        if not self._paused_bp and inflight >= limit:
            self._paused_bp = True
            self._consumer.pause(self.assigned())
            self._metrics.partitions_paused.set(len(self._states))
            log.info(
                "backpressure: %d documents in flight (limit %d); partitions paused",
                inflight,
                limit,
            )
        elif self._paused_bp and inflight <= int(limit * 0.75):
            self._paused_bp = False
            self._consumer.resume(self._resumable(self._states))
            self._metrics.partitions_paused.set(len(self._paused_db))
        self._partition_backpressure()

    def _partition_backpressure(self) -> None:
        """Pause a partition whose own documents reach `max_in_flight_per_partition`, so
        one busy partition cannot take every slot of the replica."""
        per = self._max_in_flight_per_partition
        if per is None:
            return
        pause: list[KafkaTopicPartition] = []
        resume: list[TP] = []
        for tp, state in self._states.items():
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
            state = self._states.get(tp)
            if state is not None and not state.full and tp not in self._paused_db:
                out.append(KafkaTopicPartition(*tp))
        return out


def _first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the statement)."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip()
    return text_.splitlines()[0][:300] if text_ else type(orig).__name__
