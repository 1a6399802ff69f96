"""Drives ledger documents through the provider: issue, poll, retry, settle, write back.

Each document advances one *step* at a time on a worker thread (`scheduler`): load the
row, make at most a submit and a query against the provider, and decide the outcome
(`outcomes.decide`, pure). With `pipeline.provider_calls: event_loop` the provider part of
a step (`_protocol`, written once for both ways) runs on one event loop instead
(`provider_loop`), so a document waiting on a slow platform holds no thread; the
scheduler still counts it running until its outcome is committed. The outcome (ledger
transition + ERP write-back) is handed to the committer thread (`committer`), which
writes the outcomes of many documents in one transaction and only then lets the driver
schedule each document's next step. A document is never stepped again before its
outcome is committed.

Exactly-once rests on three rules kept here:
* a document is only ever sent under its frozen serial and frozen payload;
* any state that may have reached the provider (everything but a fresh READY) is first
  *queried* by serial, and only a clean "not found" leads to a re-send;
* every write is a conditional transition (`WHERE state = :expected`), so two replicas
  driving the same document cannot both settle it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal, cast, get_args

from sqlalchemy import Engine

from syncd.config import DocumentConfig, SyncdConfig
from syncd.identity import DocumentKind
from syncd.issuers import horizon
from syncd.issuers.accounts import IssuerAccounts
from syncd.issuers.base import (
    AsyncIssuer,
    Duplicate,
    HasAsyncClient,
    InvoiceLister,
    Issuer,
    IssueResult,
    ListingError,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Reason,
    Retryable,
    ReturnedLine,
    ReversalReason,
    ReversalRequest,
    resolve_after_submit,
)
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow
from syncd.lifecycle import TERMINAL_STATES, DocumentState, RetryPolicy
from syncd.observability.logs import bind
from syncd.observability.metrics import Metrics
from syncd.pipeline.committer import Committer, Write
from syncd.pipeline.outcomes import (
    UNEXPECTED_RETRY_SECONDS,
    Change,
    StepFailure,
    Wait,
    approval_change,
    classify_failure,
    decide,
    delay_until,
    failure_delay,
    is_partial_reversal,
    status_of,
)
from syncd.pipeline.provider_loop import ProviderLoop
from syncd.pipeline.scheduler import Scheduled, Scheduler

log = logging.getLogger(__name__)

S = DocumentState

SettledCallback = Callable[[DocumentRow], None]


class Driver:
    """Runs document steps on the scheduler's workers and commits their outcomes."""

    def __init__(
        self,
        *,
        engine: Engine,
        issuer: Issuer | IssuerAccounts,
        config: SyncdConfig,
        metrics: Metrics,
        owner: str,
        workers: int,
        policy: RetryPolicy,
        on_settled: SettledCallback | None = None,
        rng: random.Random | None = None,
        query_horizon: float | Mapping[str, float | None] | None = None,
        event_loop: bool = False,
    ) -> None:
        """`event_loop` (`pipeline.provider_calls: event_loop`): the provider calls of the
        accounts whose client has an event-loop twin run on one loop thread instead of
        holding a worker each; the workers then only read rows and hand steps over."""
        self._engine = engine
        #: the platform accounts (one, named `default`, for a plain issuer)
        self._accounts = (
            issuer if isinstance(issuer, IssuerAccounts) else IssuerAccounts.single(issuer)
        )
        self._config = config
        self._metrics = metrics
        self._owner = owner
        self._policy = policy
        self._on_settled = on_settled
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        #: `issuer.query_horizon_seconds`: past it, "not found" is searched, never re-sent
        #: per account (a single number: every account)
        self._horizon = query_horizon
        #: what the horizon search of a document's current step found (for its audit row)
        self._evidence: dict[int, dict[str, object]] = {}
        # Per-document memory beside the schedule, guarded by the scheduler's lock so it
        # changes atomically with the schedule (`_lock` below).
        self._polls: dict[int, int] = {}
        #: documents this driver sent while their ledger row still says READY /
        #: REVERSAL_PENDING (see `outcomes.Wait.sent`): their next step queries instead
        #: of sending
        self._sent: set[int] = set()
        #: the row as this driver's last step left it (what it read, or what its conditional
        #: UPDATE returned), so the next step of a document skips re-reading it. Popped at
        #: the start of every step: any step that fails (stale state, database error) makes
        #: the next one read the row afresh. A row changed meanwhile by someone else is
        #: caught by the conditional transition (StaleStateError) like any race.
        self._rows: dict[int, DocumentRow] = {}
        self._committer = Committer(
            engine=engine,
            metrics=metrics,
            owner=owner,
            committed=self._committed,
            failed=self._failed,
            lost=self._lost,
        )
        #: account -> its client on the event loop (accounts without one call on workers)
        self._aio: dict[str, AsyncIssuer] = {}
        self._provider_loop: ProviderLoop | None = None
        if event_loop:
            self._aio = {
                name: client.aio()
                for name, client in self._accounts.items()
                if isinstance(client, HasAsyncClient)
            }
            if self._aio:
                self._provider_loop = ProviderLoop()
        self._scheduler = Scheduler(self._step, workers=workers)
        self._lock = self._scheduler.lock

    # ------------------------------------------------------------------ scheduling

    @property
    def active_count(self) -> int:
        return self._scheduler.active_count

    def is_active(self, doc_id: int) -> bool:
        return self._scheduler.is_active(doc_id)

    def submit(
        self,
        doc_id: int,
        delay: float = 0.0,
        *,
        expedite: bool = False,
        row: DocumentRow | None = None,
    ) -> None:
        """Schedule a step of `doc_id` (no-op when it is already scheduled or running).

        `expedite`: if the document is waiting for a later step, move that step forward to
        `delay` from now (e.g. an operator retry of a BLOCKED row the driver would only
        have looked at again minutes later). A running step is never doubled.
        `row`: the document as just committed by the caller, so the first step need not
        read it again (a stale copy is caught by the conditional transition, as always).
        """
        inline = False
        with self._lock:  # the step cannot start before the row memory below is set
            if delay <= 0 and self._hands_over(row, doc_id) and self._scheduler.claim(doc_id):
                assert row is not None
                self._rows[doc_id] = row
                self._metrics.inflight_documents.set(self._scheduler.active_count)
                inline = True
            else:
                scheduled = self._scheduler.submit(doc_id, delay, expedite=expedite)
                if scheduled is Scheduled.EXPEDITED:
                    # Someone changed the row behind our back (an operator retry): read it
                    # afresh instead of trusting the copy of our last step.
                    self._rows.pop(doc_id, None)
                elif scheduled is Scheduled.ADDED:
                    if row is not None and row.id == doc_id:
                        self._rows[doc_id] = row
                    self._metrics.inflight_documents.set(self._scheduler.active_count)
        if inline:
            self._step(doc_id)

    def _hands_over(self, row: DocumentRow | None, doc_id: int) -> bool:
        """True when the step of this row, due now, only decides and hands the provider
        exchange to the event loop: it reads nothing (the row is given) and never waits, so
        the caller may run it on its own thread instead of waking a worker for it."""
        if self._provider_loop is None or row is None or row.id != doc_id:
            return False
        if row.state in TERMINAL_STATES or row.state in _NOT_HANDED_OVER:
            return False
        routed = self._accounts.route(row.payload)
        return routed is not None and routed[0] in self._aio

    def _finish(self, doc_id: int) -> None:
        with self._lock:
            self._scheduler.finish(doc_id)
            self._polls.pop(doc_id, None)
            self._sent.discard(doc_id)
            self._rows.pop(doc_id, None)
            self._metrics.inflight_documents.set(self._scheduler.active_count)

    def forget(self, doc_ids: set[int]) -> None:
        """Drop scheduled (not running) steps, e.g. of a partition this replica lost."""
        with self._lock:
            for doc_id in self._scheduler.forget(doc_ids):
                self._rows.pop(doc_id, None)
                self._sent.discard(doc_id)
            self._metrics.inflight_documents.set(self._scheduler.active_count)

    def stop(self, deadline: float) -> int:
        """Stop scheduling; wait until running steps end or `deadline` (monotonic) passes.

        Documents not finished stay in the ledger (READY/SUBMITTED/...), and whoever owns
        their partition next resumes them by querying the provider. Returns how many
        steps were still running at the deadline.
        """
        with self._lock:
            self._rows.clear()
        still = self._scheduler.stop(deadline)
        if self._provider_loop is not None:
            clients = list(self._aio.values())

            async def close_clients() -> None:
                for client in clients:
                    await client.aclose()

            self._provider_loop.stop(close_clients)
        self._committer.stop()
        return still

    def drained(self) -> bool:
        return self._scheduler.drained()

    # ------------------------------------------------------------------ one step

    def _step(self, doc_id: int) -> None:
        try:
            decided = self._advance(doc_id)
            if isinstance(decided, _Exchange):
                aio = self._aio.get(decided.account)
                if aio is not None and self._provider_loop is not None:
                    # The worker is free again; the loop carries the provider exchange.
                    exchange = decided
                    self._provider_loop.start(lambda: self._exchange_on_loop(exchange, aio))
                    return
                with _bound(decided.row):
                    decided = self._conclude(decided, *self._exchange(decided))
        except Exception as exc:
            decided = _retry_delay(doc_id, exc, "in step")
        self._after_step(doc_id, decided)

    def _after_step(self, doc_id: int, decided: float | Write | None) -> None:
        if isinstance(decided, Write):
            self._committer.put(decided)  # the committer schedules what comes next
        elif decided is None:
            self._finish(doc_id)
        else:
            self._scheduler.reschedule(doc_id, decided)

    def _advance(self, doc_id: int) -> float | Write | _Exchange | None:
        """A step's part on the worker (reading the row, deciding whether the provider is
        to be asked); returns the delay before the next step, None when settled, the
        outcome to commit, or the exchange with the provider still to make."""
        with self._lock:
            row: DocumentRow | None = self._rows.pop(doc_id, None)
        if row is None:
            with self._engine.connect() as conn:
                row = repo.get_document(conn, doc_id)
        if row.state in TERMINAL_STATES or row.state is S.PENDING:
            self._settled(row)
            return None
        if row.state is S.AWAITING_APPROVAL:
            return self._approval_step(row)
        if row.next_attempt_at is not None:
            wait = (row.next_attempt_at - datetime.now(UTC)).total_seconds()
            if wait > 0.05:
                self._remember(row)
                return wait
        doc = self._config.documents.get(row.identity.document_type)
        if doc is not None:
            doc = doc.for_table(row.identity.source_table)  # a return row: its own table
        if doc is None:
            with _bound(row):
                log.error(
                    "ledger document of unknown type %r: configure it or settle it by hand",
                    row.identity.document_type,
                )
            return UNEXPECTED_RETRY_SECONDS * 10
        routed = self._accounts.route(row.payload)
        if routed is None:
            # No account issues for its seller: a person must look, nothing is sent.
            with _bound(row):
                return self._conclude(
                    _Exchange(row, doc, "", None, None),
                    IssuerAccounts.unrouted(row.serial, row.payload),
                    False,
                )
        account, issuer = routed
        request = None if row.kind is DocumentKind.ISSUE else _reversal_request(row)
        return _Exchange(row, doc, account, issuer, request)

    def _conclude(self, ex: _Exchange, result: IssueResult, resent: bool) -> float | Write:
        """The provider answered `result`: wait and poll again, or the outcome to commit."""
        row = ex.row
        polls = self._polls.get(row.id, 0)
        decision = decide(
            row,
            result,
            resent=resent,
            sent=row.id in self._sent,
            polls=polls,
            policy=self._policy,
            now=datetime.now(UTC),
            rng=self._rng,
        )
        if isinstance(decision, Wait):
            # Nothing to record yet: poll again later, from the row as it is.
            if decision.sent:
                self._sent.add(row.id)
            self._polls[row.id] = polls + 1
            self._remember(row)
            return decision.delay
        if decision.retry is not None:
            self._metrics.retries.labels(operation=decision.retry).inc()
        with self._lock:
            evidence = self._evidence.pop(row.id, None)
        if evidence is not None:
            decision = _with_evidence(decision, evidence)
        return Write(row, ex.doc, decision, polls)

    def _approval_step(self, row: DocumentRow) -> Write | None:
        """A document waiting for a person: carry out the approver role's decision, if
        there is one; otherwise let it go (it holds no in-flight slot while it waits; the
        loop's sweep brings it back once decided)."""
        with self._engine.connect() as conn:
            approval = repo.approval_of(conn, row.id)
        doc = self._config.documents.get(row.identity.document_type)
        if approval is None or doc is None:
            self._settled(row)
            return None
        return Write(row, doc, approval_change(row, approval), 0)

    # ------------------------------------------------------------------ provider calls

    def _record(
        self, ask: str, account: str, issuer: Issuer, result: IssueResult, start: float
    ) -> None:
        self._metrics.issuer_request(ask, status_of(result), time.perf_counter() - start, account)
        gate = getattr(issuer, "gate", None)  # providers that pause a refused account
        if gate is not None and ask in ("issue", "reverse"):
            self._metrics.account_up(bool(gate.up), account)
        credit = getattr(issuer, "credit_remaining", None)  # where the platform reports it
        if credit is not None:
            self._metrics.credit_remaining(account, credit)

    def _protocol(self, row: DocumentRow, account: str) -> StepProtocol:
        """The exactly-once exchange of one step, written once for both ways of calling:
        it yields what to ask the provider (or "search") and receives the answer; it
        returns the provider's answer, and whether this step re-sent a document the
        provider had dropped (a re-send counts as an attempt, so a platform that keeps
        failing the same serial ends in DEAD instead of looping forever)."""
        submit: Ask = "issue" if row.kind is DocumentKind.ISSUE else "reverse"
        query: Ask = "query" if row.kind is DocumentKind.ISSUE else "query_reversal"
        fresh = (
            row.state in (S.READY, S.REVERSAL_PENDING)
            and row.attempts == 0
            and row.id not in self._sent
        )
        resent = False
        if fresh:
            submitted = yield submit
        else:
            # It may have reached the provider before: ask first, re-send only on "not found".
            queried = yield query
            if (
                isinstance(queried, NotFound)
                and row.kind is DocumentKind.ISSUE
                and horizon.passed(row.created_at, datetime.now(UTC), self._horizon_of(account))
            ):
                # The platform may have forgotten the serial: "not found" proves nothing.
                return (yield "search"), False
            if isinstance(queried, NotFound) or (
                isinstance(queried, Retryable) and queried.resubmit
            ):
                if row.attempts + 1 >= self._policy.max_attempts:
                    return queried, False  # out of attempts: next_step makes it DEAD
                submitted = yield submit
                resent = True
            else:
                return queried, False
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            self._metrics.retries.labels(operation="query").inc()
            return resolve_after_submit(submitted, (yield query)), resent
        return submitted, resent

    def _exchange(self, ex: _Exchange) -> tuple[IssueResult, bool]:
        """The step's exchange with the provider on this worker thread."""
        assert ex.issuer is not None
        protocol = self._protocol(ex.row, ex.account)
        try:
            ask = next(protocol)
            while True:
                if ask == "search":
                    answer = self._search(ex.row, ex.account, ex.issuer)
                else:
                    start = time.perf_counter()
                    answer = _ask(ex, ex.issuer, ask)
                    self._record(ask, ex.account, ex.issuer, answer, start)
                ask = protocol.send(answer)
        except StopIteration as done:  # the protocol returned the step's answer
            return cast(tuple[IssueResult, bool], done.value)

    async def _exchange_async(self, ex: _Exchange, aio: AsyncIssuer) -> tuple[IssueResult, bool]:
        """The same exchange as `_exchange`, awaiting the account's event-loop client."""
        assert ex.issuer is not None
        protocol = self._protocol(ex.row, ex.account)
        try:
            ask = next(protocol)
            while True:
                if ask == "search":
                    answer = await asyncio.to_thread(self._search, ex.row, ex.account, ex.issuer)
                else:
                    start = time.perf_counter()
                    answer = await _ask_async(ex, aio, ask)
                    self._record(ask, ex.account, ex.issuer, answer, start)
                ask = protocol.send(answer)
        except StopIteration as done:  # the protocol returned the step's answer
            return cast(tuple[IssueResult, bool], done.value)

    async def _exchange_on_loop(self, ex: _Exchange, aio: AsyncIssuer) -> None:
        """The step's exchange with the provider on the event loop, then its end exactly
        as on a worker (`_after_step`). The horizon search reads the ledger: it runs on a
        thread, never on the loop."""
        assert ex.issuer is not None
        doc_id = ex.row.id
        decided: float | Write | None
        try:
            with _bound(ex.row):
                result, resent = await self._exchange_async(ex, aio)
                decided = self._conclude(ex, result, resent)
        except Exception as exc:
            decided = _retry_delay(doc_id, exc, "in step")
        self._after_step(doc_id, decided)

    def _horizon_of(self, account: str) -> float | None:
        if isinstance(self._horizon, Mapping):
            return self._horizon.get(account)
        return self._horizon

    def _search(self, row: DocumentRow, account: str, issuer: Issuer) -> IssueResult:
        """Past the query horizon: find the document's invoice in the platform's list and
        adopt it on an exact unique match, else park the document for a person (see
        `syncd.issuers.horizon`). Never re-sends."""
        if not isinstance(issuer, InvoiceLister):
            reason = Reason(
                horizon.NO_LIST,
                f"the platform no longer answers for serial {row.serial} (query horizon) and "
                f"provider {issuer.provider} cannot list its invoices; nothing re-sent",
            )
            return NeedsHuman(row.serial, reason)
        now = datetime.now(UTC)
        try:
            wanted = horizon.search_for(row.payload or {}, row.created_at, now)
        except ValueError as exc:
            reason = Reason(horizon.NO_LIST, f"cannot search for serial {row.serial}: {exc}")
            return NeedsHuman(row.serial, reason)
        start = time.perf_counter()
        try:
            listed = list(issuer.list_invoices(wanted.query))
        except ListingError as exc:
            self._metrics.issuer_request("list", None, time.perf_counter() - start, account)
            if exc.retryable:
                return Retryable(row.serial, exc.reason)
            return NeedsHuman(row.serial, exc.reason)
        self._metrics.issuer_request("list", 200, time.perf_counter() - start, account)
        with self._engine.connect() as conn:
            held = repo.serials_holding(conn, (i.invoice_no for i in listed))
        judgement = horizon.judge(wanted, row.serial, listed, held)
        with self._lock:
            self._evidence[row.id] = judgement.evidence
        if judgement.invoice is not None:
            log.warning(
                "past the query horizon: adopted invoice %s found in the platform's list",
                judgement.invoice.invoice_no,
            )
            return horizon.adopted(row.serial, judgement.invoice)
        result = horizon.parked(row.serial, judgement)
        log.warning("past the query horizon: %s", result.reason.message)
        return result

    # ------------------------------------------------------------------ after the commit

    def _committed(self, w: Write, updated: DocumentRow) -> None:
        """The committer wrote `w`: count and log a settled document, then schedule its
        next step (or finish it)."""
        row = w.row
        change = w.change
        self._sent.discard(row.id)  # the ledger now says where the document stands
        with _bound(row):
            if change.outcome is not None:
                self._metrics.document_settled(w.doc.name, change.outcome)
                self._metrics.observe_freshness(row.source_ts_ms, time.time())
                log.info(
                    "document %s",
                    change.outcome.value,
                    extra={
                        "invoice_no": change.fields.get("invoice_no"),
                        "state": updated.state.value,
                    },
                )
            if updated.state in TERMINAL_STATES or updated.state is S.REVERSED:
                self._settled(updated)
                self._finish(row.id)
                return
            if updated.state is S.BLOCKED:
                log.warning("document blocked, provider needs a human: %s", change.error)
        if updated.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED):
            self._polls[row.id] = w.polls + 1
        self._remember(updated)
        self._scheduler.reschedule(row.id, delay_until(change.next_attempt_at, datetime.now(UTC)))

    def _failed(self, w: Write, exc: Exception) -> None:
        """An outcome that could not be written: the document keeps its previous state and
        is looked at again (read afresh), exactly like a step that failed."""
        doc_id = w.row.id
        delay = _retry_delay(doc_id, exc, "writing its outcome")
        with self._lock:
            self._rows.pop(doc_id, None)
        self._scheduler.reschedule(doc_id, delay)

    def _lost(self, batch: list[Write], exc: Exception) -> None:
        """The committer failed unexpectedly after writing `batch`: look again (reading
        afresh) at each of its documents not yet finished."""
        delay = failure_delay(StepFailure.UNEXPECTED)
        log.error(
            "committer: unexpected error after writing a batch of %d; "
            "looking at its documents again in %.0f s",
            len(batch),
            delay,
            exc_info=exc,
        )
        for w in batch:
            with self._lock:
                running = self._scheduler.is_running(w.row.id)
                self._rows.pop(w.row.id, None)
            if running:
                self._scheduler.reschedule(w.row.id, delay)

    def _remember(self, row: DocumentRow) -> None:
        with self._lock:
            if self._scheduler.is_active(row.id):
                self._rows[row.id] = row

    def _settled(self, row: DocumentRow) -> None:
        if self._on_settled is not None:
            try:
                self._on_settled(row)
            except Exception:  # the callback must never stall the worker
                log.exception("settled callback failed for document %s", row.id)


#: states whose step reads the database (approval) or settles at once: on a worker
_NOT_HANDED_OVER: Final = frozenset({S.PENDING, S.AWAITING_APPROVAL})

Ask = Literal["issue", "query", "reverse", "query_reversal", "search"]
#: `Driver._protocol`: yields what to ask, receives the answer, returns (answer, re-sent)
StepProtocol = Generator[Ask, IssueResult, tuple[IssueResult, bool]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Exchange:
    """A step past its database part: the document and the account to ask about it."""

    row: DocumentRow
    doc: DocumentConfig
    account: str
    issuer: Issuer | None
    #: the reversal to send (a reversal document; built before any call: a frozen payload
    #: that cannot make one fails the step, not the provider exchange)
    request: ReversalRequest | None


def _ask(ex: _Exchange, issuer: Issuer, ask: Ask) -> IssueResult:
    if ask == "issue":
        return issuer.issue(ex.row.payload or {})
    if ask == "query":
        return issuer.query(ex.row.serial)
    if ask == "reverse":
        assert ex.request is not None
        return issuer.reverse(ex.request)
    return issuer.query_reversal(ex.row.serial)


async def _ask_async(ex: _Exchange, issuer: AsyncIssuer, ask: Ask) -> IssueResult:
    if ask == "issue":
        return await issuer.issue(ex.row.payload or {})
    if ask == "query":
        return await issuer.query(ex.row.serial)
    if ask == "reverse":
        assert ex.request is not None
        return await issuer.reverse(ex.request)
    return await issuer.query_reversal(ex.row.serial)


def _bound(row: DocumentRow) -> AbstractContextManager[None]:
    """Log lines of a document's step carry where it came from."""
    return bind(
        document=row.identity.document_type,
        key=row.identity.source_key,
        serial=row.serial,
        topic=row.source_topic,
        partition=row.source_partition,
        offset=row.source_offset,
    )


def _retry_delay(doc_id: int, exc: Exception, where: str) -> float:
    """When to look again at a document whose step (or outcome write) failed with `exc`
    (logged here; the decision is `outcomes.failure_delay`)."""
    failure = classify_failure(exc)
    delay = failure_delay(failure)
    if failure is StepFailure.DATABASE:
        log.warning(
            "document %s: ERP database error, retrying in %.0f s: %s",
            doc_id,
            delay,
            type(exc).__name__,
        )
    elif failure is StepFailure.UNEXPECTED:
        log.error(
            "document %s: unexpected error %s; retrying in %.0f s",
            doc_id,
            where,
            delay,
            exc_info=exc,
        )
    return delay


def _with_evidence(decision: Change, evidence: dict[str, object]) -> Change:
    """A decision reached through the horizon search, its evidence in the audit row."""
    verdict = evidence.get("verdict")
    reason = (
        "adopted from the platform's invoice list after the query horizon"
        if verdict == "ADOPTED"
        else f"parked after the query horizon: {verdict}"
    )
    details = {**(decision.details or {}), "horizon": evidence}
    return dataclasses.replace(decision, reason=reason, details=details)


def _reversal_request(row: DocumentRow) -> ReversalRequest:
    payload = row.payload or {}
    original = payload.get("original_invoice_no")
    reason = payload.get("reversal_reason") or "INVOICING_ERROR"
    if not isinstance(original, str):
        raise ValueError(f"reversal {row.serial}: frozen payload has no original_invoice_no")
    if reason not in get_args(ReversalReason):
        raise ValueError(f"reversal {row.serial}: unknown reversal reason {reason!r}")
    lines: tuple[ReturnedLine, ...] = ()
    if is_partial_reversal(row):
        lines = tuple(
            ReturnedLine(int(line["line_no"]), -Decimal(str(line["quantity"])))
            for line in payload.get("lines") or ()
        )
    return ReversalRequest(
        serial=row.serial,
        original_invoice_no=original,
        reason=cast(ReversalReason, reason),
        invoice=payload,
        lines=lines,
    )


__all__ = ["Driver"]
