"""Which partitions the loop owns, where they start, and which are paused and why.

A fake consumer records the calls; the ledger's lease/offset queries are replaced, so
these run without Kafka or a database (the daemon integration tests run the real thing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, OFFSET_STORED
from confluent_kafka import TopicPartition as KafkaTopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from syncd.ledger import repository
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.observability.metrics import Metrics
from syncd.pipeline.partitions import DB_BACKOFF_MAX, Partitions

T = "erp.public.sales_order"
#: the offset of a TopicPartition named without one (pause, resume, unassign)
UNSET = OFFSET_INVALID


def _tps(ktps: list[KafkaTopicPartition]) -> list[tuple[str, int, int]]:
    return [(k.topic, k.partition, k.offset) for k in ktps]


class FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int, int]]]] = []

    def _record(self, name: str, ktps: list[KafkaTopicPartition]) -> None:
        self.calls.append((name, sorted(_tps(ktps))))

    def incremental_assign(self, ktps: list[KafkaTopicPartition]) -> None:
        self._record("assign", ktps)

    def incremental_unassign(self, ktps: list[KafkaTopicPartition]) -> None:
        self._record("unassign", ktps)

    def pause(self, ktps: list[KafkaTopicPartition]) -> None:
        self._record("pause", ktps)

    def resume(self, ktps: list[KafkaTopicPartition]) -> None:
        self._record("resume", ktps)

    def seek(self, ktp: KafkaTopicPartition) -> None:
        self._record("seek", [ktp])

    def take(self) -> list[tuple[str, list[tuple[str, int, int]]]]:
        calls, self.calls = self.calls, []
        return calls


class FakeEngine:
    """Hands out a dummy connection, or fails like an unreachable database."""

    def __init__(self) -> None:
        self.down = False

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        if self.down:
            raise OperationalError("SELECT 1", {}, Exception("connection refused\nDETAIL: x"))
        yield SimpleNamespace(execute=lambda *_a, **_k: None)

    def begin(self) -> Any:
        return self._conn()

    def connect(self) -> Any:
        return self._conn()


class Ledger:
    """Stands in for the repository's lease, offset and open-document queries."""

    def __init__(self) -> None:
        self.offsets: dict[LedgerTP, int] = {}
        self.open_docs: list[Any] = []
        self.epoch = 7

    def claim_partitions(self, _conn: Any, _group: str, _owner: str, tps: list[LedgerTP]) -> Any:
        return dict.fromkeys(tps, self.epoch)

    def load_offsets(self, _conn: Any, _group: str, tps: list[LedgerTP]) -> Any:
        return {tp: self.offsets[tp] for tp in tps if tp in self.offsets}

    def documents_to_resume(self, _conn: Any, *, partitions: list[LedgerTP], **_: Any) -> Any:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        return [r for r in self.open_docs if (r.source_topic, r.source_partition) in keys]


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, per_partition: int | None = None) -> None:
        self.consumer = FakeConsumer()
        self.engine = FakeEngine()
        self.ledger = Ledger()
        for name in ("claim_partitions", "load_offsets", "documents_to_resume"):
            monkeypatch.setattr(repository, name, getattr(self.ledger, name))
        self.metrics = Metrics(CollectorRegistry())
        self.claimed: list[Any] = []
        self.released: list[tuple[list[tuple[str, int]], set[int]]] = []
        self.p = Partitions(
            consumer=self.consumer,  # type: ignore[arg-type]
            engine=self.engine,  # type: ignore[arg-type]
            metrics=self.metrics,
            group="g",
            owner="me",
            max_in_flight=100,
            max_in_flight_per_partition=per_partition,
            on_claimed=self.claimed.extend,
            on_released=lambda tps, ids: self.released.append((tps, ids)),
        )

    def assign(self, *partitions: int) -> None:
        ktps = [KafkaTopicPartition(T, n) for n in partitions]
        self.p.on_assign(self.consumer, ktps)  # type: ignore[arg-type]

    def paused(self) -> float:
        return self.metrics.partitions_paused._value.get()  # type: ignore[attr-defined,no-any-return]


def _row(doc_id: int, partition: int) -> Any:
    return SimpleNamespace(id=doc_id, source_topic=T, source_partition=partition)


# --------------------------------------------------------------------------- ownership


def test_assigned_partitions_start_at_their_stored_offsets_under_a_lease(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.ledger.offsets = {LedgerTP(T, 0): 42}
    h.ledger.open_docs = [_row(5, 0), _row(6, 1)]
    h.assign(0, 1)
    # stored offset where there is one; Kafka's committed offset only for a first start
    assert h.consumer.take() == [("assign", [(T, 0, 42), (T, 1, OFFSET_STORED)])]
    s0, s1 = h.p.get((T, 0)), h.p.get((T, 1))
    assert s0 is not None and s1 is not None
    assert (s0.epoch, s0.stored, s0.progress.start) == (7, 42, 42)
    assert (s1.epoch, s1.stored, s1.progress.start) == (7, None, -1)
    assert h.p.joined and h.p.db_ok
    assert h.p.claimed() == [LedgerTP(T, 0), LedgerTP(T, 1)]
    # their open documents are resumed and count for their partitions
    assert [r.id for r in h.claimed] == [5, 6]
    assert (s0.doc_ids, s1.doc_ids) == ({5}, {6})


def test_an_unreachable_database_holds_assigned_partitions_until_the_claim(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.engine.down = True
    h.assign(0)
    assert h.consumer.take() == [
        ("assign", [(T, 0, OFFSET_STORED)]),
        ("pause", [(T, 0, OFFSET_STORED)]),
    ]
    state = h.p.get((T, 0))
    assert state is not None and state.epoch is None
    assert h.p.held_for_database((T, 0)) and not h.p.db_ok and h.p.claimed() == []
    assert h.p.retry_due(float("inf"))
    h.p.retry_database()  # still down: stays held
    assert h.consumer.take() == [] and h.p.held_for_database((T, 0))
    h.engine.down = False
    h.ledger.offsets = {LedgerTP(T, 0): 9}
    h.p.retry_database()
    assert h.consumer.take() == [("seek", [(T, 0, 9)]), ("resume", [(T, 0, UNSET)])]
    assert state.epoch == 7 and state.stored == 9 and h.p.db_ok
    assert not h.p.held_for_database((T, 0)) and not h.p.retry_due(float("inf"))


def test_a_partition_that_goes_takes_what_was_held_for_it(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.assign(0, 1, 2)
    h.consumer.take()
    for row in (_row(1, 0), _row(2, 0), _row(3, 1)):
        h.p.track(row)
    h.p.settled(2, T, 0)
    h.p.pause_for_database({(T, 1): 4}, "down")
    h.p.on_revoke(h.consumer, [KafkaTopicPartition(T, 0), KafkaTopicPartition(T, 1)])  # type: ignore[arg-type]
    assert h.released == [([(T, 0), (T, 1)], {1, 3})]
    assert h.consumer.take()[-1] == ("unassign", [(T, 0, UNSET), (T, 1, UNSET)])
    assert (T, 0) not in h.p and (T, 1) not in h.p and not h.p.held_for_database((T, 1))
    h.p.drop((T, 2))  # fenced
    assert h.released[-1] == ([(T, 2)], set()) and len(h.p) == 0


# --------------------------------------------------------------------------- database pause


def test_a_failed_batch_rewinds_and_holds_its_partitions_with_growing_backoff(
    monkeypatch,
) -> None:
    h = Harness(monkeypatch)
    h.assign(0, 1)
    h.consumer.take()
    state = h.p.get((T, 0))
    assert state is not None
    for offset in (10, 11, 12):
        state.progress.seen(offset)
    h.p.pause_for_database({(T, 0): 11, (T, 9): 3}, "database down")  # (T, 9): not ours
    assert h.consumer.take() == [("pause", [(T, 0, 11)]), ("seek", [(T, 0, 11)])]
    assert state.progress.commit_position() == 10 and state.progress.is_pending(10)
    assert not state.progress.is_pending(11)
    assert h.p.held_for_database((T, 0)) and not h.p.held_for_database((T, 1))
    assert not h.p.db_ok and h.paused() == 1
    assert h.p.claimed() == [LedgerTP(T, 1)]
    backoffs = []
    for _ in range(6):
        h.p.pause_for_database({(T, 0): 11}, "again")
        backoffs.append(h.p._db_backoff)
    assert backoffs[-1] == DB_BACKOFF_MAX and backoffs == sorted(backoffs)
    h.p.retry_database()
    assert h.consumer.take()[-1] == ("resume", [(T, 0, UNSET)])
    h.p.database_ok()
    assert h.p._db_backoff == 1.0 and h.paused() == 0


def test_records_fetched_before_the_pause_are_read_again(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.assign(0)
    h.consumer.take()
    h.p.hold_fetched({(T, 0): 17})
    assert h.consumer.take() == [("pause", [(T, 0, 17)]), ("seek", [(T, 0, 17)])]
    assert h.p.held_for_database((T, 0))


# --------------------------------------------------------------------------- backpressure


def test_backpressure_pauses_everything_and_resumes_at_three_quarters(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.assign(0, 1)
    h.consumer.take()
    h.p.backpressure(99)
    assert h.consumer.take() == []
    h.p.backpressure(100)
    assert h.consumer.take() == [("pause", [(T, 0, UNSET), (T, 1, UNSET)])]
    assert h.paused() == 2
    h.assign(2)  # assigned while under backpressure: paused too
    assert h.consumer.take()[-1] == ("pause", [(T, 2, OFFSET_STORED)])
    h.p.pause_for_database({(T, 1): 5}, "down")
    h.consumer.take()
    h.p.backpressure(76)
    assert h.consumer.take() == []
    h.p.backpressure(75)  # the database still holds partition 1
    assert h.consumer.take() == [("resume", [(T, 0, UNSET), (T, 2, UNSET)])]
    assert h.paused() == 1


def test_the_database_coming_back_does_not_lift_backpressure(monkeypatch) -> None:
    h = Harness(monkeypatch)
    h.assign(0)
    h.p.pause_for_database({(T, 0): 5}, "down")
    h.p.backpressure(100)
    h.consumer.take()
    h.p.retry_database()
    assert h.consumer.take() == [] and not h.p.held_for_database((T, 0))
    assert h.paused() == 1


def test_a_busy_partition_is_paused_alone_at_its_own_limit(monkeypatch) -> None:
    h = Harness(monkeypatch, per_partition=4)
    h.assign(0, 1)
    h.consumer.take()
    for doc_id in range(4):
        h.p.track(_row(doc_id, 0))
    h.p.backpressure(4)
    assert h.consumer.take() == [("pause", [(T, 0, UNSET)])]
    h.p.settled(0, T, 0)
    h.p.backpressure(3)  # three quarters of its limit: resumed
    assert h.consumer.take() == [("resume", [(T, 0, UNSET)])]
    h.p.track(_row(0, 0))
    h.p.backpressure(4)
    assert h.consumer.take() == [("pause", [(T, 0, UNSET)])]
    h.p.settled(0, T, 0)
    h.p.settled(1, T, 0)
    h.p.backpressure(100)  # globally paused: the partition stays paused with the rest
    assert h.consumer.take() == [("pause", [(T, 0, UNSET), (T, 1, UNSET)])]
    h.p.backpressure(0)
    assert h.consumer.take() == [("resume", [(T, 0, UNSET), (T, 1, UNSET)])]
