"""What a provider's answer means for a document: pure decisions, no I/O, no threads.

Given the ledger row a step read, the provider's typed result and the retry policy (time
and randomness passed in), `decide` says what the step leads to: either nothing to record
yet (`Wait`: poll again later) or one `Change`, i.e. the conditional ledger transition,
the ERP write-back that goes in the same transaction, and the metric outcome to count
once it is committed. The driver carries the decision out; the committer writes it.

The invariant kept here: the decision is a function of its arguments only, so every
branch is unit-tested without a database, a provider or a thread, and the exactly-once
rules it encodes cannot depend on timing:
* only a provider's clean "never got this serial" (a `Retryable` with `resubmit`) sends a
  row back to READY / REVERSAL_PENDING, to be sent again under the SAME serial;
* a fresh READY row that the provider accepted is not written as SUBMITTED until a poll
  still finds it processing: if this process dies meanwhile, the row is READY with its
  frozen serial and payload, and sending it again is answered by the provider's duplicate
  check (same invoice, or DUPLICATE -> query), exactly as for a crash mid-call;
* the next state always comes from `syncd.lifecycle.next_step`, the one table of legal
  moves.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy.exc import DBAPIError, OperationalError

from syncd.erp.writeback import ResultStatus, WriteBack
from syncd.identity import DocumentKind, source_key_of
from syncd.issuers.base import (
    Duplicate,
    Issued,
    IssueResult,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Rejected,
    Retryable,
)
from syncd.ledger import repository as repo
from syncd.ledger.errors import StaleStateError
from syncd.ledger.models import Approval, DocumentRow
from syncd.lifecycle import (
    DocumentState,
    IssuerOutcome,
    RetryPolicy,
    check_transition,
    next_step,
    resend_state,
)
from syncd.observability.metrics import DocumentOutcome

S = DocumentState

#: Delay before retrying a step that failed on the ERP database (not counted as an attempt).
DB_RETRY_SECONDS: Final = 2.0
#: Delay after an unexpected error in a step (logged with the document; never dropped).
UNEXPECTED_RETRY_SECONDS: Final = 30.0

#: The `operation` label of `syncd_retries_total` for a provider call that will be retried.
RetryOperation = Literal["issue", "reverse"]


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing new to record: look at the document again in `delay` seconds."""

    delay: float
    #: The step sent a fresh READY / REVERSAL_PENDING row and the provider is processing
    #: it; the row stays as it is in the ledger, so the caller must remember that it was
    #: sent (its next step queries instead of sending) and pass `sent=True` to `decide`.
    sent: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """A step's outcome to commit: the conditional transition of the row the step read,
    and the ERP write-back that goes in the same transaction."""

    new_state: DocumentState
    reason: str
    #: ledger columns to set with the transition (`repository.UPDATABLE_FIELDS`)
    fields: dict[str, Any]
    next_attempt_at: datetime | None
    writeback: WriteBack | None = None
    #: counted in `syncd_documents_total` once committed (None: not settled yet)
    outcome: DocumentOutcome | None = None
    #: readable error of the provider's answer, if any
    error: str | None = None
    #: a reversal the provider issued: it and its issue row both become REVERSED
    reversal_issued: bool = False
    #: count a retry of this operation in `syncd_retries_total` (None: no retry)
    retry: RetryOperation | None = None
    #: kept in the transition's audit row (e.g. who approved, and why)
    details: dict[str, Any] | None = None


#: `last_error_code` of a document the approver role rejected.
REJECTED_BY_APPROVER: Final = "REJECTED_BY_APPROVER"


def approval_change(row: DocumentRow, approval: Approval) -> Change:
    """What a decision of the approver role does to a row in AWAITING_APPROVAL: approved,
    it becomes READY (same serial and payload: exactly what was approved is sent);
    rejected, it is REJECTED with the reason written back, never sent. The audit row
    names the database login, the OS user and the reason."""
    check_transition(
        row.identity, row.kind, row.state, S.READY if approval.approved else S.REJECTED
    )
    details = {"approval": approval.details()}
    if approval.approved:
        return Change(
            S.READY,
            f"approved by {approval.who}: {approval.reason}",
            {"next_attempt_at": None},
            next_attempt_at=None,
            details=details,
        )
    error = f"rejected by approver {approval.who}: {approval.reason}"
    return Change(
        S.REJECTED,
        error,
        {"last_error_code": REJECTED_BY_APPROVER, "last_error": error, "next_attempt_at": None},
        next_attempt_at=None,
        writeback=WriteBack(ResultStatus.REJECTED, error=error),
        outcome=DocumentOutcome.REJECTED,
        error=error,
        details=details,
    )


def is_partial_reversal(row: DocumentRow) -> bool:
    """A reversal row of a return or a credit note (a red invoice of its own): recorded
    under the return table, or under the credit note's key, while its frozen red payload
    keeps the blue invoice's source. Its issue row stays ISSUED when it is issued; a full
    reversal (same table, same key) reverses it."""
    if row.kind is not DocumentKind.REVERSAL or row.payload is None:
        return False
    source = row.payload.get("source")
    if not isinstance(source, Mapping):
        return False
    if source.get("table") != row.identity.source_table:
        return True
    key = source.get("key")
    return isinstance(key, Mapping) and source_key_of(tuple(key.items())) != (
        row.identity.source_key
    )


def outcome_class(result: IssueResult) -> IssuerOutcome:
    """The state machine's view of a result: its class, and the provider's Retry-After."""
    if isinstance(result, Retryable):
        return IssuerOutcome(result.outcome, result.retry_after, result.throttled)
    return IssuerOutcome(result.outcome)


def decide(
    row: DocumentRow,
    result: IssueResult,
    *,
    resent: bool,
    sent: bool,
    polls: int,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> Wait | Change:
    """What the provider's `result` for a step on `row` leads to.

    `resent`: this step re-sent a document the provider had dropped (counts as an
    attempt). `sent`: the caller already sent this READY / REVERSAL_PENDING row in an
    earlier step (see `Wait.sent`). `polls`: "processing" answers so far, which only
    stretch the polling interval.
    """
    attempts = row.attempts + (1 if resent else 0)
    if (
        isinstance(result, Retryable)
        and result.resubmit
        and row.state in (S.OUTCOME_UNKNOWN, S.RETRY_WAIT, S.BLOCKED)
    ):
        # The provider confirmed it never got this serial: back to READY, send next step.
        return Change(
            resend_state(row.kind),
            "provider has no such serial; re-sending under the same serial",
            {"attempts": attempts + 1},
            next_attempt_at=None,
        )
    step = next_step(
        document=row.identity,
        kind=row.kind,
        current=row.state,
        outcome=outcome_class(result),
        attempts=attempts,
        policy=policy,
        now=now,
        rng=rng,
        polls=polls,
    )
    code, error = reason_text(result)
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
                files=dict(result.files),
                clear_red_invoice_no=row.identity.revision > 0,
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
    elif step.state is S.BLOCKED and (
        row.state is not S.BLOCKED or row.last_error_code not in (None, code)
    ):
        # blocked, or still blocked for another reason (e.g. parked after the query
        # horizon): the ERP row shows the reason a person must act on now
        writeback = WriteBack(ResultStatus.BLOCKED, error=error)
    retry: RetryOperation | None = None
    throttled = isinstance(result, Retryable) and result.throttled
    if step.state in (S.RETRY_WAIT, S.OUTCOME_UNKNOWN) and (
        step.attempts > row.attempts or throttled
    ):
        retry = "issue" if row.kind is DocumentKind.ISSUE else "reverse"
    if (
        step.state is row.state
        and writeback is None
        and step.attempts == row.attempts
        and (step.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED))
    ):
        # Still processing: nothing new to record, just poll again later.
        return Wait(delay_until(step.next_attempt_at, now))
    if (
        step.state in (S.SUBMITTED, S.REVERSAL_SUBMITTED)
        and row.state in (S.READY, S.REVERSAL_PENDING)
        and not sent
        and step.attempts == row.attempts
    ):
        # Accepted and processing. Most platforms finish within the first poll interval,
        # so SUBMITTED is only written if the first poll still finds it processing: one
        # ledger transaction per document instead of two (see the module docstring for
        # why nothing is lost if the process dies now).
        return Wait(delay_until(step.next_attempt_at, now), sent=True)
    return Change(
        step.state,
        transition_reason(result),
        {k: v for k, v in fields.items() if k in repo.UPDATABLE_FIELDS},
        next_attempt_at=step.next_attempt_at,
        writeback=writeback,
        outcome=outcome,
        error=error,
        reversal_issued=isinstance(result, Issued)
        and row.kind is DocumentKind.REVERSAL
        and not is_partial_reversal(row),
        retry=retry,
    )


# ---------------------------------------------------------------------- failed steps


class StepFailure(enum.Enum):
    """Why a step (or the write of its outcome) raised, which decides when to retry."""

    #: someone else moved the row (conditional transition failed): look again at once
    STALE = "stale"
    #: the ERP database failed: retry soon; not a provider attempt
    DATABASE = "database"
    #: anything else (a bug, a broken row): retry much later, logged with the document
    UNEXPECTED = "unexpected"


def classify_failure(exc: BaseException) -> StepFailure:
    if isinstance(exc, StaleStateError):
        return StepFailure.STALE
    if isinstance(exc, (OperationalError, DBAPIError)):
        return StepFailure.DATABASE
    return StepFailure.UNEXPECTED


def failure_delay(failure: StepFailure) -> float:
    """Seconds before a document whose step failed this way is looked at again."""
    match failure:
        case StepFailure.STALE:
            return 0.0
        case StepFailure.DATABASE:
            return DB_RETRY_SECONDS
        case StepFailure.UNEXPECTED:
            return UNEXPECTED_RETRY_SECONDS


# ---------------------------------------------------------------------- describing results


def reason_text(result: IssueResult) -> tuple[str | None, str | None]:
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


def status_of(result: IssueResult) -> int | None:
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


def transition_reason(result: IssueResult) -> str:
    """The audit trail's reason for a transition decided by `result`."""
    return f"provider: {type(result).__name__.lower()}"


def describe(result: IssueResult) -> str:
    """One line for logs and `syncd retry` output."""
    code, text = reason_text(result)
    if isinstance(result, Issued):
        return f"issued {result.invoice_no}"
    return json.dumps({"result": type(result).__name__, "code": code, "error": text})


def delay_until(at: datetime | None, now: datetime) -> float:
    """Seconds from `now` until `at` (0 when it is None or past)."""
    if at is None:
        return 0.0
    return max(0.0, (at - now).total_seconds())


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _file_url(files: Any) -> str | None:
    if not files:
        return None
    for key in ("pdf", "ofd", "xml", "html"):
        if key in files:
            return str(files[key])
    return str(next(iter(files.values())))


__all__ = [
    "DB_RETRY_SECONDS",
    "UNEXPECTED_RETRY_SECONDS",
    "Change",
    "StepFailure",
    "Wait",
    "classify_failure",
    "decide",
    "delay_until",
    "describe",
    "failure_delay",
    "outcome_class",
    "reason_text",
    "status_of",
    "transition_reason",
]
