"""Buyer-raised red-confirmation forms through syncd's Nuonuo client against the real
`syncd sandbox --dialect nuonuo` process: list (`queryInvoiceRedConfirm`, seller, state 03),
confirm and refuse (`nuonuo.OpeMplatform.confirm`), the bureau's red invoice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from syncd.issuers.base import Issued
from syncd.issuers.nuonuo import NuonuoIssuer
from syncd.issuers.redforms import BuyerRedForm, FormDecided, FormRefused
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.test_nuonuo_sandbox import invoice, make_client, settle

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    process = SandboxProcess(store=tmp_path / "nuonuo.db", dialect="nuonuo").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[NuonuoIssuer]:
    with make_client(sandbox) as issuer:
        yield issuer


def _blue(client: NuonuoIssuer, order: int) -> Issued:
    doc = invoice(order)
    client.issue(doc)
    result = settle(client, doc["serial"])
    assert isinstance(result, Issued)
    return result


def _raise(sandbox: SandboxProcess, invoice_no: str, **extra: object) -> str:
    reply = sandbox.control(
        "POST",
        "/_sandbox/buyer-red-forms",
        json={"original_invoice_no": invoice_no, "reason": "SALES_RETURN", **extra},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["billStatus"] == "03" and reply.json()["applySource"] == 1
    return str(reply.json()["billUuid"])


def test_buyer_form_is_listed_confirmed_once_and_becomes_one_red_invoice(
    sandbox: SandboxProcess, client: NuonuoIssuer
) -> None:
    blue = _blue(client, 31)
    form_id = _raise(sandbox, blue.invoice_no)
    listed = client.list_buyer_red_forms()
    assert isinstance(listed, tuple) and [f.form_id for f in listed] == [form_id]
    form = listed[0]
    assert form.status == "PENDING" and form.original_invoice_no == blue.invoice_no
    assert form.reason == "SALES_RETURN"
    assert blue.totals is not None and form.gross_amount == blue.totals.gross_amount
    hours = datetime.fromisoformat(form.deadline) - datetime.fromisoformat(form.raised_at)
    assert hours.total_seconds() == 72 * 3600

    first = client.decide_buyer_red_form(form_id, confirm=True, reason="goods returned")
    assert isinstance(first, FormDecided) and not first.already
    again = client.decide_buyer_red_form(form_id, confirm=True, reason="again")
    assert isinstance(again, FormDecided) and again.already
    other = client.decide_buyer_red_form(form_id, confirm=False, reason="no")
    assert isinstance(other, FormRefused) and other.code == "FORM_DECIDED"
    assert client.list_buyer_red_forms() == ()

    deadline = time.monotonic() + 20
    while True:
        now = client.buyer_red_form(form_id)
        assert isinstance(now, BuyerRedForm)
        if now.status == "ISSUED":
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    reds = [i for i in sandbox.issued() if i.get("original_invoice_no") == blue.invoice_no]
    assert [r["invoice_no"] for r in reds] == [now.red_invoice_no]
    methods = [r["method"] for r in sandbox.requests()]
    assert methods.count("nuonuo.OpeMplatform.confirm") == 1  # the repeat read, not re-sent


def test_buyer_form_refused_or_expired(sandbox: SandboxProcess, client: NuonuoIssuer) -> None:
    refused = _raise(sandbox, _blue(client, 32).invoice_no)
    done = client.decide_buyer_red_form(refused, confirm=False, reason="never returned")
    assert isinstance(done, FormDecided) and done.form.status == "REJECTED"
    late = _raise(sandbox, _blue(client, 33).invoice_no, ttl_seconds=0.5)
    time.sleep(1.0)
    expired = client.decide_buyer_red_form(late, confirm=True, reason="too late")
    assert isinstance(expired, FormRefused) and expired.code == "FORM_EXPIRED"
    missing = client.buyer_red_form("sandboxb00000000000000999")
    assert isinstance(missing, FormRefused) and missing.code == "NOT_FOUND"
