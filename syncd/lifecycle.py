"""Document life cycle: states, the allowed transitions, and what an issuer outcome leads to.

The ledger stores one row per document identity; its state only ever moves along the
edges below, and every move is a conditional update in the database. The table is
the single place that says which moves are legal, so the repository, the pipeline,
the `retry` command and the tests all agree.

Two kinds of rows exist:

* `issue` rows: PENDING -> READY (payload and serial frozen) -> SUBMITTED -> ISSUED,
  with the failure states in between; ISSUED -> REVERSED once the reversal of that
  invoice has been issued and written back. A document matching its type's `approval`
  condition is frozen in AWAITING_APPROVAL instead of READY and reaches the provider only
  after a person of the approver role approved it (-> READY) -- or never (-> REJECTED).
* `reversal` rows: created only for an ISSUED issue row, directly in REVERSAL_PENDING
  (red-invoice payload and its own serial frozen) -> REVERSAL_SUBMITTED -> REVERSED.

The invariant that matters most for exactly-once: once a row has left PENDING/INVALID
its payload and serial are frozen, and nothing leads back to a state where a new
serial could be minted. A rejected document is corrected under a new revision (a new
row), never by re-opening the rejected one.

Everything here is pure: time and randomness are passed in.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from syncd.errors import LedgerError
from syncd.identity import DocumentKind


class DocumentState(enum.StrEnum):
    PENDING = "PENDING"
    INVALID = "INVALID"
    #: payload and serial frozen, nothing sent: waits for `syncd approve` / `syncd reject`
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    READY = "READY"
    SUBMITTED = "SUBMITTED"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
    RETRY_WAIT = "RETRY_WAIT"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    BLOCKED = "BLOCKED"
    DEAD = "DEAD"
    REVERSAL_PENDING = "REVERSAL_PENDING"
    REVERSAL_SUBMITTED = "REVERSAL_SUBMITTED"
    REVERSED = "REVERSED"


_S = DocumentState

#: States a new row of each kind may be created in.
INITIAL_STATES: Final[Mapping[DocumentKind, frozenset[DocumentState]]] = {
    # PENDING when validation happens later; INVALID/READY when the pipeline validates and
    # freezes in the same transaction as the insert (the common, cheaper path).
    DocumentKind.ISSUE: frozenset({_S.PENDING, _S.INVALID, _S.READY, _S.AWAITING_APPROVAL}),
    DocumentKind.REVERSAL: frozenset({_S.REVERSAL_PENDING}),
}

# Outcomes of a call to (or query of) the provider, shared by both kinds.
_AFTER_ISSUE_CALL: Final = frozenset(
    {_S.SUBMITTED, _S.ISSUED, _S.REJECTED, _S.OUTCOME_UNKNOWN, _S.RETRY_WAIT, _S.BLOCKED, _S.DEAD}
)
_AFTER_REVERSAL_CALL: Final = frozenset(
    {
        _S.REVERSAL_SUBMITTED,
        _S.REVERSED,
        _S.REJECTED,
        _S.OUTCOME_UNKNOWN,
        _S.RETRY_WAIT,
        _S.BLOCKED,
        _S.DEAD,
    }
)

#: kind -> state -> states it may move to. Self-loops mean "same state, new schedule or
#: error" (still processing, another failed query, ...), so they are explicit.
TRANSITIONS: Final[Mapping[DocumentKind, Mapping[DocumentState, frozenset[DocumentState]]]] = {
    DocumentKind.ISSUE: {
        _S.PENDING: frozenset({_S.INVALID, _S.READY, _S.AWAITING_APPROVAL}),
        # Never sent, so a corrected source row may re-enter with a new payload.
        _S.INVALID: frozenset({_S.INVALID, _S.PENDING, _S.READY, _S.AWAITING_APPROVAL}),
        # Only on a decision of the approver role (`syncd approve` / `syncd reject`); the
        # payload stays frozen, so what was approved is exactly what is sent.
        _S.AWAITING_APPROVAL: frozenset({_S.READY, _S.REJECTED}),
        _S.READY: _AFTER_ISSUE_CALL,
        _S.SUBMITTED: _AFTER_ISSUE_CALL,
        # READY again means "the provider confirmed it never saw this serial: send it again".
        _S.OUTCOME_UNKNOWN: _AFTER_ISSUE_CALL | {_S.READY},
        _S.RETRY_WAIT: _AFTER_ISSUE_CALL | {_S.READY},
        # A human fixed the provider account; resume (querying the serial first).
        _S.BLOCKED: _AFTER_ISSUE_CALL | {_S.READY},
        # Only by an operator (`syncd retry`); resumption queries by serial first.
        _S.DEAD: frozenset({_S.READY, _S.OUTCOME_UNKNOWN}),
        _S.ISSUED: frozenset({_S.REVERSED}),
        _S.REJECTED: frozenset(),
        _S.REVERSED: frozenset(),
    },
    DocumentKind.REVERSAL: {
        _S.REVERSAL_PENDING: _AFTER_REVERSAL_CALL,
        _S.REVERSAL_SUBMITTED: _AFTER_REVERSAL_CALL,
        _S.OUTCOME_UNKNOWN: _AFTER_REVERSAL_CALL | {_S.REVERSAL_PENDING},
        _S.RETRY_WAIT: _AFTER_REVERSAL_CALL | {_S.REVERSAL_PENDING},
        _S.BLOCKED: _AFTER_REVERSAL_CALL | {_S.REVERSAL_PENDING},
        _S.DEAD: frozenset({_S.REVERSAL_PENDING, _S.OUTCOME_UNKNOWN}),
        _S.REJECTED: frozenset(),
        _S.REVERSED: frozenset(),
    },
}

#: The daemon has nothing more to do for rows in these states: only a new source event
#: (INVALID -> READY, ISSUED -> REVERSED via a reversal row) or an operator (DEAD) moves them.
TERMINAL_STATES: Final = frozenset({_S.INVALID, _S.ISSUED, _S.REJECTED, _S.REVERSED, _S.DEAD})

#: After a crash or a partition move these rows may have reached the provider; they are
#: resumed by querying the provider by serial before anything is re-sent.
RESUME_STATES: Final = frozenset(
    {
        _S.READY,
        _S.SUBMITTED,
        _S.OUTCOME_UNKNOWN,
        _S.RETRY_WAIT,
        _S.REVERSAL_PENDING,
        _S.REVERSAL_SUBMITTED,
    }
)

#: States in which the serial may already be known to the provider.
MAY_HAVE_BEEN_SENT: Final = frozenset(DocumentState) - {
    _S.PENDING,
    _S.INVALID,
    _S.AWAITING_APPROVAL,
}

#: States whose row must carry its frozen payload (what is or will be sent).
PAYLOAD_FROZEN: Final = MAY_HAVE_BEEN_SENT | {_S.AWAITING_APPROVAL}

#: Waiting for a person, not for syncd: not "stuck", whatever its age.
WAITING_FOR_PEOPLE: Final = frozenset({_S.AWAITING_APPROVAL})

#: Rows whose stored payload no call can need again: nothing more is sent for them (a
#: REVERSED issue row's red invoice is issued; a REJECTED or INVALID row is corrected
#: under a new revision or payload). ISSUED rows are not here: a later cancellation
#: builds the red invoice from the blue invoice's frozen payload. DEAD rows may be retried.
PAYLOAD_PRUNABLE: Final = frozenset({_S.REVERSED, _S.REJECTED, _S.INVALID})

#: Issue rows that are (or may be) at the provider: a repeated "issue" changes nothing.
ISSUE_EXISTS: Final = frozenset(
    {
        _S.PENDING,
        _S.AWAITING_APPROVAL,
        _S.READY,
        _S.SUBMITTED,
        _S.OUTCOME_UNKNOWN,
        _S.RETRY_WAIT,
        _S.BLOCKED,
        _S.DEAD,
        _S.ISSUED,
        _S.REVERSED,
    }
)
#: Issue rows whose invoice may still come: a reversal of one must wait until it settles.
INVOICE_MAY_STILL_COME: Final = frozenset(
    {
        _S.PENDING,
        _S.AWAITING_APPROVAL,
        _S.READY,
        _S.SUBMITTED,
        _S.OUTCOME_UNKNOWN,
        _S.RETRY_WAIT,
        _S.BLOCKED,
    }
)

#: Reversal rows whose red invoice may still come: a re-issue of their document waits.
REVERSAL_MAY_STILL_COME: Final = frozenset(
    {_S.REVERSAL_PENDING, _S.REVERSAL_SUBMITTED, _S.OUTCOME_UNKNOWN, _S.RETRY_WAIT, _S.BLOCKED}
)


def is_terminal(state: DocumentState) -> bool:
    return state in TERMINAL_STATES


def needs_resume(state: DocumentState) -> bool:
    return state in RESUME_STATES


def allowed_targets(kind: DocumentKind, state: DocumentState) -> frozenset[DocumentState]:
    return TRANSITIONS[kind].get(state, frozenset())


def is_allowed(kind: DocumentKind, current: DocumentState, new: DocumentState) -> bool:
    return new in allowed_targets(kind, current)


def kinds_allowing(current: DocumentState, new: DocumentState) -> frozenset[DocumentKind]:
    """Kinds for which `current -> new` is legal (the repository puts this in its WHERE)."""
    return frozenset(k for k in DocumentKind if is_allowed(k, current, new))


class InvalidTransitionError(LedgerError, ValueError):
    """A move the state machine forbids; a programming error, never retried."""

    def __init__(
        self,
        document: object,
        current: DocumentState,
        new: DocumentState,
        kind: DocumentKind | None = None,
    ) -> None:
        self.document = document
        self.current = current
        self.new = new
        self.kind = kind
        of_kind = f" ({kind.value})" if kind is not None else ""
        super().__init__(
            f"document {document}{of_kind}: transition {current.value} -> {new.value}"
            " is not allowed"
        )


def check_transition(
    document: object, kind: DocumentKind, current: DocumentState, new: DocumentState
) -> None:
    if not is_allowed(kind, current, new):
        raise InvalidTransitionError(document, current, new, kind)


# --------------------------------------------------------------------------------------
# Issuer outcomes -> next state
# --------------------------------------------------------------------------------------


class ProviderOutcome(enum.StrEnum):
    """What one provider call (submit, query, reverse) came to: the class of its typed
    result (`syncd.issuers.base`, each result class names its own as `outcome`).

    The only provider-outcome enum: the issuer clients classify their answers with it
    and the state machine below switches on it, so the two cannot drift apart.
    """

    ISSUED = "issued"
    PROCESSING = "processing"
    REJECTED = "rejected"
    RETRYABLE = "retryable"
    OUTCOME_UNKNOWN = "outcome_unknown"
    NEEDS_HUMAN = "needs_human"
    DUPLICATE = "duplicate"
    #: a query: the provider holds nothing under the serial. The caller normally re-sends
    #: (same serial); when it reaches the state machine instead (no attempts left) it is a
    #: failed attempt like an unknown outcome, never a reason to mint a new serial.
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class IssuerOutcome:
    """The classified result of one provider call (submit, query, reverse)."""

    cls: ProviderOutcome
    #: Seconds the provider asked us to wait (HTTP Retry-After), if any.
    retry_after: float | None = None
    #: The provider metered us (HTTP 429): retry later, but it is not a failed attempt.
    throttled: bool = False

    @classmethod
    def retryable(cls, retry_after: float | None = None) -> IssuerOutcome:
        return cls(ProviderOutcome.RETRYABLE, retry_after)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for transient failures: exponential with full jitter, capped.

    `max_attempts` counts failed attempts (retryable or unknown outcomes); reaching it
    moves the row to DEAD, which alerts. A throttled answer (HTTP 429) is not a failure
    of the document: a busy platform must slow syncd down, not kill documents; a
    platform that meters forever shows as stuck documents instead. The serial stays
    frozen, so an operator retry of a DEAD row is still exactly-once.
    """

    base_delay: float = 1.0
    max_delay: float = 300.0
    max_attempts: int = 12
    #: A Retry-After longer than this is clamped, so a broken header cannot park a row
    #: for days.
    max_retry_after: float = 3600.0
    #: How soon to query again while the provider says "processing".
    poll_interval: float = 2.0
    max_poll_interval: float = 60.0
    #: How soon a BLOCKED row may probe the provider again.
    blocked_recheck: float = 300.0

    def __post_init__(self) -> None:
        if self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError("retry policy: need 0 < base_delay <= max_delay")
        if self.max_attempts < 1:
            raise ValueError("retry policy: max_attempts must be >= 1")
        if self.poll_interval <= 0 or self.max_poll_interval < self.poll_interval:
            raise ValueError("retry policy: need 0 < poll_interval <= max_poll_interval")

    def backoff_ceiling(self, attempt: int) -> float:
        """Upper bound of the jittered delay after the `attempt`-th failure (1-based)."""
        exponent = max(attempt - 1, 0)
        if exponent > 62:  # 2**62 * base is already far beyond any cap
            return self.max_delay
        return min(self.max_delay, self.base_delay * math.pow(2.0, exponent))

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full jitter (uniform in [0, ceiling]), but never sooner than Retry-After."""
        delay = rng.uniform(0.0, self.backoff_ceiling(attempt))
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def poll_delay(self, polls: int, rng: random.Random) -> float:
        """Delay before the next status query of an accepted-but-processing document."""
        ceiling = min(self.max_poll_interval, self.poll_interval * math.pow(2.0, min(polls, 30)))
        # Half jitter: polling is cheap, but many documents accepted at once should spread.
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class NextStep:
    """What to write to the ledger row after an outcome."""

    state: DocumentState
    attempts: int
    #: When the pipeline should look at the row again (None: nothing scheduled).
    next_attempt_at: datetime | None
    #: True when the outcome was the last permitted failure and the row went DEAD.
    exhausted: bool = False
    details: Mapping[str, object] = field(default_factory=dict)


# Which states an outcome may arrive in (i.e. a provider call was made from them).
_CALLING_STATES: Final[Mapping[DocumentKind, frozenset[DocumentState]]] = {
    DocumentKind.ISSUE: frozenset(
        {_S.READY, _S.SUBMITTED, _S.OUTCOME_UNKNOWN, _S.RETRY_WAIT, _S.BLOCKED}
    ),
    DocumentKind.REVERSAL: frozenset(
        {_S.REVERSAL_PENDING, _S.REVERSAL_SUBMITTED, _S.OUTCOME_UNKNOWN, _S.RETRY_WAIT, _S.BLOCKED}
    ),
}


def calling_states(kind: DocumentKind) -> frozenset[DocumentState]:
    return _CALLING_STATES[kind]


def next_step(
    *,
    document: object,
    kind: DocumentKind,
    current: DocumentState,
    outcome: IssuerOutcome,
    attempts: int,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
    polls: int = 0,
) -> NextStep:
    """Map a provider outcome to the ledger update.

    `attempts` is the number of failed attempts recorded on the row so far. Only
    failures (retryable, unknown outcome, not found) count; "processing" polls and duplicates do not
    (`polls`, kept by the caller, only stretches the polling interval).
    A duplicate answer means the provider already holds this serial: it is resolved by
    querying the serial at once, never treated as a failure and never re-sent under a
    new serial.
    """
    if current not in _CALLING_STATES[kind]:
        raise InvalidTransitionError(document, current, _target_hint(kind, outcome), kind)
    done = _S.ISSUED if kind is DocumentKind.ISSUE else _S.REVERSED
    submitted = _S.SUBMITTED if kind is DocumentKind.ISSUE else _S.REVERSAL_SUBMITTED

    step: NextStep
    match outcome.cls:
        case ProviderOutcome.ISSUED:
            step = NextStep(done, attempts, None)
        case ProviderOutcome.REJECTED:
            step = NextStep(_S.REJECTED, attempts, None)
        case ProviderOutcome.PROCESSING:
            delay = policy.poll_delay(polls, rng)
            step = NextStep(submitted, attempts, now + timedelta(seconds=delay))
        case ProviderOutcome.DUPLICATE:
            step = NextStep(_S.OUTCOME_UNKNOWN, attempts, now, details={"duplicate": True})
        case ProviderOutcome.NEEDS_HUMAN:
            step = NextStep(_S.BLOCKED, attempts, now + timedelta(seconds=policy.blocked_recheck))
        case (
            ProviderOutcome.RETRYABLE | ProviderOutcome.OUTCOME_UNKNOWN | ProviderOutcome.NOT_FOUND
        ):
            throttled = outcome.throttled and outcome.cls is ProviderOutcome.RETRYABLE
            failed = attempts if throttled else attempts + 1
            if not throttled and failed >= policy.max_attempts:
                step = NextStep(_S.DEAD, failed, None, exhausted=True)
            else:
                delay = policy.backoff(attempts + 1, rng, outcome.retry_after)
                retryable = outcome.cls is ProviderOutcome.RETRYABLE
                target = _S.RETRY_WAIT if retryable else _S.OUTCOME_UNKNOWN
                # A row that may have been accepted stays "unknown" even when the query
                # itself failed transiently: re-sending is only safe after a clean "not found".
                if current in (_S.OUTCOME_UNKNOWN, submitted):
                    target = current
                step = NextStep(target, failed, now + timedelta(seconds=delay))
    check_transition(document, kind, current, step.state)
    return step


def _target_hint(kind: DocumentKind, outcome: IssuerOutcome) -> DocumentState:
    if outcome.cls is ProviderOutcome.ISSUED:
        return _S.ISSUED if kind is DocumentKind.ISSUE else _S.REVERSED
    return {
        ProviderOutcome.PROCESSING: _S.SUBMITTED,
        ProviderOutcome.REJECTED: _S.REJECTED,
        ProviderOutcome.RETRYABLE: _S.RETRY_WAIT,
        ProviderOutcome.OUTCOME_UNKNOWN: _S.OUTCOME_UNKNOWN,
        ProviderOutcome.NEEDS_HUMAN: _S.BLOCKED,
        ProviderOutcome.DUPLICATE: _S.OUTCOME_UNKNOWN,
        ProviderOutcome.NOT_FOUND: _S.OUTCOME_UNKNOWN,
    }[outcome.cls]


def resend_state(kind: DocumentKind) -> DocumentState:
    """Where a row goes when the provider confirmed it does not know the serial."""
    return _S.READY if kind is DocumentKind.ISSUE else _S.REVERSAL_PENDING
