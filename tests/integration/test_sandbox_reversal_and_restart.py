"""Reversal (red-letter forms) once only, and a sandbox restart keeping its data."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from syncd.issuers import signing
from syncd.issuers.base import (
    Issued,
    NotFound,
    OutcomeUnknown,
    Processing,
    Rejected,
    ReversalRequest,
)
from syncd.issuers.sandbox import SandboxIssuer
from tests import sandbox_samples as samples
from tests.integration.sandbox_process import SandboxProcess, running_sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("reversal") / "store.db") as process:
        yield process


@pytest.fixture(autouse=True)
def _no_faults(sandbox: SandboxProcess) -> Iterator[None]:
    sandbox.reset_faults()
    yield
    sandbox.reset_faults()


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[SandboxIssuer]:
    with sandbox.client() as c:
        yield c


def issue(client: SandboxIssuer, **kwargs: object) -> Issued:
    doc = samples.invoice(**kwargs)  # type: ignore[arg-type]
    client.issue(doc)
    result = client.wait_issued(doc["serial"])
    assert isinstance(result, Issued)
    return result


def test_ordinary_invoice_is_reversed_once_with_negated_amounts(sandbox, client):
    blue = issue(client)
    request = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "SALES_RETURN")
    assert isinstance(client.reverse(request), Processing)
    red = client.wait_issued(request.serial, reversal=True)
    assert isinstance(red, Issued)
    assert red.kind == "RED" and red.original_invoice_no == blue.invoice_no
    assert red.invoice_no != blue.invoice_no and len(red.invoice_no) == 20
    assert blue.totals is not None and red.totals is not None
    assert red.totals.gross_amount == -blue.totals.gross_amount
    assert red.totals.tax_amount == -blue.totals.tax_amount
    xml = httpx.get(red.files["xml"]).content
    assert b"CreditNote" in xml and blue.invoice_no.encode() in xml

    # the same request again: the same reversal, not a second one
    again = client.reverse(request)
    assert isinstance(again, Issued) and again.invoice_no == red.invoice_no
    # another serial for the same blue invoice: refused
    second = client.reverse(
        ReversalRequest(samples.new_serial("R"), blue.invoice_no, "INVOICING_ERROR")
    )
    assert isinstance(second, Rejected) and second.reasons[0].code == "ALREADY_REVERSED"
    audit = sandbox.issued()
    reds = [i for i in audit if i["original_invoice_no"] == blue.invoice_no]
    assert len(reds) == 1 and reds[0]["kind"] == "RED"
    assert Decimal(reds[0]["gross_amount"]) == -Decimal(str(blue.totals.gross_amount))


def test_special_invoice_reversal_waits_for_the_buyer(sandbox, client):
    blue = issue(client, invoice_type="SPECIAL")
    request = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "ALLOWANCE")
    pending = client.reverse(request)
    assert isinstance(pending, Processing) and pending.awaiting_confirmation
    assert pending.status == "PENDING_CONFIRMATION"
    still = client.query_reversal(request.serial)
    assert isinstance(still, Processing) and still.awaiting_confirmation
    assert sandbox.decide_red_form(request.serial, "confirm").status_code == 200
    red = client.wait_issued(request.serial, reversal=True)
    assert isinstance(red, Issued) and red.original_invoice_no == blue.invoice_no


def test_buyer_rejection_fails_the_form_and_frees_the_invoice(sandbox, client):
    blue = issue(client, invoice_type="SPECIAL")
    first = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "SALES_RETURN")
    client.reverse(first)
    sandbox.decide_red_form(first.serial, "reject")
    failed = client.query_reversal(first.serial)
    assert isinstance(failed, Rejected) and failed.reasons[0].code == "BUYER_REJECTED"
    retry = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "SALES_RETURN")
    assert isinstance(client.reverse(retry), Processing)


def test_reversal_of_unknown_or_red_invoice_is_rejected(sandbox, client):
    unknown = client.reverse(ReversalRequest(samples.new_serial("R"), "9" * 20, "SALES_RETURN"))
    assert isinstance(unknown, Rejected) and unknown.reasons[0].code == "ORIGINAL_NOT_FOUND"
    blue = issue(client)
    request = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "SALES_RETURN")
    client.reverse(request)
    red = client.wait_issued(request.serial, reversal=True)
    assert isinstance(red, Issued)
    of_red = client.reverse(
        ReversalRequest(samples.new_serial("R"), red.invoice_no, "SALES_RETURN")
    )
    assert isinstance(of_red, Rejected) and of_red.reasons[0].code == "NOT_REVERSIBLE"
    assert isinstance(client.query_reversal("NOSUCHFORM01"), NotFound)


def test_lost_reversal_answer_is_resolved_by_query(sandbox, client):
    blue = issue(client)
    request = ReversalRequest(samples.new_serial("R"), blue.invoice_no, "SERVICE_STOPPED")
    sandbox.set_faults(drop_response_after_commit_rate=1.0)
    assert isinstance(client.reverse(request), OutcomeUnknown)
    resolved = client.reverse_or_resolve(request)
    assert isinstance(resolved, (Processing, Issued))
    sandbox.reset_faults()
    assert isinstance(client.wait_issued(request.serial, reversal=True), Issued)
    reds = [i for i in sandbox.issued() if i["original_invoice_no"] == blue.invoice_no]
    assert len(reds) == 1


def test_restart_keeps_invoices_pending_work_nonces_and_audit(tmp_path: Path):
    store = tmp_path / "durable.db"
    with running_sandbox(store, issue_delay=1.5) as sb:
        settings = sb.settings()
        with sb.client() as c:
            done = samples.invoice()
            c.issue(done)
            issued = c.wait_issued(done["serial"])
            assert isinstance(issued, Issued)
            pending = samples.invoice()
            assert isinstance(c.issue(pending), Processing)
        replayed = signing.auth_headers(
            settings.app_key, settings.app_secret, "GET", f"/v1/invoices/{done['serial']}", b""
        )
        assert (
            httpx.get(f"{sb.url}/v1/invoices/{done['serial']}", headers=replayed).status_code == 200
        )
        sb.restart(signal.SIGKILL)  # no goodbye: the store must already hold everything
        with sb.client() as c:
            again = c.query(done["serial"])
            assert isinstance(again, Issued) and again.invoice_no == issued.invoice_no
            late = c.wait_issued(pending["serial"])
            assert isinstance(late, Issued)
            assert late.invoice_no != issued.invoice_no
        replay = httpx.get(f"{sb.url}/v1/invoices/{done['serial']}", headers=replayed)
        assert replay.status_code == 401 and replay.json()["code"] == "NONCE_REUSED"
        serials = [i["serial"] for i in sb.issued()]
        assert sorted(serials) == sorted([done["serial"], pending["serial"]])
        assert any(r["serial"] == pending["serial"] for r in sb.requests())
