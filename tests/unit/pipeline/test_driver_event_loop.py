"""`pipeline.provider_calls: event_loop`: a step's provider exchange leaves the worker
thread, so far more documents wait on the platform at once than there are workers; the
exchange follows the same exactly-once protocol as on a worker; the step ends the same
way. No database: rows are handed to `submit`, outcomes are caught before the committer."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from syncd.issuers.base import (
    InvoicePayload,
    IssueResult,
    NotFound,
    Processing,
    ReversalRequest,
)
from syncd.lifecycle import DocumentState, RetryPolicy
from syncd.observability.metrics import Metrics
from syncd.pipeline.committer import Write
from syncd.pipeline.driver import Driver
from tests.unit.pipeline.test_outcomes import row

DOCS = 40


class Gate:
    """Opens once `expected` calls wait at the same time (a deadlock otherwise)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waiting = 0
        self.threads: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.opened = threading.Event()

    async def enter(self, op: str, serial: str) -> None:
        with self._lock:
            self.calls.append((op, serial))
            self.threads.add(threading.current_thread().name)
            self.waiting += 1
            if self.waiting >= self.expected:
                self.opened.set()
        while not self.opened.is_set():
            await asyncio.sleep(0.005)


class AsyncFake:
    provider = "fake"

    def __init__(self, gate: Gate, answer: type[IssueResult]) -> None:
        self.gate = gate
        self.answer = answer

    async def issue(self, invoice: InvoicePayload) -> IssueResult:
        assert isinstance(invoice, dict)
        serial = str(invoice["serial"])
        await self.gate.enter("issue", serial)
        return Processing(serial)

    async def query(self, serial: str) -> IssueResult:
        await self.gate.enter("query", serial)
        return self.answer(serial)  # type: ignore[call-arg]

    async def reverse(self, request: ReversalRequest) -> IssueResult:
        raise AssertionError("not used")

    async def query_reversal(self, serial: str) -> IssueResult:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        self.closed = True


class Fake:
    """A provider with an event-loop twin; its own (threaded) calls must not be used."""

    provider = "fake"

    def __init__(self, twin: AsyncFake) -> None:
        self.twin = twin

    def aio(self) -> AsyncFake:
        return self.twin

    def issue(self, invoice: InvoicePayload) -> IssueResult:
        raise AssertionError("called on a worker thread")

    query = reverse = query_reversal = issue  # type: ignore[assignment]

    def close(self) -> None:
        pass


class CaughtDriver(Driver):
    """Records each step's end instead of committing it."""

    def __init__(self, issuer: Fake, workers: int = 2, **kw: Any) -> None:
        doc = SimpleNamespace()
        doc.for_table = lambda _table: doc
        super().__init__(
            engine=None,  # type: ignore[arg-type]
            issuer=issuer,  # type: ignore[arg-type]
            config=SimpleNamespace(documents={"sales_order": doc}),  # type: ignore[arg-type]
            metrics=Metrics(CollectorRegistry()),
            owner="test",
            workers=workers,
            policy=RetryPolicy(),
            **kw,
        )
        self.ended: dict[int, float | Write | None] = {}
        self.all_ended = threading.Event()

    def _after_step(self, doc_id: int, decided: float | Write | None) -> None:
        self.ended[doc_id] = decided
        self._finish(doc_id)
        if len(self.ended) == DOCS:
            self.all_ended.set()


def documents(state: DocumentState, attempts: int = 0) -> list[Any]:
    base = row(state, attempts=attempts)
    return [
        dataclasses.replace(base, id=n, serial=f"SO-{n}", payload={"serial": f"SO-{n}"})
        for n in range(1, DOCS + 1)
    ]


def test_many_more_documents_wait_on_the_platform_than_there_are_workers() -> None:
    gate = Gate(DOCS)  # 40 calls at once with 2 workers: only the event loop can do it
    twin = AsyncFake(gate, NotFound)
    d = CaughtDriver(Fake(twin), event_loop=True)
    try:
        for doc in documents(DocumentState.READY):
            d.submit(doc.id, row=doc)
        assert d.all_ended.wait(20), f"only {gate.waiting} calls were in flight at once"
    finally:
        d.stop(0)
    assert gate.threads == {"syncd-provider"}
    assert sorted(gate.calls) == sorted(("issue", f"SO-{n}") for n in range(1, DOCS + 1))
    # a fresh document's send came back "processing": it is polled later, as on a worker
    assert all(isinstance(decided, float) and decided > 0 for decided in d.ended.values())
    assert twin.closed  # the loop's clients are closed when the driver stops


def test_the_loop_follows_the_same_protocol_query_first_then_re_send() -> None:
    """A document that may have reached the provider is queried first; only "not found"
    re-sends it -- on the loop exactly as on a worker."""
    gate = Gate(DOCS)
    twin = AsyncFake(gate, NotFound)
    d = CaughtDriver(Fake(twin), event_loop=True)
    try:
        for doc in documents(DocumentState.OUTCOME_UNKNOWN, attempts=1):
            d.submit(doc.id, row=doc)
        assert d.all_ended.wait(20)
    finally:
        d.stop(0)
    for n in range(1, DOCS + 1):
        mine = [op for op, serial in gate.calls if serial == f"SO-{n}"]
        assert mine == ["query", "issue"]


def test_without_the_setting_the_calls_stay_on_the_workers() -> None:
    d = CaughtDriver(Fake(AsyncFake(Gate(1), NotFound)))
    try:
        assert d._provider_loop is None and d._aio == {}
    finally:
        d.stop(0)


def test_a_due_step_of_a_given_row_is_handed_to_the_loop_without_a_worker() -> None:
    """The intake's fresh documents (their rows given, due now): the submitting thread
    decides the step and hands the exchange to the loop itself -- with no worker at all
    every document is still issued. A row the step must read, or a document of an
    account without an event-loop client, still goes to the workers."""
    gate = Gate(DOCS)
    twin = AsyncFake(gate, NotFound)
    d = CaughtDriver(Fake(twin), workers=0, event_loop=True)
    try:
        for doc in documents(DocumentState.READY):
            d.submit(doc.id, row=doc)
        assert d.all_ended.wait(20), f"only {gate.waiting} calls were in flight at once"
        approval = documents(DocumentState.AWAITING_APPROVAL)[0]
        assert not d._hands_over(approval, approval.id)  # reads its approval: a worker's
        assert not d._hands_over(None, 1)  # the row must be read: a worker's
    finally:
        d.stop(0)
    assert gate.threads == {"syncd-provider"}
    assert sorted(gate.calls) == sorted(("issue", f"SO-{n}") for n in range(1, DOCS + 1))
