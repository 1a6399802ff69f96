import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.identity import DocumentKind
from syncd.lifecycle import (
    INITIAL_STATES,
    MAY_HAVE_BEEN_SENT,
    TRANSITIONS,
    DocumentState,
    InvalidTransitionError,
    IssuerOutcome,
    ProviderOutcome,
    RetryPolicy,
    calling_states,
    check_transition,
    is_allowed,
    is_terminal,
    kinds_allowing,
    needs_resume,
    next_step,
)

S = DocumentState
K = DocumentKind
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def reachable(kind: DocumentKind, start: DocumentState) -> set[DocumentState]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in TRANSITIONS[kind].get(todo.pop(), frozenset()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@st.composite
def walks(draw: st.DrawFn) -> tuple[DocumentKind, list[DocumentState]]:
    """A random legal path from an initial state."""
    kind = draw(st.sampled_from(list(DocumentKind)))
    state = draw(st.sampled_from(sorted(INITIAL_STATES[kind])))
    path = [state]
    for _ in range(draw(st.integers(0, 40))):
        targets = sorted(TRANSITIONS[kind].get(state, frozenset()))
        if not targets:
            break
        state = draw(st.sampled_from(targets))
        path.append(state)
    return kind, path


def test_every_state_of_each_kind_is_in_the_table() -> None:
    for kind, table in TRANSITIONS.items():
        for targets in table.values():
            assert targets <= set(table), f"{kind}: target without its own row"
        assert INITIAL_STATES[kind] <= set(table)


def test_issued_never_leads_back_to_ready() -> None:
    assert S.READY not in reachable(K.ISSUE, S.ISSUED)
    assert reachable(K.ISSUE, S.ISSUED) == {S.ISSUED, S.REVERSED}


def test_rejected_and_reversed_are_dead_ends() -> None:
    for kind in DocumentKind:
        assert reachable(kind, S.REJECTED) == {S.REJECTED}
        assert reachable(kind, S.REVERSED) == {S.REVERSED}


def test_reversal_rows_never_issue_and_issue_rows_never_use_reversal_states() -> None:
    assert S.ISSUED not in TRANSITIONS[K.REVERSAL]
    for state in (S.REVERSAL_PENDING, S.REVERSAL_SUBMITTED):
        assert state not in TRANSITIONS[K.ISSUE]


@settings(max_examples=300)
@given(walks())
def test_walk_invariants(walk: tuple[DocumentKind, list[DocumentState]]) -> None:
    kind, path = walk
    for a, b in itertools.pairwise(path):
        assert is_allowed(kind, a, b)
    if kind is K.ISSUE and S.REVERSED in path:
        # An issue row is only reversed after it was issued.
        assert path.index(S.ISSUED) < path.index(S.REVERSED)
    if kind is K.ISSUE and S.ISSUED in path:
        after = path[path.index(S.ISSUED) :]
        assert set(after) <= {S.ISSUED, S.REVERSED}
    # Once sent (frozen), a row never returns to a state where its payload may change.
    sent = [i for i, s in enumerate(path) if s in MAY_HAVE_BEEN_SENT]
    if sent:
        assert not ({S.PENDING, S.INVALID} & set(path[sent[0] :]))
    if S.REJECTED in path:
        assert path[-1] is S.REJECTED


@given(st.sampled_from(list(DocumentState)), st.sampled_from(list(DocumentState)))
def test_check_transition_names_document_and_states(a: DocumentState, b: DocumentState) -> None:
    for kind in DocumentKind:
        if is_allowed(kind, a, b):
            check_transition("doc-7", kind, a, b)
            assert kind in kinds_allowing(a, b)
        else:
            with pytest.raises(InvalidTransitionError) as err:
                check_transition("doc-7", kind, a, b)
            assert "doc-7" in str(err.value)
            assert a.value in str(err.value) and b.value in str(err.value)
            assert err.value.current is a and err.value.new is b


def test_terminal_and_resume_sets() -> None:
    assert is_terminal(S.ISSUED) and is_terminal(S.REJECTED) and is_terminal(S.REVERSED)
    assert is_terminal(S.DEAD) and not is_terminal(S.BLOCKED)
    for s in (
        S.READY,
        S.SUBMITTED,
        S.OUTCOME_UNKNOWN,
        S.RETRY_WAIT,
        S.REVERSAL_PENDING,
        S.REVERSAL_SUBMITTED,
    ):
        assert needs_resume(s) and not is_terminal(s)
    for s in (S.PENDING, S.INVALID, S.ISSUED, S.REJECTED, S.DEAD, S.BLOCKED, S.REVERSED):
        assert not needs_resume(s)


# ---------------------------------------------------------------- outcomes and backoff

outcomes = st.one_of(
    st.sampled_from(
        [IssuerOutcome(c) for c in ProviderOutcome if c is not ProviderOutcome.RETRYABLE]
    ),
    st.builds(IssuerOutcome.retryable, st.one_of(st.none(), st.floats(0, 10_000, allow_nan=False))),
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[DocumentKind, DocumentState]:
    kind = draw(st.sampled_from(list(DocumentKind)))
    return kind, draw(st.sampled_from(sorted(calling_states(kind))))


@settings(max_examples=500)
@given(calls(), outcomes, st.integers(0, 30), st.integers(0, 2**32), st.integers(0, 50))
def test_next_step_is_always_a_legal_transition(
    call: tuple[DocumentKind, DocumentState],
    outcome: IssuerOutcome,
    attempts: int,
    seed: int,
    polls: int,
) -> None:
    kind, current = call
    policy = RetryPolicy(max_attempts=8)
    step = next_step(
        document=1,
        kind=kind,
        current=current,
        outcome=outcome,
        attempts=attempts,
        policy=policy,
        now=NOW,
        rng=random.Random(seed),
        polls=polls,
    )
    assert is_allowed(kind, current, step.state)
    assert step.attempts >= attempts
    if step.next_attempt_at is not None:
        assert step.next_attempt_at >= NOW
    if outcome.cls in (
        ProviderOutcome.RETRYABLE,
        ProviderOutcome.OUTCOME_UNKNOWN,
        ProviderOutcome.NOT_FOUND,
    ):
        assert step.attempts == attempts + 1
        assert (step.state is S.DEAD) == (attempts + 1 >= policy.max_attempts)
        if step.state is not S.DEAD:
            assert step.next_attempt_at is not None
            wait = (step.next_attempt_at - NOW).total_seconds()
            # Never sooner than the provider asked (up to the clamp), never beyond both caps.
            if outcome.retry_after:
                assert wait >= min(outcome.retry_after, policy.max_retry_after) - 1e-6
            assert wait <= max(policy.max_delay, policy.max_retry_after) + 1e-6
    else:
        assert step.attempts == attempts
    if outcome.cls is ProviderOutcome.ISSUED:
        assert step.state is (S.ISSUED if kind is K.ISSUE else S.REVERSED)
    if outcome.cls is ProviderOutcome.DUPLICATE:
        # "query it", never a failure and never a new serial
        assert step.state is S.OUTCOME_UNKNOWN and step.next_attempt_at == NOW


@pytest.mark.parametrize("attempts", [0, 3, 11])
def test_not_found_reaching_the_state_machine_is_a_failed_attempt_like_unknown(
    attempts: int,
) -> None:
    # The driver re-sends on "not found"; only when no attempt is left does the answer
    # reach next_step, which must then treat it exactly as an unknown outcome.
    for kind in DocumentKind:
        for current in calling_states(kind):
            steps = [
                next_step(
                    document=1,
                    kind=kind,
                    current=current,
                    outcome=IssuerOutcome(cls),
                    attempts=attempts,
                    policy=RetryPolicy(),
                    now=NOW,
                    rng=random.Random(7),
                )
                for cls in (ProviderOutcome.NOT_FOUND, ProviderOutcome.OUTCOME_UNKNOWN)
            ]
            assert steps[0] == steps[1]


def test_unknown_outcome_after_acceptance_stays_submitted() -> None:
    step = next_step(
        document=1,
        kind=K.ISSUE,
        current=S.SUBMITTED,
        outcome=IssuerOutcome(ProviderOutcome.OUTCOME_UNKNOWN),
        attempts=0,
        policy=RetryPolicy(),
        now=NOW,
        rng=random.Random(1),
    )
    assert step.state is S.SUBMITTED


def test_retryable_before_send_waits_and_unknown_stays_unknown() -> None:
    p = RetryPolicy()
    r = random.Random(3)
    assert (
        next_step(
            document=1,
            kind=K.ISSUE,
            current=S.READY,
            outcome=IssuerOutcome.retryable(5),
            attempts=0,
            policy=p,
            now=NOW,
            rng=r,
        ).state
        is S.RETRY_WAIT
    )
    assert (
        next_step(
            document=1,
            kind=K.ISSUE,
            current=S.OUTCOME_UNKNOWN,
            outcome=IssuerOutcome.retryable(),
            attempts=0,
            policy=p,
            now=NOW,
            rng=r,
        ).state
        is S.OUTCOME_UNKNOWN
    )


def test_outcome_in_a_non_calling_state_is_an_error() -> None:
    with pytest.raises(InvalidTransitionError, match="doc-1"):
        next_step(
            document="doc-1",
            kind=K.ISSUE,
            current=S.ISSUED,
            outcome=IssuerOutcome(ProviderOutcome.ISSUED),
            attempts=0,
            policy=RetryPolicy(),
            now=NOW,
            rng=random.Random(0),
        )


def test_max_attempts_goes_dead() -> None:
    p = RetryPolicy(max_attempts=3)
    step = next_step(
        document=1,
        kind=K.REVERSAL,
        current=S.RETRY_WAIT,
        outcome=IssuerOutcome.retryable(),
        attempts=2,
        policy=p,
        now=NOW,
        rng=random.Random(0),
    )
    assert step.state is S.DEAD and step.exhausted and step.next_attempt_at is None


@given(st.integers(1, 200), st.integers(0, 2**32))
def test_full_jitter_stays_under_the_exponential_ceiling(attempt: int, seed: int) -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=120)
    ceiling = p.backoff_ceiling(attempt)
    assert ceiling == min(120, 0.5 * 2 ** (attempt - 1))
    delay = p.backoff(attempt, random.Random(seed))
    assert 0 <= delay <= ceiling


def test_jitter_spreads_delays() -> None:
    p = RetryPolicy(base_delay=1, max_delay=60)
    rng = random.Random(42)
    delays = {round(p.backoff(7, rng), 3) for _ in range(50)}
    assert len(delays) > 40  # not a fixed schedule: replicas do not retry in lockstep


def test_retry_after_is_honoured_and_clamped() -> None:
    p = RetryPolicy(base_delay=1, max_delay=10, max_retry_after=600)
    rng = random.Random(0)
    assert p.backoff(1, rng, retry_after=30) >= 30
    assert p.backoff(1, rng, retry_after=10**9) == 600


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_processing_polls_back_off() -> None:
    p = RetryPolicy(poll_interval=2, max_poll_interval=60)
    rng = random.Random(0)
    first = next_step(
        document=1,
        kind=K.ISSUE,
        current=S.READY,
        outcome=IssuerOutcome(ProviderOutcome.PROCESSING),
        attempts=0,
        policy=p,
        now=NOW,
        rng=rng,
        polls=0,
    )
    late = next_step(
        document=1,
        kind=K.ISSUE,
        current=S.SUBMITTED,
        outcome=IssuerOutcome(ProviderOutcome.PROCESSING),
        attempts=0,
        policy=p,
        now=NOW,
        rng=rng,
        polls=10,
    )
    assert first.state is S.SUBMITTED
    assert first.next_attempt_at is not None and late.next_attempt_at is not None
    assert first.next_attempt_at - NOW <= timedelta(seconds=4)
    assert late.next_attempt_at - NOW >= timedelta(seconds=30)


@pytest.mark.parametrize("current", [S.READY, S.RETRY_WAIT, S.OUTCOME_UNKNOWN])
def test_a_throttled_answer_waits_but_never_uses_up_attempts(current: S) -> None:
    # A platform metering us (HTTP 429) is not failing this document: even on its last
    # permitted attempt the row waits (honouring Retry-After) instead of going DEAD.
    p = RetryPolicy(max_attempts=3)
    step = next_step(
        document=1,
        kind=K.ISSUE,
        current=current,
        outcome=IssuerOutcome(ProviderOutcome.RETRYABLE, retry_after=5.0, throttled=True),
        attempts=2,
        policy=p,
        now=NOW,
        rng=random.Random(1),
    )
    assert step.state is (S.RETRY_WAIT if current is not S.OUTCOME_UNKNOWN else current)
    assert step.attempts == 2 and not step.exhausted
    assert step.next_attempt_at is not None and step.next_attempt_at >= NOW + timedelta(seconds=5)
    failed = next_step(
        document=1,
        kind=K.ISSUE,
        current=current,
        outcome=IssuerOutcome(ProviderOutcome.RETRYABLE, retry_after=5.0),
        attempts=2,
        policy=p,
        now=NOW,
        rng=random.Random(1),
    )
    assert failed.state is S.DEAD
