"""bench/alo.py's bookkeeping: per-key order and contiguous offsets (the at-least-once peer
must keep the same order guarantees as syncd for the bench to compare like with like)."""

from __future__ import annotations

from bench.alo import KeyOrder, Work
from syncd.changes import RecordPosition
from syncd.pipeline.classify import Classified, Kind


def _work(n: int, partition: int, offset: int, key: bytes) -> Work:
    c = Classified(RecordPosition("t", partition, offset), Kind.ISSUE, "test")
    return Work(n, partition, offset, key, c)


def test_a_key_waits_for_its_earlier_record_other_keys_do_not() -> None:
    order = KeyOrder({0: 100})
    a1, b1, a2 = _work(1, 0, 100, b"a"), _work(2, 0, 101, b"b"), _work(3, 0, 102, b"a")
    assert order.offer(a1) is True
    assert order.offer(b1) is True
    assert order.offer(a2) is False  # behind a1
    assert order.outstanding == 3
    assert order.finish(b1) is None
    assert order.finish(a1) is a2  # a2 may start now
    assert order.finish(a2) is None
    assert order.outstanding == 0
    assert order.queues == {}


def test_the_commit_position_is_the_lowest_unfinished_offset() -> None:
    order = KeyOrder({0: 100, 1: 7})
    works = [_work(n, 0, 100 + n, bytes([n])) for n in range(3)]
    for w in works:
        order.offer(w)
    order.finish(works[2])
    order.finish(works[1])
    assert order.positions() == {0: 100}  # 100 still in flight: a crash re-delivers 100..
    order.finish(works[0])
    assert order.positions() == {0: 103}
    order.offer(_work(9, 1, 7, b"x"))
    assert order.positions() == {0: 103, 1: 7}


def test_the_same_key_on_two_partitions_is_two_keys() -> None:
    order = KeyOrder({})
    assert order.offer(_work(1, 0, 5, b"k")) is True
    assert order.offer(_work(2, 1, 5, b"k")) is True
