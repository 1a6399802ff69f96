"""Reversals waiting for their invoice: kept by its document, gone with their partition."""

from __future__ import annotations

from syncd.changes import RecordPosition
from syncd.pipeline.classify import Classified, Kind
from syncd.pipeline.deferred import DeferredReversals


def _record(partition: int, offset: int) -> Classified:
    return Classified(RecordPosition("t", partition, offset), Kind.REVERSE, "reverse")


def test_waiting_reversals_are_kept_by_the_document_they_wait_for() -> None:
    deferred = DeferredReversals()
    assert not deferred and deferred.count == 0
    a, b, c = _record(0, 1), _record(0, 2), _record(1, 3)
    deferred.add(10, a)
    deferred.add(10, b)
    deferred.add(11, c)
    assert deferred and deferred.count == 3 and 10 in deferred and 12 not in deferred
    assert deferred.issue_ids() == [10, 11]
    # only the records of partitions still owned are tried again
    assert deferred.records([10, 11], {("t", 0)}) == [a, b]
    assert deferred.records([11, 12], {("t", 0), ("t", 1)}) == [c]
    deferred.drop([10, 12])
    assert deferred.issue_ids() == [11]


def test_a_released_partitions_reversals_go_with_it() -> None:
    deferred = DeferredReversals()
    a, b, c = _record(0, 1), _record(1, 2), _record(1, 3)
    deferred.add(10, a)
    deferred.add(10, b)
    deferred.add(11, c)
    deferred.drop_partitions([("t", 1)])
    assert deferred.issue_ids() == [10] and deferred.records([10], {("t", 0)}) == [a]
    assert deferred.count == 1
