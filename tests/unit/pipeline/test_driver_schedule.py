"""The driver's schedule: `submit` is idempotent, `expedite` moves a waiting step forward
without ever running one document twice at once; the committer outlives a failed batch.
Steps are stubbed; no database. The scheduler is also tested on its own, with plain
callables as steps."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from syncd.lifecycle import DocumentState, RetryPolicy
from syncd.observability.metrics import Metrics
from syncd.pipeline.committer import Committer, Write
from syncd.pipeline.driver import Driver
from syncd.pipeline.outcomes import Change
from syncd.pipeline.scheduler import Scheduled, Scheduler


class StubDriver(Driver):
    """Each step records its start and asks to be looked at again in `again` seconds."""

    def __init__(self, again: float | None) -> None:
        super().__init__(
            engine=None,  # type: ignore[arg-type]
            issuer=None,  # type: ignore[arg-type]
            config=None,  # type: ignore[arg-type]
            metrics=Metrics(CollectorRegistry()),
            owner="test",
            workers=4,
            policy=RetryPolicy(),
        )
        self.again = again
        self.steps: list[int] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.stepped = threading.Event()
        self._count_lock = threading.Lock()

    def _advance(self, doc_id: int) -> Any:
        with self._count_lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            self.steps.append(doc_id)
        time.sleep(0.05)
        with self._count_lock:
            self.concurrent -= 1
        self.stepped.set()
        return self.again


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_submit_twice_steps_once() -> None:
    d = StubDriver(again=None)
    try:
        d.submit(1)
        d.submit(1)
        wait_for(lambda: not d.is_active(1))
        assert d.steps == [1]
    finally:
        d.stop(time.monotonic() + 2)


def test_expedite_moves_a_waiting_step_forward_once() -> None:
    d = StubDriver(again=None)
    try:
        d.submit(7, delay=3600)  # e.g. a BLOCKED row's recheck in an hour
        d.submit(7)  # plain submit: still waits
        time.sleep(0.1)
        assert d.steps == []
        d.submit(7, expedite=True)
        wait_for(lambda: not d.is_active(7))
        assert d.steps == [7]
        assert d.active_count == 0  # the superseded entry never runs
    finally:
        d.stop(time.monotonic() + 2)


def test_expedite_never_doubles_a_running_step() -> None:
    d = StubDriver(again=3600.0)  # after its step the document waits an hour
    try:
        d.submit(3)
        assert d.stepped.wait(5)
        for _ in range(20):  # hammer it while running and while waiting again
            d.submit(3, expedite=True)
        wait_for(lambda: len(d.steps) >= 2)
        time.sleep(0.2)
        assert d.max_concurrent == 1
        assert d.is_active(3)
    finally:
        d.stop(time.monotonic() + 2)


def test_an_expedited_step_skips_the_entry_it_replaced() -> None:
    # Due now goes straight to a worker; the scheduler's older entry (due soon) must be
    # skipped when it comes up, not run the document a second time.
    d = StubDriver(again=None)
    try:
        d.submit(9, delay=0.2)
        d.submit(9, expedite=True)
        wait_for(lambda: not d.is_active(9))
        time.sleep(0.4)  # past the replaced entry's due time
        assert d.steps == [9]
    finally:
        d.stop(time.monotonic() + 2)


def test_steps_still_queued_at_the_drain_deadline_are_not_started() -> None:
    d = StubDriver(again=None)
    try:
        d._scheduler._closed = True  # what `stop` sets once its drain deadline has passed
        d._scheduler._work.put(11)  # a step still waiting for a worker then
        time.sleep(0.2)
        assert d.steps == []
    finally:
        d.stop(time.monotonic())


def test_forget_drops_a_waiting_document() -> None:
    d = StubDriver(again=None)
    try:
        d.submit(5, delay=0.3)
        d.forget({5})
        assert not d.is_active(5)
        time.sleep(0.5)
        assert d.steps == []
    finally:
        d.stop(time.monotonic() + 2)


class CommittingStub(Driver):
    """Every step hands an outcome to the committer; writing "succeeds" without a database
    and the post-commit bookkeeping of the first batch blows up."""

    def __init__(self) -> None:
        super().__init__(
            engine=None,  # type: ignore[arg-type]
            issuer=None,  # type: ignore[arg-type]
            config=None,  # type: ignore[arg-type]
            metrics=Metrics(CollectorRegistry()),
            owner="test",
            workers=2,
            policy=RetryPolicy(),
        )
        self.committed: list[int] = []
        self.explode = True

    def _advance(self, doc_id: int) -> Any:
        row = SimpleNamespace(id=doc_id, state=DocumentState.READY)
        change = Change(DocumentState.ISSUED, "test", {}, next_attempt_at=None)
        return Write(row, None, change, polls=0)  # type: ignore[arg-type]

    def _committed(self, w: Any, updated: Any) -> None:
        if self.explode:
            self.explode = False
            raise RuntimeError("bookkeeping bug")
        self.committed.append(w.row.id)
        self._finish(w.row.id)


def test_committer_survives_an_unexpected_error_and_retries_the_documents(
    monkeypatch: Any,
) -> None:
    import syncd.pipeline.outcomes as outcomes_mod

    monkeypatch.setattr(outcomes_mod, "UNEXPECTED_RETRY_SECONDS", 0.05)
    # writing "succeeds" without a database
    monkeypatch.setattr(Committer, "_write", lambda self, batch: [w.row for w in batch])
    d = CommittingStub()
    try:
        d.submit(1)
        wait_for(lambda: 1 in d.committed)  # stepped again after the failed batch
        d.submit(2)
        wait_for(lambda: 2 in d.committed)  # and the committer still runs
        assert d.active_count == 0
    finally:
        d.stop(time.monotonic() + 2)


# ---------------------------------------------------------------- the scheduler on its own


class Steps:
    """A scheduler whose step records the id and, like a driver step, ends it."""

    def __init__(self, again: float | None = None, workers: int = 2) -> None:
        self.again = again
        self.steps: list[int] = []
        self.sched = Scheduler(self.step, workers=workers)

    def step(self, item_id: int) -> None:
        self.steps.append(item_id)
        if self.again is None:
            self.sched.finish(item_id)
        else:
            self.sched.reschedule(item_id, self.again)


def test_scheduler_runs_steps_in_due_order() -> None:
    s = Steps(workers=1)
    try:
        s.sched.submit(1, delay=0.3)
        s.sched.submit(2, delay=0.1)
        s.sched.submit(3, delay=0.2)
        wait_for(lambda: s.sched.active_count == 0)
        assert s.steps == [2, 3, 1]
    finally:
        s.sched.stop(time.monotonic() + 2)


def test_scheduler_submit_says_what_it_did() -> None:
    s = Steps()
    try:
        assert s.sched.submit(4, delay=3600) is Scheduled.ADDED
        assert s.sched.submit(4, delay=0) is Scheduled.UNCHANGED  # no expedite: still waits
        assert s.sched.submit(4, delay=7200, expedite=True) is Scheduled.UNCHANGED  # later
        assert s.sched.submit(4, delay=0, expedite=True) is Scheduled.EXPEDITED
        wait_for(lambda: not s.sched.is_active(4))
        assert s.steps == [4]
    finally:
        s.sched.stop(time.monotonic() + 2)


def test_scheduler_reschedule_keeps_an_id_active_until_finish() -> None:
    s = Steps(again=0.05)
    try:
        s.sched.submit(5)
        wait_for(lambda: len(s.steps) >= 3)
        assert s.sched.is_active(5)
        s.again = None
        wait_for(lambda: not s.sched.is_active(5))
    finally:
        s.sched.stop(time.monotonic() + 2)


def test_scheduler_forget_reports_dropped_ids_and_keeps_running_ones() -> None:
    started = threading.Event()
    release = threading.Event()
    sched: Scheduler

    def step(item_id: int) -> None:
        started.set()
        release.wait(5)
        sched.finish(item_id)

    sched = Scheduler(step, workers=1)
    try:
        sched.submit(1)
        assert started.wait(5)
        sched.submit(2, delay=3600)
        assert sched.forget({1, 2, 3}) == {2, 3}  # 1 is running: kept
        assert sched.is_active(1) and not sched.is_active(2)
        release.set()
        wait_for(lambda: not sched.is_active(1))
    finally:
        release.set()
        sched.stop(time.monotonic() + 2)


def test_scheduler_stop_waits_for_running_steps_and_refuses_new_ones() -> None:
    release = threading.Event()
    sched: Scheduler

    def step(item_id: int) -> None:
        release.wait(5)
        sched.finish(item_id)

    sched = Scheduler(step, workers=1)
    sched.submit(1)
    wait_for(lambda: not sched.drained())
    assert sched.stop(time.monotonic() + 0.1) == 1  # still running at the deadline
    release.set()
    wait_for(sched.drained)
    assert sched.submit(2) is Scheduled.UNCHANGED


def test_a_claimed_id_runs_on_its_callers_thread_and_is_never_doubled() -> None:
    """`claim`: active and running at once, no worker involved; until its step ends a
    submit changes nothing; `stop` returns as soon as the claimed step finishes."""
    sched = Scheduler(lambda _id: None, workers=0)
    assert sched.claim(7)
    assert sched.is_running(7) and not sched.drained()
    assert not sched.claim(7)
    assert sched.submit(7) is Scheduled.UNCHANGED
    finisher = threading.Timer(0.2, sched.finish, args=(7,))
    finisher.start()
    started = time.monotonic()
    assert sched.stop(time.monotonic() + 5) == 0  # woken by the finish, not the deadline
    assert time.monotonic() - started < 1.0
    assert not sched.claim(8)  # stopping: nothing new
    finisher.join()
