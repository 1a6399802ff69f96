"""The driver's decisions, pure: provider result -> next state, ERP write-back, metric
outcome, retry. No database, provider or thread: rows are plain values, time and
randomness are passed in."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from syncd.erp.writeback import ResultStatus
from syncd.identity import DocumentKind
from syncd.issuers.base import (
    Duplicate,
    Issued,
    IssueResult,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Reason,
    Rejected,
    Retryable,
)
from syncd.ledger.errors import StaleStateError
from syncd.ledger.models import DocumentIdentity, DocumentRow
from syncd.lifecycle import DocumentState, ProviderOutcome, RetryPolicy
from syncd.observability.metrics import DocumentOutcome
from syncd.pipeline.outcomes import (
    DB_RETRY_SECONDS,
    UNEXPECTED_RETRY_SECONDS,
    Change,
    StepFailure,
    Wait,
    classify_failure,
    decide,
    delay_until,
    describe,
    failure_delay,
    outcome_class,
    reason_text,
    status_of,
    transition_reason,
)

S = DocumentState
K = DocumentKind
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5)
SERIAL = "SO-1"
WHY = Reason("UPSTREAM", "try later")


def row(state: DocumentState, kind: DocumentKind = K.ISSUE, attempts: int = 0) -> DocumentRow:
    return DocumentRow(
        id=1,
        identity=DocumentIdentity.stored("sales_order", "erp.sales_order", '{"id":1}', kind, 0),
        state=state,
        serial=SERIAL,
        payload={"serial": SERIAL},
        payload_hash=None,
        attempts=attempts,
        version=1,
        next_attempt_at=None,
        last_error_code=None,
        last_error=None,
        invoice_no=None,
        issued_at=None,
        invoice_url=None,
        check_code=None,
        reverses_id=None,
        source_topic=None,
        source_partition=None,
        source_offset=None,
        source_ts_ms=None,
        lease_owner=None,
        lease_epoch=None,
        created_at=NOW,
        updated_at=NOW,
    )


def issued(kind: Any = "BLUE", **kw: Any) -> Issued:
    args: dict[str, Any] = {
        "serial": SERIAL,
        "invoice_no": "INV-1",
        "issued_at": "2026-01-01T11:59:00Z",
        "check_code": "CC",
        "kind": kind,
        "totals": None,
        "files": {"xml": "https://x/inv.xml", "pdf": "https://x/inv.pdf"},
    }
    args.update(kw)
    return Issued(**args)


def run(
    r: DocumentRow,
    result: IssueResult,
    *,
    resent: bool = False,
    sent: bool = False,
    polls: int = 0,
    seed: int = 1,
) -> Wait | Change:
    return decide(
        r,
        result,
        resent=resent,
        sent=sent,
        polls=polls,
        policy=POLICY,
        now=NOW,
        rng=random.Random(seed),
    )


def change(decision: Wait | Change) -> Change:
    assert isinstance(decision, Change), decision
    return decision


ONE_OF_EACH: dict[ProviderOutcome, IssueResult] = {
    ProviderOutcome.ISSUED: issued(),
    ProviderOutcome.PROCESSING: Processing(SERIAL),
    ProviderOutcome.REJECTED: Rejected(SERIAL, (Reason("BAD_TAX_ID", "checksum"),)),
    ProviderOutcome.RETRYABLE: Retryable(SERIAL, WHY, retry_after=40.0),
    ProviderOutcome.OUTCOME_UNKNOWN: OutcomeUnknown(SERIAL, Reason("TIMEOUT", "read")),
    ProviderOutcome.NEEDS_HUMAN: NeedsHuman(SERIAL, Reason("NO_CREDIT", "top up")),
    ProviderOutcome.DUPLICATE: Duplicate(SERIAL, Reason("DUPLICATE", "seen")),
    ProviderOutcome.NOT_FOUND: NotFound(SERIAL),
}


# ---------------------------------------------------------------- classifying results


def test_every_provider_outcome_has_exactly_one_result_type() -> None:
    assert set(ONE_OF_EACH) == set(ProviderOutcome)
    for cls, result in ONE_OF_EACH.items():
        assert type(result).outcome is cls


@pytest.mark.parametrize("cls", list(ProviderOutcome))
def test_outcome_class_is_the_results_own_class(cls: ProviderOutcome) -> None:
    classified = outcome_class(ONE_OF_EACH[cls])
    assert classified.cls is cls
    assert classified.retry_after == (40.0 if cls is ProviderOutcome.RETRYABLE else None)


# ---------------------------------------------------------------- every outcome, one table

#: outcome -> (next state, ERP write-back status, metric outcome, attempts after, retry)
#: for an issue row that may have reached the provider (RETRY_WAIT, one failed attempt)
ISSUE_TABLE: dict[ProviderOutcome, tuple[Any, ...]] = {
    ProviderOutcome.ISSUED: (S.ISSUED, ResultStatus.ISSUED, DocumentOutcome.ISSUED, 1, None),
    ProviderOutcome.PROCESSING: (S.SUBMITTED, None, None, 1, None),
    ProviderOutcome.REJECTED: (
        S.REJECTED,
        ResultStatus.REJECTED,
        DocumentOutcome.REJECTED,
        1,
        None,
    ),
    ProviderOutcome.RETRYABLE: (S.RETRY_WAIT, None, None, 2, "issue"),
    ProviderOutcome.OUTCOME_UNKNOWN: (S.OUTCOME_UNKNOWN, None, None, 2, "issue"),
    ProviderOutcome.NEEDS_HUMAN: (S.BLOCKED, ResultStatus.BLOCKED, None, 1, None),
    ProviderOutcome.DUPLICATE: (S.OUTCOME_UNKNOWN, None, None, 1, None),
    ProviderOutcome.NOT_FOUND: (S.OUTCOME_UNKNOWN, None, None, 2, "issue"),
}

#: the same for a reversal row waiting for the provider (REVERSAL_SUBMITTED, no failure)
REVERSAL_TABLE: dict[ProviderOutcome, tuple[Any, ...]] = {
    ProviderOutcome.ISSUED: (S.REVERSED, ResultStatus.REVERSED, DocumentOutcome.REVERSED, 0, None),
    ProviderOutcome.REJECTED: (
        S.REJECTED,
        ResultStatus.REJECTED,
        DocumentOutcome.REJECTED,
        0,
        None,
    ),
    ProviderOutcome.RETRYABLE: (S.REVERSAL_SUBMITTED, None, None, 1, None),
    ProviderOutcome.OUTCOME_UNKNOWN: (S.REVERSAL_SUBMITTED, None, None, 1, None),
    ProviderOutcome.NEEDS_HUMAN: (S.BLOCKED, ResultStatus.BLOCKED, None, 0, None),
    ProviderOutcome.DUPLICATE: (S.OUTCOME_UNKNOWN, None, None, 0, None),
    ProviderOutcome.NOT_FOUND: (S.REVERSAL_SUBMITTED, None, None, 1, None),
}


@pytest.mark.parametrize("cls", list(ProviderOutcome))
def test_issue_row_every_outcome(cls: ProviderOutcome) -> None:
    state, status, metric, attempts, retry = ISSUE_TABLE[cls]
    result = ONE_OF_EACH[cls]
    if cls is ProviderOutcome.ISSUED:
        result = issued(kind="BLUE")
    c = change(run(row(S.RETRY_WAIT, attempts=1), result))
    assert c.new_state is state
    assert (c.writeback.status if c.writeback else None) is status
    assert c.outcome is metric
    assert c.fields["attempts"] == attempts
    assert c.retry == retry
    assert c.reason == transition_reason(result)
    assert not c.reversal_issued


@pytest.mark.parametrize("cls", [c for c in ProviderOutcome if c is not ProviderOutcome.PROCESSING])
def test_reversal_row_every_outcome(cls: ProviderOutcome) -> None:
    state, status, metric, attempts, retry = REVERSAL_TABLE[cls]
    result = issued(kind="RED") if cls is ProviderOutcome.ISSUED else ONE_OF_EACH[cls]
    c = change(run(row(S.REVERSAL_SUBMITTED, K.REVERSAL), result))
    assert c.new_state is state
    assert (c.writeback.status if c.writeback else None) is status
    assert c.outcome is metric
    assert c.fields["attempts"] == attempts
    assert c.retry == retry
    assert c.reversal_issued == (cls is ProviderOutcome.ISSUED)


def test_reversal_row_still_processing_only_polls_again() -> None:
    w = run(row(S.REVERSAL_SUBMITTED, K.REVERSAL), Processing(SERIAL), polls=3)
    assert isinstance(w, Wait) and not w.sent


# ---------------------------------------------------------------- the content of a change


def test_issued_records_the_invoice_and_writes_it_back() -> None:
    r = replace(row(S.SUBMITTED), last_error_code="TIMEOUT", last_error="x")
    c = change(run(r, issued()))
    assert c.fields["invoice_no"] == "INV-1"
    assert c.fields["issued_at"] == datetime(2026, 1, 1, 11, 59, tzinfo=UTC)
    assert c.fields["check_code"] == "CC"
    assert c.fields["invoice_url"] == "https://x/inv.pdf"  # the PDF before the XML
    assert c.fields["last_error_code"] is None and c.fields["last_error"] is None
    assert c.fields["next_attempt_at"] is None
    assert c.writeback is not None
    assert c.writeback.invoice_no == "INV-1"
    assert c.writeback.issued_at == c.fields["issued_at"]
    assert c.writeback.url == "https://x/inv.pdf"
    assert c.error is None


def test_issued_files_reach_the_per_format_write_back_columns() -> None:
    from syncd.config.documents import WriteBackColumns
    from syncd.erp.writeback import writeback_values
    from tests.unit.config_helpers import demo_config

    files = {"pdf": "https://x/a.pdf", "ofd": "https://x/a.ofd", "xml": "https://x/a.xml"}
    c = change(run(row(S.SUBMITTED), issued(files=files)))
    assert c.writeback is not None and dict(c.writeback.files) == files
    doc = demo_config().documents["sales_order"]
    columns = doc.write_back.columns.model_dump() | {
        "url": "invoice_url",
        "pdf_url": "pdf_link",
        "ofd_url": "ofd_link",
        "xml_url": "xml_link",
    }
    doc = doc.model_copy(
        update={
            "write_back": doc.write_back.model_copy(
                update={"columns": WriteBackColumns.model_validate(columns)}
            )
        }
    )
    values = writeback_values(doc, c.writeback)
    assert values["invoice_url"] == "https://x/a.pdf"
    assert (values["pdf_link"], values["ofd_link"], values["xml_link"]) == (
        files["pdf"],
        files["ofd"],
        files["xml"],
    )


def test_issued_without_a_readable_time_or_files() -> None:
    c = change(run(row(S.SUBMITTED), issued(issued_at="yesterday", files={})))
    assert c.fields["issued_at"] is None and c.fields["invoice_url"] is None
    assert c.writeback is not None and c.writeback.issued_at == NOW  # never empty in the ERP
    naive = change(run(row(S.SUBMITTED), issued(issued_at="2026-01-01T08:00:00")))
    assert naive.fields["issued_at"] == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    other = change(run(row(S.SUBMITTED), issued(files={"zip": "https://x/a.zip"})))
    assert other.fields["invoice_url"] == "https://x/a.zip"


def test_reissued_revision_clears_the_previous_red_number() -> None:
    first = change(run(row(S.SUBMITTED), issued())).writeback
    assert first is not None and not first.clear_red_invoice_no
    base = row(S.SUBMITTED)
    ident = base.identity
    r1 = replace(base, identity=replace(ident, revision=1))
    c = change(run(r1, issued()))
    assert c.writeback is not None and c.writeback.clear_red_invoice_no
    assert c.writeback.invoice_no == "INV-1"


def test_reversal_issued_writes_the_red_invoice_number() -> None:
    c = change(run(row(S.REVERSAL_SUBMITTED, K.REVERSAL), issued(kind="RED", invoice_no="R-9")))
    assert c.writeback is not None and c.writeback.red_invoice_no == "R-9"
    assert c.reversal_issued


def test_rejected_keeps_the_providers_reasons() -> None:
    result = Rejected(SERIAL, (Reason("A", "one", "buyer.tax_id"), Reason("B", "two")))
    c = change(run(row(S.SUBMITTED), result))
    assert c.fields["last_error_code"] == "A"
    assert c.fields["last_error"] == "A at buyer.tax_id: one; B: two"
    assert c.writeback is not None and c.writeback.error == c.error == c.fields["last_error"]
    bare = change(run(row(S.SUBMITTED), Rejected(SERIAL, ())))
    assert bare.fields["last_error_code"] == "REJECTED"
    assert bare.error == "rejected by the provider"


def test_retryable_waits_at_least_retry_after_and_counts_a_retry() -> None:
    c = change(run(row(S.READY), Retryable(SERIAL, WHY, retry_after=40.0)))
    assert c.new_state is S.RETRY_WAIT
    assert c.next_attempt_at is not None and c.next_attempt_at >= NOW + timedelta(seconds=40)
    assert c.fields["next_attempt_at"] == c.next_attempt_at
    assert c.fields["last_error_code"] == "UPSTREAM"
    assert c.writeback is None and c.outcome is None
    assert c.retry == "issue"


def test_a_reversal_retry_counts_as_reverse() -> None:
    c = change(run(row(S.REVERSAL_PENDING, K.REVERSAL), Retryable(SERIAL, WHY)))
    assert c.new_state is S.RETRY_WAIT and c.retry == "reverse"


def test_the_last_permitted_failure_goes_dead_and_says_so_in_the_erp() -> None:
    c = change(run(row(S.OUTCOME_UNKNOWN, attempts=4), OutcomeUnknown(SERIAL, WHY)))
    assert c.new_state is S.DEAD
    assert c.fields["attempts"] == 5
    assert c.outcome is DocumentOutcome.DEAD
    assert c.writeback is not None and c.writeback.status is ResultStatus.DEAD
    assert c.writeback.error == "gave up after 5 attempts: UPSTREAM: try later"
    assert c.retry is None


def test_out_of_attempts_on_not_found_goes_dead() -> None:
    c = change(run(row(S.OUTCOME_UNKNOWN, attempts=4), NotFound(SERIAL)))
    assert c.new_state is S.DEAD
    assert c.fields["last_error_code"] == "NOT_FOUND"


def test_blocked_is_written_back_once() -> None:
    first = change(run(row(S.SUBMITTED), NeedsHuman(SERIAL, WHY)))
    assert first.new_state is S.BLOCKED
    assert first.writeback is not None and first.writeback.error == "UPSTREAM: try later"
    assert first.next_attempt_at == NOW + timedelta(seconds=POLICY.blocked_recheck)
    again = change(run(row(S.BLOCKED), NeedsHuman(SERIAL, WHY)))
    assert again.new_state is S.BLOCKED and again.writeback is None


def test_duplicate_is_queried_at_once_and_is_no_failure() -> None:
    c = change(run(row(S.READY), Duplicate(SERIAL, WHY)))
    assert c.new_state is S.OUTCOME_UNKNOWN
    assert c.next_attempt_at == NOW
    assert c.fields["attempts"] == 0 and c.retry is None


def test_a_resend_counts_as_an_attempt() -> None:
    c = change(run(row(S.OUTCOME_UNKNOWN, attempts=2), issued(), resent=True))
    assert c.new_state is S.ISSUED and c.fields["attempts"] == 3


# ---------------------------------------------------------------- re-sending, polling


@pytest.mark.parametrize("state", [S.OUTCOME_UNKNOWN, S.RETRY_WAIT, S.BLOCKED])
@pytest.mark.parametrize("kind", list(DocumentKind))
def test_provider_never_got_it_goes_back_to_send_under_the_same_serial(
    state: DocumentState, kind: DocumentKind
) -> None:
    c = change(run(row(state, kind, attempts=2), Retryable(SERIAL, WHY, resubmit=True)))
    assert c.new_state is (S.READY if kind is K.ISSUE else S.REVERSAL_PENDING)
    assert c.fields == {"attempts": 3}
    assert c.next_attempt_at is None
    assert c.writeback is None and c.outcome is None and c.retry is None


def test_resubmit_before_anything_was_sent_is_an_ordinary_retry() -> None:
    c = change(run(row(S.READY), Retryable(SERIAL, WHY, resubmit=True)))
    assert c.new_state is S.RETRY_WAIT and c.fields["attempts"] == 1


def test_first_processing_answer_keeps_the_row_ready() -> None:
    # One ledger transaction per document: SUBMITTED is written only if a later poll
    # still finds it processing.
    w = run(row(S.READY), Processing(SERIAL))
    assert isinstance(w, Wait) and w.sent
    assert POLICY.poll_interval / 2 <= w.delay <= POLICY.poll_interval
    c = change(run(row(S.READY), Processing(SERIAL), sent=True, polls=1))
    assert c.new_state is S.SUBMITTED and c.writeback is None and c.outcome is None


def test_first_processing_answer_of_a_resend_is_written() -> None:
    c = change(run(row(S.READY, attempts=1), Processing(SERIAL), resent=True))
    assert c.new_state is S.SUBMITTED and c.fields["attempts"] == 2


def test_still_processing_polls_later_and_later() -> None:
    early = run(row(S.SUBMITTED), Processing(SERIAL), polls=0)
    late = run(row(S.SUBMITTED), Processing(SERIAL), polls=10)
    assert isinstance(early, Wait) and isinstance(late, Wait)
    assert not early.sent and not late.sent
    assert early.delay <= POLICY.poll_interval
    assert POLICY.max_poll_interval / 2 <= late.delay <= POLICY.max_poll_interval


def test_a_decision_depends_on_its_arguments_only() -> None:
    r = row(S.SUBMITTED, attempts=1)
    result = OutcomeUnknown(SERIAL, WHY)
    assert run(r, result, seed=5) == run(r, result, seed=5)


def test_only_updatable_fields_are_written() -> None:
    from syncd.ledger.repository import UPDATABLE_FIELDS

    for cls, result in ONE_OF_EACH.items():
        d = run(row(S.RETRY_WAIT, attempts=1), result)
        assert isinstance(d, Change), cls
        assert set(d.fields) <= UPDATABLE_FIELDS


# ---------------------------------------------------------------- failed steps


def test_failed_steps_are_retried_by_kind_of_failure() -> None:
    stale = StaleStateError(1, S.READY, S.ISSUED)
    database = OperationalError("SELECT 1", {}, Exception("gone"))
    for exc, failure, delay in (
        (stale, StepFailure.STALE, 0.0),
        (database, StepFailure.DATABASE, DB_RETRY_SECONDS),
        (ValueError("bug"), StepFailure.UNEXPECTED, UNEXPECTED_RETRY_SECONDS),
    ):
        assert classify_failure(exc) is failure
        assert failure_delay(failure) == delay


# ---------------------------------------------------------------- describing results


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (issued(), 200),
        (Processing(SERIAL), 200),
        (Rejected(SERIAL, ()), 422),
        (NotFound(SERIAL), 404),
        (Duplicate(SERIAL, WHY), 409),
        (Retryable(SERIAL, Reason("RATE_LIMITED", "slow down")), 429),
        (Retryable(SERIAL, Reason("TOO_MANY_REQUESTS", "slow down")), 429),
        (Retryable(SERIAL, WHY), 503),
        (NeedsHuman(SERIAL, WHY), 403),
        (OutcomeUnknown(SERIAL, WHY), None),
    ],
)
def test_status_of(result: IssueResult, status: int | None) -> None:
    assert status_of(result) == status


def test_reason_text_and_describe() -> None:
    assert reason_text(issued()) == (None, None)
    assert reason_text(Processing(SERIAL)) == (None, None)
    assert reason_text(NotFound(SERIAL))[0] == "NOT_FOUND"
    assert reason_text(Duplicate(SERIAL, WHY)) == ("UPSTREAM", "UPSTREAM: try later")
    assert describe(issued()) == "issued INV-1"
    assert json.loads(describe(Retryable(SERIAL, WHY))) == {
        "result": "Retryable",
        "code": "UPSTREAM",
        "error": "UPSTREAM: try later",
    }
    assert transition_reason(OutcomeUnknown(SERIAL, WHY)) == "provider: outcomeunknown"


def test_delay_until() -> None:
    assert delay_until(None, NOW) == 0.0
    assert delay_until(NOW - timedelta(seconds=5), NOW) == 0.0
    assert delay_until(NOW + timedelta(seconds=5), NOW) == 5.0
