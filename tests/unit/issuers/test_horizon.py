"""The query horizon's pure rules: when it has passed, what is searched, what matches."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from syncd.issuers import horizon
from syncd.issuers.base import Issued, NeedsHuman, PlatformInvoice, Totals
from tests.unit import invoice_samples as samples

SERIAL = "SX3F7Q2M9KD4HT6W1B8N5C0RJA"
CREATED = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # 2026-12-02 01:00 in Beijing
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def payload(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(samples.blue(issue_date=None).to_json())
    doc.update(changes)
    return doc


def wanted() -> horizon.Wanted:
    return horizon.search_for(payload(), CREATED, NOW)


def listed(**changes: Any) -> PlatformInvoice:
    w = wanted()
    values: dict[str, Any] = {
        "invoice_no": "26312000000000000042",
        "kind": "BLUE",
        "issued_at": datetime(2026, 12, 2, 9, 0, tzinfo=horizon.PLATFORM_TZ),
        "totals": Totals(w.net, w.tax, w.query.gross_amount or Decimal(0)),
        "serial": None,
        "seller_tax_id": samples.SELLER_TAX_ID,
        "buyer_tax_id": samples.BUYER_TAX_ID,
        "buyer_name": "Example Buyer Ltd.",
        "invoice_type": "SPECIAL",
    }
    values.update(changes)
    return PlatformInvoice(**values)


def test_the_horizon_is_measured_from_the_frozen_row() -> None:
    assert not horizon.passed(CREATED, NOW, None)
    assert horizon.passed(CREATED, NOW, 3600)
    assert not horizon.passed(CREATED, CREATED + timedelta(minutes=59), 3600)
    assert horizon.passed(CREATED, CREATED + timedelta(hours=1), 3600)


def test_the_search_names_seller_buyer_gross_and_the_platforms_dates() -> None:
    w = wanted()
    q = w.query
    assert q.seller_tax_id == samples.SELLER_TAX_ID
    assert q.buyer_tax_id == samples.BUYER_TAX_ID
    assert (q.issued_from, q.issued_to) == (date(2026, 12, 2), date(2026, 12, 3))  # Beijing
    assert q.gross_amount == Decimal(payload()["totals"]["gross_amount"])
    assert w.net + w.tax == q.gross_amount
    early = horizon.search_for(payload(issue_date="2026-11-27"), CREATED, NOW)
    assert early.query.issued_from == date(2026, 11, 27)
    natural = horizon.search_for(payload(buyer={"name": "Wang Wu"}), CREATED, NOW)
    assert natural.query.buyer_tax_id is None and natural.buyer_name == "Wang Wu"


def test_a_payload_that_is_not_an_invoice_cannot_be_searched() -> None:
    with pytest.raises(ValueError, match="seller"):
        horizon.search_for({}, CREATED, NOW)
    with pytest.raises(ValueError, match="totals"):
        horizon.search_for(payload(totals={}), CREATED, NOW)


def test_one_exact_match_is_adopted_as_the_issue_result() -> None:
    invoice = listed()
    judgement = horizon.judge(wanted(), SERIAL, [invoice], {})
    assert judgement.verdict == "ADOPTED" and judgement.invoice == invoice
    result = horizon.adopted(SERIAL, invoice)
    assert isinstance(result, Issued)
    assert (result.serial, result.invoice_no, result.kind) == (SERIAL, invoice.invoice_no, "BLUE")
    assert result.totals == invoice.totals
    assert datetime.fromisoformat(result.issued_at) == invoice.issued_at
    assert judgement.evidence["matches"] == [invoice.invoice_no]
    assert judgement.evidence["searched"]["buyer_tax_id"] == samples.BUYER_TAX_ID


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"kind": "RED"}, "a red invoice"),
        ({"state": "REVERSED"}, "reversed at the platform"),
        ({"serial": "SOMEONEELSE0001"}, "issued under serial SOMEONEELSE0001"),
        ({"buyer_tax_id": samples.OTHER_VALID_TAX_ID}, "another buyer tax ID"),
        ({"buyer_name": "Other Ltd."}, "another buyer name"),
        ({"seller_tax_id": samples.OTHER_VALID_TAX_ID}, "another seller"),
        ({"invoice_type": "ORDINARY"}, "another invoice type"),
        (
            {"issued_at": datetime(2026, 12, 1, 9, 0, tzinfo=horizon.PLATFORM_TZ)},
            "issued before",
        ),
    ],
)
def test_anything_but_an_exact_match_is_named_and_not_adopted(
    changes: dict[str, Any], why: str
) -> None:
    judgement = horizon.judge(wanted(), SERIAL, [listed(**changes)], {})
    assert judgement.verdict == "NO_MATCH" and judgement.invoice is None
    assert judgement.evidence["found"][0]["mismatch"] == why


def test_amounts_must_agree_to_the_cent_net_and_tax_too() -> None:
    w = wanted()
    gross = w.query.gross_amount or Decimal(0)
    shifted = Totals(w.net + Decimal("0.01"), w.tax - Decimal("0.01"), gross)
    judgement = horizon.judge(w, SERIAL, [listed(totals=shifted)], {})
    assert judgement.evidence["found"][0]["mismatch"] == "other amounts"


def test_an_invoice_another_ledger_document_holds_is_not_ours() -> None:
    invoice = listed()
    held = {invoice.invoice_no: "SOTHERDOCUMENT01"}
    judgement = horizon.judge(wanted(), SERIAL, [invoice], held)
    assert judgement.verdict == "NO_MATCH"
    assert "already held by ledger document SOTHERDOCUMENT01" in horizon.summary(judgement.evidence)
    again = horizon.judge(wanted(), SERIAL, [invoice], {invoice.invoice_no: SERIAL})
    assert again.verdict == "ADOPTED"  # recorded by this very document


def test_two_matches_are_ambiguous_unless_one_carries_our_serial() -> None:
    a, b = listed(), listed(invoice_no="26312000000000000043")
    judgement = horizon.judge(wanted(), SERIAL, [a, b], {})
    assert judgement.verdict == "AMBIGUOUS" and judgement.invoice is None
    assert judgement.evidence["matches"] == [a.invoice_no, b.invoice_no]
    parked = horizon.parked(SERIAL, judgement)
    assert isinstance(parked, NeedsHuman) and parked.reason.code == horizon.AMBIGUOUS
    assert "several invoices match" in parked.reason.message
    ours = listed(invoice_no="26312000000000000044", serial=SERIAL)
    assert horizon.judge(wanted(), SERIAL, [a, ours, b], {}).invoice == ours


def test_the_parked_reason_says_what_was_searched_and_found() -> None:
    nothing = horizon.judge(wanted(), SERIAL, [], {})
    parked = horizon.parked(SERIAL, nothing)
    assert parked.reason.code == horizon.NO_MATCH
    text = parked.reason.message
    assert SERIAL in text and samples.SELLER_TAX_ID in text and samples.BUYER_TAX_ID in text
    assert "2026-12-02..2026-12-03" in text and "found no invoice" in text
    assert "nothing re-sent" in text
    many = [listed(invoice_no=f"2631200000000000{n:04d}", kind="RED") for n in range(12)]
    text = horizon.summary(horizon.judge(wanted(), SERIAL, many, {}).evidence)
    assert "found 12:" in text and "and 2 more" in text
