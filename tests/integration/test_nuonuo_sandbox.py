"""syncd's Nuonuo client against the real `syncd sandbox --dialect nuonuo` process:
the account-level refusals, seal failures, lost answers, rate limits and restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.issuers.base import (
    Duplicate,
    Issued,
    IssueResult,
    NeedsHuman,
    OutcomeUnknown,
    Processing,
    Rejected,
    Retryable,
    ReturnedLine,
    ReversalRequest,
)
from syncd.issuers.nuonuo import NuonuoIssuer, NuonuoIssuerSettings
from tests.integration.sandbox_process import SandboxProcess
from tests.unit import invoice_samples as samples

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    process = SandboxProcess(store=tmp_path / "nuonuo.db", dialect="nuonuo").start()
    try:
        yield process
    finally:
        process.stop()


def make_client(sandbox: SandboxProcess, probe_interval: float = 0.0) -> NuonuoIssuer:
    settings = NuonuoIssuerSettings(
        base_url=sandbox.url,
        app_key=DEV_APP_KEY,
        app_secret=DEV_APP_SECRET,  # type: ignore[arg-type]
        seller_tax_id=samples.SELLER_TAX_ID,
        read_timeout=2.0,
        account_probe_interval=probe_interval,
    )
    return NuonuoIssuer(settings)


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[NuonuoIssuer]:
    with make_client(sandbox) as issuer:
        yield issuer


def submits(sandbox: SandboxProcess) -> int:
    return sum(r["method"] == "nuonuo.OpeMplatform.requestBillingNew" for r in sandbox.requests())


def test_a_refused_account_pauses_then_resumes_after_a_probe(sandbox: SandboxProcess) -> None:
    sandbox.set_faults(session_expired=True)
    with make_client(sandbox, probe_interval=0.5) as issuer:
        results = [issuer.issue(invoice(10 + i)) for i in range(20)]
        assert all(isinstance(r, NeedsHuman) for r in results)
        assert submits(sandbox) == 1  # the first refusal; the other 19 never left
        assert not issuer.gate.up
        sandbox.reset_faults()
        deadline = time.monotonic() + 20
        while not isinstance(issuer.issue(invoice(10)), Processing):
            assert time.monotonic() < deadline, "the account never resumed"
            time.sleep(0.1)
        assert issuer.gate.up
        assert submits(sandbox) == 2  # one probe, accepted


def test_remaining_credit_is_reported_and_exhaustion_pauses_the_account(
    sandbox: SandboxProcess,
) -> None:
    """The sandbox's credit line (10,000,000.00 a company) shrinks by what was issued; an
    exhausted line refuses the submission (E9302), which pauses the account like a dropped
    session, and the credit reads 0 until the platform reports more."""
    with make_client(sandbox, probe_interval=60.0) as plain:
        settings = plain.settings
    with NuonuoIssuer(settings, credit_interval=0.0) as issuer:
        first = issuer.issue(invoice(1))
        assert isinstance(first, Processing)
        assert issuer.credit_remaining == Decimal("10000000.00")  # asked before the submit
        assert isinstance(issuer.issue(invoice(2)), Processing)
        gross = Decimal(str(invoice(1)["totals"]["gross_amount"]))
        assert issuer.credit_remaining == Decimal("10000000.00") - gross
        sandbox.set_faults(credit_exhausted_for=[samples.SELLER_TAX_ID])
        refused = [issuer.issue(invoice(10 + i)) for i in range(10)]
        assert all(isinstance(r, NeedsHuman) and r.reason.code == "E9302" for r in refused)
        assert not issuer.gate.up
        assert issuer.credit_remaining == Decimal(0)
        assert submits(sandbox) == 3  # two accepted, one refused; the other 9 never left


def invoice(order: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(samples.blue().to_json())
    doc["serial"] = f"SNUONUOIT{order:08d}"
    return doc


def settle(client: NuonuoIssuer, serial: str, timeout: float = 20) -> IssueResult:
    deadline = time.monotonic() + timeout
    while True:
        result = client.query(serial)
        if not isinstance(result, Processing) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_session_and_credit_refusals_need_a_human(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    sandbox.set_faults(session_expired=True)
    result = client.issue(invoice(1))
    assert isinstance(result, NeedsHuman) and result.reason.code == "E9301"
    sandbox.set_faults(session_expired=False, credit_exhausted=True)
    result = client.issue(invoice(1))
    assert isinstance(result, NeedsHuman) and result.reason.code == "E9302"
    sandbox.reset_faults()
    assert isinstance(client.issue(invoice(1)), Processing)  # nothing was stored before


def test_a_seal_failure_is_retried_under_the_same_order_number(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    sandbox.set_faults(issue_failure_rate=1.0)
    serial = invoice(2)["serial"]
    assert isinstance(client.issue(invoice(2)), Processing)
    deadline = time.monotonic() + 20
    while not any(r["method"] == "nuonuo.OpeMplatform.reInvoice" for r in sandbox.requests()):
        assert time.monotonic() < deadline, "the seal failure was never retried"
        assert isinstance(client.query(serial), Processing)  # 20, or 24 answered by reInvoice
        time.sleep(0.1)
    sandbox.reset_faults()
    result = settle(client, serial)
    assert isinstance(result, Issued)
    # the file links are served: a real PDF and the XML; no OFD rendered by the sandbox
    pdf = httpx.get(result.files["pdf"], timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert result.invoice_no.encode() in httpx.get(result.files["xml"], timeout=30).content
    assert "ofd" not in result.files
    calls = [r["method"] for r in sandbox.requests()]
    assert calls.count("nuonuo.OpeMplatform.requestBillingNew") == 1
    assert "nuonuo.OpeMplatform.reInvoice" in calls


def test_a_lost_answer_is_resolved_by_query_and_a_resend_is_refused(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    sandbox.set_faults(drop_response_after_commit_rate=1.0, drop_mode="reset")
    assert isinstance(client.issue(invoice(3)), OutcomeUnknown)
    sandbox.reset_faults()
    assert isinstance(client.issue(invoice(3)), Duplicate)
    assert isinstance(settle(client, invoice(3)["serial"]), Issued)
    assert len(sandbox.issued()) == 1


def test_rate_limit_carries_retry_after(sandbox: SandboxProcess, client: NuonuoIssuer) -> None:
    sandbox.set_faults(rate_limit_rps=1)
    results = [client.query("SNOTHING00000001") for _ in range(4)]
    limited = [r for r in results if isinstance(r, Retryable)]
    assert limited and all(r.retry_after is not None and r.retry_after >= 1 for r in limited)


def test_order_numbers_stay_refused_after_a_restart(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    assert isinstance(client.issue(invoice(4)), Processing)
    assert isinstance(settle(client, invoice(4)["serial"]), Issued)
    sandbox.restart()
    assert isinstance(client.issue(invoice(4)), Duplicate)
    assert isinstance(client.query(invoice(4)["serial"]), Issued)


def settle_red(client: NuonuoIssuer, serial: str, timeout: float = 20) -> IssueResult:
    deadline = time.monotonic() + timeout
    while True:
        result = client.query_reversal(serial)
        if not isinstance(result, Processing) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def _partial(doc: dict[str, Any], blue_no: str, serial: str, units: str) -> ReversalRequest:
    return ReversalRequest(
        serial, blue_no, "SALES_RETURN", invoice=doc, lines=(ReturnedLine(1, Decimal(units)),)
    )


def test_partial_red_forms_add_up_to_the_line_and_not_one_unit_more(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    doc = invoice(40)
    doc["invoice_type"] = "ORDINARY"  # no buyer confirmation: the bureau issues at once
    assert isinstance(client.issue(doc), Processing)
    blue = settle(client, doc["serial"])
    assert isinstance(blue, Issued), blue
    units = Decimal(str(doc["lines"][0]["quantity"]))
    reds = []
    for i, part in enumerate(("0.5", str(units - Decimal("0.5")))):
        serial = f"SNNPARTIAL{i:06d}"
        assert isinstance(client.reverse(_partial(doc, blue.invoice_no, serial, part)), Processing)
        red = settle_red(client, serial)
        assert isinstance(red, Issued) and red.kind == "RED", red
        assert red.original_invoice_no == blue.invoice_no
        reds.append(red)
    assert blue.totals is not None and all(r.totals is not None for r in reds)
    assert sum(r.totals.gross_amount for r in reds if r.totals) == -blue.totals.gross_amount
    # the whole line is returned: one more unit, or a full reversal, is refused
    more = client.reverse(_partial(doc, blue.invoice_no, "SNNPARTIAL999999", "1"))
    assert isinstance(more, Rejected), more
    assert "exceed the original" in more.reasons[0].message
    full = client.reverse(ReversalRequest("SNNFULL000000001", blue.invoice_no, "SALES_RETURN"))
    assert isinstance(full, Rejected), full
    kinds = sorted(i["kind"] for i in sandbox.issued())
    assert kinds == ["BLUE", "RED", "RED"]


def test_red_form_limits_hold_in_the_nuonuo_dialect(tmp_path: Path) -> None:
    process = SandboxProcess(
        store=tmp_path / "limits.db", dialect="nuonuo", extra_args=("--red-max-per-invoice", "1")
    ).start()
    try:
        with make_client(process) as client:
            doc = invoice(41)
            doc["invoice_type"] = "ORDINARY"
            client.issue(doc)
            blue = settle(client, doc["serial"])
            assert isinstance(blue, Issued), blue
            first = client.reverse(_partial(doc, blue.invoice_no, "SNNLIMIT00000001", "0.5"))
            assert isinstance(first, Processing), first
            second = client.reverse(_partial(doc, blue.invoice_no, "SNNLIMIT00000002", "0.5"))
            assert isinstance(second, Rejected), second
            assert "at most 1 per invoice" in second.reasons[0].message
    finally:
        process.stop()
