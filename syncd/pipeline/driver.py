"""Drives ledger documents through the provider: issue, poll, retry, settle, write back.

Each document advances one *step* at a time on a worker thread: load the row, make at most
a submit and a query against the provider, and decide the outcome (pure). The outcome
(ledger transition + ERP write-back) is handed to ONE committer thread that writes the
outcomes of many documents in one transaction (group commit: a batch costs a handful of
statements, whatever its size), and only then schedules each document's next step. A
document is never stepped again before its outcome is committed. Between steps the
document waits in a time-ordered schedule, never in a sleeping thread, so thousands of
documents polling a slow provider cost no threads.

Exactly-once rests on three rules kept here:
* a document is only ever sent under its frozen serial and frozen payload;
* any state that may have reached the provider (everything but a fresh READY) is first
  *queried* by serial, and only a clean "not found" leads to a re-send;
* every write is a conditional transition (`WHERE state = :expected`), so two replicas
  driving the same document cannot both settle it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, get_args

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from syncd.config import DocumentConfig, SyncdConfig
from syncd.erp.writeback import (
    ResultStatus,
    WriteBack,
    apply_writebacks,
    key_from_ledger,
)
from syncd.issuers.base import (
    Duplicate,
    Issued,
    Issuer,
    IssueResult,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Reason,
    Rejected,
    Retryable,
    ReversalReason,
    ReversalRequest,
    resolve_after_submit,
)
from syncd.ledger import repository as repo
from syncd.ledger.errors import StaleStateError
from syncd.ledger.models import DocumentRow
from syncd.lifecycle import (
    TERMINAL_STATES,
    DocumentKind,
    DocumentState,
    IssuerOutcome,
    RetryPolicy,
    next_step,
)
from syncd.observability.logs import bind
from syncd.observability.metrics import DocumentOutcome, Metrics

log = logging.getLogger(__name__)

S = DocumentState

#: Delay before retrying a step that failed on the ERP database (not counted as an attempt).
DB_RETRY_SECONDS = 2.0
#: Delay after an unexpected error in a step (logged with the document; never dropped).
UNEXPECTED_RETRY_SECONDS = 30.0

#: Most outcomes written in one committer transaction.
COMMIT_BATCH = 256

SettledCallback = Callable[[DocumentRow], None]


def outcome_class(result: IssueResult) -> IssuerOutcome:
    """The state machine's view of a result: its class, and the provider's Retry-After."""
    retry_after = result.retry_after if isinstance(result, Retryable) else None
    return IssuerOutcome(result.outcome, retry_after)


def _reason_text(result: IssueResult) -> tuple[str | None, str | None]:
    """(error code, readable error) of a result, for the ledger and the ERP row."""
    match result:
        case Rejected(reasons=reasons):
            text = "; ".join(str(r) for r in reasons) or "rejected by the provider"
            return (reasons[0].code if reasons else "REJECTED"), text
        case (
            Retryable(reason=r)
            | OutcomeUnknown(reason=r)
            | NeedsHuman(reason=r)
            | Duplicate(reason=r)
        ):
            return r.code, str(r)
        case NotFound():
            return "NOT_FOUND", "the provider has no document under this serial"
    return None, None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(order=True, frozen=True, slots=True)
class _Entry:
    due: float
    seq: int
    doc_id: int


@dataclass(slots=True)
class _Write:
    """A step's decided outcome, waiting for the committer: the conditional transition of
    `row`, and the ERP write-back that goes in the same transaction."""

    row: DocumentRow
    doc: DocumentConfig
    new_state: DocumentState
    reason: str
    fields: dict[str, Any]
    next_attempt_at: datetime | None
    polls: int
    writeback: WriteBack | None = None
    outcome: DocumentOutcome | None = None
    error: str | None = None
    #: a reversal the provider issued: it and its issue row both become REVERSED
    reversal_issued: bool = False


class Driver:
    """Schedules and runs document steps on a bounded worker pool."""

    def __init__(
        self,
        *,
        engine: Engine,
        issuer: Issuer,
        config: SyncdConfig,
        metrics: Metrics,
        owner: str,
        workers: int,
        policy: RetryPolicy,
        on_settled: SettledCallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self._issuer = issuer
        self._config = config
        self._metrics = metrics
        self._owner = owner
        self._policy = policy
        self._on_settled = on_settled
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        # Steps wait for a worker in a C queue. (A ThreadPoolExecutor built a Future per step
        # and signalled its Condition and an idle Semaphore, Python-level locking that took
        # ~7 % of the daemon's GIL time at 200 documents/s.)
        self._work: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closed = False  # set at the drain deadline: queued steps are no longer run
        self._workers = [
            threading.Thread(target=self._work_loop, name=f"syncd-doc_{n}", daemon=True)
            for n in range(workers)
        ]
        self._lock = threading.Condition()
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        #: doc id -> True while scheduled or running (a document is never stepped twice at once)
        self._active: dict[int, bool] = {}
        self._running: set[int] = set()
        #: doc id -> its live heap entry while waiting (older entries are skipped when popped)
        self._waiting: dict[int, _Entry] = {}
        self._polls: dict[int, int] = {}
        #: documents this driver sent while their ledger row still says READY /
        #: REVERSAL_PENDING (see `_apply`): their next step queries instead of sending
        self._sent: set[int] = set()
        #: the row as this driver's last step left it (what it read, or what its conditional
        #: UPDATE returned), so the next step of a document skips re-reading it. Popped at
        #: the start of every step: any step that fails (stale state, database error) makes
        #: the next one read the row afresh. A row changed meanwhile by someone else is
        #: caught by the conditional transition (StaleStateError) like any race.
        self._rows: dict[int, DocumentRow] = {}
        self._stopping = False
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._schedule_loop, name="syncd-scheduler", daemon=True
        )
        self._thread.start()
        self._committer = threading.Thread(
            target=self._commit_loop, name="syncd-committer", daemon=True
        )
        self._committer.start()
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------ scheduling

    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    def is_active(self, doc_id: int) -> bool:
        with self._lock:
            return doc_id in self._active

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
        with self._lock:
            if self._stopping:
                return
            if doc_id in self._active:
                waiting = self._waiting.get(doc_id)
                due = time.monotonic() + delay
                if expedite and waiting is not None and waiting.due > due:
                    # Someone changed the row behind our back (an operator retry): read it
                    # afresh instead of trusting the copy of our last step.
                    self._rows.pop(doc_id, None)
                    self._push(doc_id, delay)
                return
            self._active[doc_id] = True
            if row is not None and row.id == doc_id:
                self._rows[doc_id] = row
            self._push(doc_id, delay)
            self._metrics.inflight_documents.set(len(self._active))

    def _push(self, doc_id: int, delay: float) -> None:
        if delay <= 0:
            # due now: straight to a worker, without waking the scheduler thread first (an
            # entry it still holds for this document is skipped when popped)
            self._waiting.pop(doc_id, None)
            self._running.add(doc_id)
            self._work.put(doc_id)
            return
        entry = _Entry(time.monotonic() + delay, next(self._seq), doc_id)
        self._waiting[doc_id] = entry
        heapq.heappush(self._heap, entry)
        self._lock.notify()

    def _reschedule(self, doc_id: int, delay: float) -> None:
        with self._lock:
            self._running.discard(doc_id)
            if self._stopping:
                self._active.pop(doc_id, None)
                return
            self._push(doc_id, delay)

    def _finish(self, doc_id: int) -> None:
        with self._lock:
            self._running.discard(doc_id)
            self._active.pop(doc_id, None)
            self._polls.pop(doc_id, None)
            self._sent.discard(doc_id)
            self._rows.pop(doc_id, None)
            self._metrics.inflight_documents.set(len(self._active))
            self._lock.notify_all()

    def forget(self, doc_ids: set[int]) -> None:
        """Drop scheduled (not running) steps, e.g. of a partition this replica lost."""
        with self._lock:
            keep = [e for e in self._heap if e.doc_id not in doc_ids or e.doc_id in self._running]
            heapq.heapify(keep)
            self._heap = keep
            for doc_id in doc_ids - self._running:
                self._active.pop(doc_id, None)
                self._waiting.pop(doc_id, None)
                self._rows.pop(doc_id, None)
                self._sent.discard(doc_id)
            self._metrics.inflight_documents.set(len(self._active))

    def _schedule_loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (
                    not self._heap or self._heap[0].due > time.monotonic()
                ):
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self._lock.wait(timeout)
                if self._stopping:
                    return
                entry = heapq.heappop(self._heap)
                if self._waiting.get(entry.doc_id) is not entry:
                    continue  # superseded by an expedited entry (or forgotten)
                del self._waiting[entry.doc_id]
                self._running.add(entry.doc_id)
            self._work.put(entry.doc_id)

    def _work_loop(self) -> None:
        while True:
            doc_id = self._work.get()
            if doc_id is None:
                self._work.put(None)  # wake the next worker: all of them stop
                return
            if not self._closed:
                self._step(doc_id)

    def stop(self, deadline: float) -> int:
        """Stop scheduling; wait until running steps end or `deadline` (monotonic) passes.

        Documents not finished stay in the ledger (READY/SUBMITTED/...), and whoever owns
        their partition next resumes them by querying the provider. Returns how many
        steps were still running at the deadline.
        """
        with self._lock:
            self._stopping = True
            self._heap.clear()
            self._waiting.clear()
            self._rows.clear()
            self._lock.notify_all()
            while self._running and time.monotonic() < deadline:
                self._lock.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            still = len(self._running)
        self._closed = True  # steps still queued are not started
        self._work.put(None)
        # Outcomes not committed by now are simply not recorded: their documents stay in
        # the state before the step and the next owner queries the provider first.
        self._writes.put(None)
        return still

    def drained(self) -> bool:
        with self._lock:
            return not self._running

    # ------------------------------------------------------------------ one step

    def _step(self, doc_id: int) -> None:
        try:
            decided = self._advance(doc_id)
            if isinstance(decided, _Write):
                self._writes.put(decided)  # the committer schedules what comes next
                return
            delay = decided
        except Exception as exc:
            delay = _retry_delay(doc_id, exc, "in step")
        if delay is None:
            self._finish(doc_id)
        else:
            self._reschedule(doc_id, delay)

    def _advance(self, doc_id: int) -> float | _Write | None:
        """One step; returns the delay before the next step, None when settled, or the
        outcome to commit."""
        with self._lock:
            row: DocumentRow | None = self._rows.pop(doc_id, None)
        if row is None:
            with self._engine.connect() as conn:
                row = repo.get_document(conn, doc_id)
        if row.state in TERMINAL_STATES or row.state is S.PENDING:
            self._settled(row)
            return None
        if row.next_attempt_at is not None:
            wait = (row.next_attempt_at - datetime.now(UTC)).total_seconds()
            if wait > 0.05:
                self._remember(row)
                return wait
        doc = self._config.documents.get(row.identity.document_type)
        with bind(
            document=row.identity.document_type,
            key=row.identity.source_key,
            serial=row.serial,
            topic=row.source_topic,
            partition=row.source_partition,
            offset=row.source_offset,
        ):
            if doc is None:
                log.error(
                    "ledger document of unknown type %r: configure it or settle it by hand",
                    row.identity.document_type,
                )
                return UNEXPECTED_RETRY_SECONDS * 10
            result, resent = self._call(row)
            return self._apply(row, doc, result, resent=resent)

    # ------------------------------------------------------------------ provider calls

    def _timed(self, operation: str, call: Callable[[], IssueResult]) -> IssueResult:
        start = time.perf_counter()
        result = call()
        status = _status_of(result)
        self._metrics.issuer_request(operation, status, time.perf_counter() - start)
        return result

    def _call(self, row: DocumentRow) -> tuple[IssueResult, bool]:
        """The provider's answer, and whether this step re-sent a document the provider
        had dropped (a re-send counts as an attempt, so a platform that keeps failing the
        same serial ends in DEAD instead of looping forever)."""
        issuer = self._issuer
        if row.kind is DocumentKind.ISSUE:
            payload = row.payload or {}

            def submit() -> IssueResult:
                return self._timed("issue", lambda: issuer.issue(payload))

            def query() -> IssueResult:
                return self._timed("query", lambda: issuer.query(row.serial))
        else:
            request = _reversal_request(row)

            def submit() -> IssueResult:
                return self._timed("reverse", lambda: issuer.reverse(request))

            def query() -> IssueResult:
                return self._timed("query_reversal", lambda: issuer.query_reversal(row.serial))

        fresh = (
            row.state in (S.READY, S.REVERSAL_PENDING)
            and row.attempts == 0
            and row.id not in self._sent
        )
        resent = False
        if fresh:
            submitted = submit()
        else:
            # It may have reached the provider before: ask first, re-send only on "not found".
            queried = query()
            if isinstance(queried, NotFound) or (
                isinstance(queried, Retryable) and queried.resubmit
            ):
                if row.attempts + 1 >= self._policy.max_attempts:
                    return queried, False  # out of attempts: next_step makes it DEAD
                submitted = submit()
                resent = True
            else:
                return queried, False
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            self._metrics.retries.labels(operation="query").inc()
            return resolve_after_submit(submitted, query()), resent
        return submitted, resent

    # ------------------------------------------------------------------ outcomes

    def _apply(
        self, row: DocumentRow, doc: DocumentConfig, result: IssueResult, *, resent: bool = False
    ) -> float | _Write | None:
        now = datetime.now(UTC)
        attempts = row.attempts + (1 if resent else 0)
        if (
            isinstance(result, Retryable)
            and result.resubmit
            and row.state in (S.OUTCOME_UNKNOWN, S.RETRY_WAIT, S.BLOCKED)
        ):
            # The provider confirmed it never got this serial: back to READY, send next step.
            target = S.READY if row.kind is DocumentKind.ISSUE else S.REVERSAL_PENDING
            return _Write(
                row,
                doc,
                target,
                "provider has no such serial; re-sending under the same serial",
                {"attempts": attempts + 1},
                next_attempt_at=None,
                polls=0,
            )
        polls = self._polls.get(row.id, 0)
        step = next_step(
            document=row.identity,
            kind=row.kind,
            current=row.state,
            outcome=outcome_class(result),
            attempts=attempts,
            policy=self._policy,
            now=now,
            rng=self._rng,
            polls=polls,
        )
        code, error = _reason_text(result)
        fields: dict[str, Any] = {
            "attempts": step.attempts,
            "next_attempt_at": step.next_attempt_at,
        }
        if code is not None:
            fields["last_error_code"] = code
            fields["last_error"] = error
        writeback: WriteBack | None = None
        outcome: DocumentOutcome | None = None
        if isinstance(result, Issued):
            fields.update(
                invoice_no=result.invoice_no,
                issued_at=_parse_time(result.issued_at),
                check_code=result.check_code,
                invoice_url=_file_url(result.files),
                last_error_code=None,
                last_error=None,
            )
            if row.kind is DocumentKind.ISSUE:
                writeback = WriteBack(
                    ResultStatus.ISSUED,
                    invoice_no=result.invoice_no,
                    issued_at=fields["issued_at"] or now,
                    url=fields["invoice_url"],
                )
                outcome = DocumentOutcome.ISSUED
            else:
                writeback = WriteBack(ResultStatus.REVERSED, red_invoice_no=result.invoice_no)
                outcome = DocumentOutcome.REVERSED
        elif step.state is S.REJECTED:
            writeback = WriteBack(ResultStatus.REJECTED, error=error)
            outcome = DocumentOutcome.REJECTED
        elif step.state is S.DEAD:
            writeback = WriteBack(
                ResultStatus.DEAD, error=f"gave up after {step.attempts} attempts: {error}"
            )
            outcome = DocumentOutcome.DEAD
        elif step.state is S.BLOCKED and row.state is not S.BLOCKED:
            writeback = WriteBack(ResultStatus.BLOCKED, error=error)
        if step.state in (S.RETRY_WAIT, S.OUTCOME_UNKNOWN) and step.attempts > row.attempts:
            self._metrics.retries.labels(
                operation="issue" if row.kind is DocumentKind.ISSUE else "reverse"
            ).inc()
        if (
            step.state is row.state
            and writeback is None
            and step.attempts == row.attempts
            and (step.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED))
        ):
            # Still processing: nothing new to record, just poll again later.
            self._polls[row.id] = polls + 1
            self._remember(row)
            return _delay_until(step.next_attempt_at, now)
        if (
            step.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED)
            and row.state in (S.READY, S.REVERSAL_PENDING)
            and row.id not in self._sent
            and step.attempts == row.attempts
        ):
            # Accepted and processing. Most platforms finish within the first poll
            # interval, so SUBMITTED is only written if the first poll still finds it
            # processing: one ledger transaction per document instead of two. Nothing is
            # lost if this process dies now: the row is READY with its frozen serial and
            # payload, and sending it again is answered by the provider's duplicate check
            # (same invoice, or DUPLICATE -> query), exactly as for a crash mid-call.
            self._sent.add(row.id)
            self._polls[row.id] = polls + 1
            self._remember(row)
            return _delay_until(step.next_attempt_at, now)
        return _Write(
            row,
            doc,
            step.state,
            _transition_reason(result),
            _only(fields),
            next_attempt_at=step.next_attempt_at,
            polls=polls,
            writeback=writeback,
            outcome=outcome,
            error=error,
            reversal_issued=isinstance(result, Issued) and row.kind is DocumentKind.REVERSAL,
        )

    # ------------------------------------------------------------------ the committer

    def _commit_loop(self) -> None:
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < COMMIT_BATCH:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._writes.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                self._commit(batch)
            except Exception:  # the committer must outlive any one batch
                log.exception(
                    "committer: unexpected error after writing a batch of %d; "
                    "looking at its documents again in %.0f s",
                    len(batch),
                    UNEXPECTED_RETRY_SECONDS,
                )
                for w in batch:
                    with self._lock:
                        running = w.row.id in self._running
                        self._rows.pop(w.row.id, None)
                    if running:
                        self._reschedule(w.row.id, UNEXPECTED_RETRY_SECONDS)

    def _commit(self, batch: list[_Write]) -> None:
        """Write a batch in one transaction; when that fails, each outcome on its own, so
        one document that moved behind our back (or cannot be written) costs only itself."""
        try:
            updated = self._write(batch)
        except Exception as exc:  # decided per outcome below
            if len(batch) == 1 or _connection_lost(exc):
                for w in batch:
                    self._failed(w, exc)
                return
            for w in batch:
                try:
                    single = self._write([w])
                except Exception as one:  # handled like a failed step
                    self._failed(w, one)
                else:
                    self._committed(w, single[0])
            return
        for w, row in zip(batch, updated, strict=True):
            self._committed(w, row)

    def _write(self, batch: list[_Write]) -> list[DocumentRow]:
        """Transitions (grouped into a few statements), reversal pairs and write-backs of
        `batch` in one transaction; the updated rows in batch order."""
        rows: dict[int, DocumentRow] = {}
        with self._metrics.time_writeback(), self._engine.begin() as conn:
            plain = [w for w in batch if not w.reversal_issued]
            changed = repo.transition_many(
                conn,
                [
                    repo.Transition(w.row.id, w.row.state, w.new_state, w.reason, w.fields)
                    for w in plain
                ],
                actor=self._owner,
                payloads={w.row.id: w.row.payload for w in plain},
            )
            rows.update((r.id, r) for r in changed)
            for w in batch:
                if w.reversal_issued:
                    rows[w.row.id], _issue = repo.mark_reversed(
                        conn, w.row.id, w.row.state, actor=self._owner, **w.fields
                    )
            skipped = apply_writebacks(
                conn,
                [
                    (w.doc, key_from_ledger(w.row.identity.source_key), w.writeback)
                    for w in batch
                    if w.writeback is not None
                ],
            )
        for problem in skipped:
            # The ledger keeps the result; the ERP row is gone. Say so loudly.
            log.error("write-back skipped: %s", problem)
        return [rows[w.row.id] for w in batch]

    def _committed(self, w: _Write, updated: DocumentRow) -> None:
        row = w.row
        self._sent.discard(row.id)  # the ledger now says where the document stands
        with bind(
            document=row.identity.document_type,
            key=row.identity.source_key,
            serial=row.serial,
            topic=row.source_topic,
            partition=row.source_partition,
            offset=row.source_offset,
        ):
            if w.outcome is not None:
                self._metrics.document_settled(w.doc.name, w.outcome)
                self._metrics.observe_freshness(row.source_ts_ms, time.time())
                log.info(
                    "document %s",
                    w.outcome.value,
                    extra={"invoice_no": w.fields.get("invoice_no"), "state": updated.state.value},
                )
            if updated.state in TERMINAL_STATES or updated.state is S.REVERSED:
                self._settled(updated)
                self._finish(row.id)
                return
            if updated.state is S.BLOCKED:
                log.warning("document blocked, provider needs a human: %s", w.error)
        if updated.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED):
            self._polls[row.id] = w.polls + 1
        self._remember(updated)
        self._reschedule(row.id, _delay_until(w.next_attempt_at, datetime.now(UTC)))

    def _failed(self, w: _Write, exc: Exception) -> None:
        """An outcome that could not be written: the document keeps its previous state and
        is looked at again (read afresh), exactly like a step that failed."""
        doc_id = w.row.id
        delay = _retry_delay(doc_id, exc, "writing its outcome")
        with self._lock:
            self._rows.pop(doc_id, None)
        self._reschedule(doc_id, delay)

    def _remember(self, row: DocumentRow) -> None:
        with self._lock:
            if row.id in self._active:
                self._rows[row.id] = row

    def _settled(self, row: DocumentRow) -> None:
        if self._on_settled is not None:
            try:
                self._on_settled(row)
            except Exception:  # the callback must never stall the worker
                log.exception("settled callback failed for document %s", row.id)


def _retry_delay(doc_id: int, exc: Exception, where: str) -> float:
    """When to look again at a document whose step (or outcome write) failed with `exc`."""
    if isinstance(exc, StaleStateError):
        return 0.0  # someone else moved it; look again at once
    if isinstance(exc, (OperationalError, DBAPIError)):
        log.warning(
            "document %s: ERP database error, retrying in %.0f s: %s",
            doc_id,
            DB_RETRY_SECONDS,
            type(exc).__name__,
        )
        return DB_RETRY_SECONDS
    log.error(
        "document %s: unexpected error %s; retrying in %.0f s",
        doc_id,
        where,
        UNEXPECTED_RETRY_SECONDS,
        exc_info=exc,
    )
    return UNEXPECTED_RETRY_SECONDS


def _connection_lost(exc: Exception) -> bool:
    """A failure that would fail every outcome alike (no point retrying one by one): the
    database could not be reached, or the connection broke."""
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or exc.statement is None)


def _status_of(result: IssueResult) -> int | None:
    """An HTTP-like status class for metrics, from the typed result."""
    match result:
        case Issued() | Processing():
            return 200
        case Rejected():
            return 422
        case NotFound():
            return 404
        case Duplicate():
            return 409
        case Retryable(reason=r):
            if r.code in ("RATE_LIMITED", "TOO_MANY_REQUESTS"):
                return 429
            return 503
        case NeedsHuman():
            return 403
        case OutcomeUnknown():
            return None
    return None  # pragma: no cover


def _file_url(files: Any) -> str | None:
    if not files:
        return None
    for key in ("pdf", "ofd", "xml", "html"):
        if key in files:
            return str(files[key])
    return str(next(iter(files.values())))


def _delay_until(at: datetime | None, now: datetime) -> float:
    if at is None:
        return 0.0
    return max(0.0, (at - now).total_seconds())


def _only(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in repo.UPDATABLE_FIELDS}


def _transition_reason(result: IssueResult) -> str:
    return f"provider: {type(result).__name__.lower()}"


def _reversal_request(row: DocumentRow) -> ReversalRequest:
    payload = row.payload or {}
    original = payload.get("original_invoice_no")
    reason = payload.get("reversal_reason") or "INVOICING_ERROR"
    if not isinstance(original, str):
        raise ValueError(f"reversal {row.serial}: frozen payload has no original_invoice_no")
    if reason not in get_args(ReversalReason):
        raise ValueError(f"reversal {row.serial}: unknown reversal reason {reason!r}")
    return ReversalRequest(
        serial=row.serial, original_invoice_no=original, reason=cast(ReversalReason, reason)
    )


def describe(result: IssueResult) -> str:
    """One line for logs and `syncd retry` output."""
    code, text = _reason_text(result)
    if isinstance(result, Issued):
        return f"issued {result.invoice_no}"
    return json.dumps({"result": type(result).__name__, "code": code, "error": text})


__all__ = ["Driver", "Reason", "describe", "outcome_class"]
