"""The driver's schedule: `submit` is idempotent, `expedite` moves a waiting step forward
without ever running one document twice at once. Steps are stubbed; no database."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from syncd.lifecycle import DocumentState, RetryPolicy
from syncd.observability.metrics import Metrics
from syncd.pipeline.driver import Driver


class StubDriver(Driver):
    """Each step records its start and asks to be looked at again in `again` seconds."""

    def __init__(self, again: float | None) -> None:
        super().__init__(
            engine=None,
            issuer=None,
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
        d._closed = True  # what `stop` sets once its drain deadline has passed
        d._work.put(11)  # a step still waiting for a worker then
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
            engine=None,
            issuer=None,
            config=None,  # type: ignore[arg-type]
            metrics=Metrics(CollectorRegistry()),
            owner="test",
            workers=2,
            policy=RetryPolicy(),
        )
        self.committed: list[int] = []
        self.explode = True

    def _advance(self, doc_id: int) -> Any:
        from syncd.pipeline.driver import _Write

        row = SimpleNamespace(id=doc_id, state=DocumentState.READY)
        return _Write(
            row,
            None,
            DocumentState.ISSUED,
            "test",
            {},  # type: ignore[arg-type]
            next_attempt_at=None,
            polls=0,
        )

    def _write(self, batch: Any) -> Any:
        return [w.row for w in batch]

    def _committed(self, w: Any, updated: Any) -> None:
        if self.explode:
            self.explode = False
            raise RuntimeError("bookkeeping bug")
        self.committed.append(w.row.id)
        self._finish(w.row.id)


def test_committer_survives_an_unexpected_error_and_retries_the_documents(
    monkeypatch: Any,
) -> None:
    import syncd.pipeline.driver as driver_mod

    monkeypatch.setattr(driver_mod, "UNEXPECTED_RETRY_SECONDS", 0.05)
    d = CommittingStub()
    try:
        d.submit(1)
        wait_for(lambda: 1 in d.committed)  # stepped again after the failed batch
        d.submit(2)
        wait_for(lambda: 2 in d.committed)  # and the committer still runs
        assert d.active_count == 0
    finally:
        d.stop(time.monotonic() + 2)
