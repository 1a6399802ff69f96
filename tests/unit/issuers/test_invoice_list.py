"""The pure parts of listing a platform's invoices: queries, pages, items, windows."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from syncd.issuers import nuonuo, sandbox
from syncd.issuers.base import (
    InvoiceListQuery,
    NeedsHuman,
    PlatformInvoice,
    Reason,
    Retryable,
    Totals,
    listing_error,
)

BEIJING = timezone(timedelta(hours=8))
SELLER = "91310115MA1K4PLN89"
BUYER = "91110108MA01ABCD2H"


def listed(**changes: object) -> PlatformInvoice:
    values: dict[str, object] = {
        "invoice_no": "26312000000000000042",
        "kind": "BLUE",
        "issued_at": datetime(2026, 12, 3, 23, 30, tzinfo=BEIJING),
        "totals": Totals(Decimal("200.00"), Decimal("12.00"), Decimal("212.00")),
        "seller_tax_id": SELLER,
        "buyer_tax_id": BUYER,
    }
    values.update(changes)
    return PlatformInvoice(**values)  # type: ignore[arg-type]


def test_a_query_matches_on_the_platforms_calendar_and_exact_amounts() -> None:
    day = InvoiceListQuery(SELLER, date(2026, 12, 3), date(2026, 12, 3))
    assert day.matches(listed())  # 23:30 Beijing is still the 3rd there
    assert not InvoiceListQuery(SELLER, date(2026, 12, 4), date(2026, 12, 4)).matches(listed())
    assert InvoiceListQuery(SELLER, date(2026, 12, 3), date(2026, 12, 3), BUYER).matches(listed())
    assert not InvoiceListQuery(
        SELLER, date(2026, 12, 3), date(2026, 12, 3), "91110000600037341L"
    ).matches(listed())
    exact = InvoiceListQuery(SELLER, date(2026, 12, 3), date(2026, 12, 3), None, Decimal("212"))
    assert exact.matches(listed())
    off = InvoiceListQuery(SELLER, date(2026, 12, 3), date(2026, 12, 3), None, Decimal("212.01"))
    assert not off.matches(listed())
    assert not day.matches(listed(seller_tax_id="91110000600037341L"))
    assert day.matches(listed(seller_tax_id=None))  # a platform that does not say


def test_a_range_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before"):
        InvoiceListQuery(SELLER, date(2026, 12, 3), date(2026, 12, 2))


def test_a_failed_page_needs_a_person_only_for_account_trouble() -> None:
    human = listing_error(NeedsHuman("", Reason("BAD_SIGNATURE", "signature mismatch")))
    assert not human.retryable and human.reason.code == "BAD_SIGNATURE"
    later = listing_error(Retryable("", Reason("HTTP_503", "down")))
    assert later.retryable and "HTTP_503" in str(later)


# --- the sandbox's dialect ---------------------------------------------------------------


def test_sandbox_list_path_carries_every_filter() -> None:
    query = InvoiceListQuery(SELLER, date(2026, 12, 1), date(2026, 12, 3), BUYER, Decimal("212.0"))
    target = sandbox.list_path(query, 2)
    parts = urlsplit(target)
    assert parts.path == "/v1/invoices"
    assert parse_qs(parts.query) == {
        "seller_tax_id": [SELLER],
        "issued_from": ["2026-12-01"],
        "issued_to": ["2026-12-03"],
        "buyer_tax_id": [BUYER],
        "gross_amount": ["212.0"],
        "page": ["2"],
        "page_size": ["100"],
    }


SANDBOX_ITEM = {
    "serial": "SX3F7Q2M9KD4HT6W1B8N5C0RJA",
    "invoice_no": "26312000000000000042",
    "kind": "BLUE",
    "invoice_type": "SPECIAL",
    "status": "REVERSED",
    "original_invoice_no": None,
    "red_invoice_no": "26312000000000000043",
    "issued_at": "2026-12-03T23:30:00+08:00",
    "seller_tax_id": SELLER,
    "buyer_tax_id": BUYER,
    "buyer_name": "Example Buyer Ltd.",
    "totals": {"net_amount": "200.00", "tax_amount": "12.00", "gross_amount": "212.00"},
}


def test_sandbox_page_maps_every_field() -> None:
    body = json.dumps({"page": 1, "page_size": 100, "total": 1, "invoices": [SANDBOX_ITEM]})
    answer = sandbox.classify_list_page(200, {}, body.encode())
    assert isinstance(answer, tuple)
    total, (item,) = answer
    assert total == 1
    assert item == PlatformInvoice(
        invoice_no="26312000000000000042",
        kind="BLUE",
        issued_at=datetime(2026, 12, 3, 23, 30, tzinfo=BEIJING),
        totals=Totals(Decimal("200.00"), Decimal("12.00"), Decimal("212.00")),
        state="REVERSED",
        serial="SX3F7Q2M9KD4HT6W1B8N5C0RJA",
        red_invoice_no="26312000000000000043",
        seller_tax_id=SELLER,
        buyer_tax_id=BUYER,
        buyer_name="Example Buyer Ltd.",
        invoice_type="SPECIAL",
    )
    assert isinstance(item.totals.gross_amount, Decimal)


def test_sandbox_portal_item_has_no_serial() -> None:
    body = json.dumps({"total": 1, "invoices": [{**SANDBOX_ITEM, "serial": None}]}).encode()
    answer = sandbox.classify_list_page(200, {}, body)
    assert isinstance(answer, tuple) and answer[1][0].serial is None


@pytest.mark.parametrize(
    "item",
    [
        {**SANDBOX_ITEM, "totals": {"net_amount": "x"}},
        {**SANDBOX_ITEM, "kind": "GREEN"},
        {**SANDBOX_ITEM, "status": "LOST"},
        {k: v for k, v in SANDBOX_ITEM.items() if k != "invoice_no"},
    ],
)
def test_sandbox_an_unreadable_item_fails_the_page(item: dict[str, object]) -> None:
    body = json.dumps({"total": 1, "invoices": [item]}).encode()
    answer = sandbox.classify_list_page(200, {}, body)
    assert isinstance(answer, Retryable) and answer.reason.code == "GARBLED_LIST"


def test_sandbox_refusals_keep_their_taxonomy() -> None:
    bad_key = json.dumps({"code": "UNKNOWN_APP_KEY", "message": "no"}).encode()
    assert isinstance(sandbox.classify_list_page(401, {}, bad_key), NeedsHuman)
    down = json.dumps({"code": "INTERNAL_ERROR", "message": ""}).encode()
    assert isinstance(sandbox.classify_list_page(503, {}, down), Retryable)


# --- Nuonuo ------------------------------------------------------------------------------


def test_nuonuo_windows_are_at_most_ten_days_and_cover_the_range() -> None:
    query = InvoiceListQuery(SELLER, date(2026, 11, 10), date(2026, 12, 2))
    assert nuonuo.list_windows(query) == [
        (date(2026, 11, 10), date(2026, 11, 19)),
        (date(2026, 11, 20), date(2026, 11, 29)),
        (date(2026, 11, 30), date(2026, 12, 2)),
    ]
    one = InvoiceListQuery(SELLER, date(2026, 12, 2), date(2026, 12, 2))
    assert nuonuo.list_windows(one) == [(date(2026, 12, 2), date(2026, 12, 2))]


def test_nuonuo_list_payload() -> None:
    assert nuonuo.list_payload(SELLER, date(2026, 11, 30), date(2026, 12, 2), 3) == {
        "taxnum": SELLER,
        "requestType": "0",
        "startTime": "2026-11-30 00:00:00",
        "endTime": "2026-12-02 23:59:59",
        "pageNo": "3",
        "pageSize": "50",
    }


NUONUO_ITEM = {
    "serialNo": "26120323300000000001",
    "orderNo": "SX3F7Q2M9KD4HT6W1B8N5C0RJA",
    "status": "2",
    "invoiceType": 1,
    "invoiceLine": "bs",
    "invoiceNo": "26312000000000000042",
    "allElectronicInvoiceNumber": "26312000000000000042",
    "invoiceTime": int(datetime(2026, 12, 3, 23, 30, tzinfo=BEIJING).timestamp() * 1000),
    "exTaxAmount": "200.00",
    "taxAmount": "12.00",
    "orderAmount": "212.00",
    "salerTaxNum": SELLER,
    "payerName": "Example Buyer Ltd.",
    "payerTaxNo": BUYER,
}


def envelope(items: list[dict[str, object]], total: int | None = None) -> nuonuo.Envelope:
    count = len(items) if total is None else total
    return nuonuo.Envelope("E0000", "", {"totalCount": count, "invoices": items})


def test_nuonuo_item_maps_every_field() -> None:
    answer = nuonuo.classify_list_page(envelope([NUONUO_ITEM]))
    assert isinstance(answer, tuple)
    assert answer == (
        1,
        [
            PlatformInvoice(
                invoice_no="26312000000000000042",
                kind="BLUE",
                issued_at=datetime(2026, 12, 3, 23, 30, tzinfo=BEIJING),
                totals=Totals(Decimal("200.00"), Decimal("12.00"), Decimal("212.00")),
                state="ISSUED",
                serial="SX3F7Q2M9KD4HT6W1B8N5C0RJA",
                seller_tax_id=SELLER,
                buyer_tax_id=BUYER,
                buyer_name="Example Buyer Ltd.",
                invoice_type="SPECIAL",
            )
        ],
    )


def test_nuonuo_red_voided_and_unfinished_items() -> None:
    red = {
        **NUONUO_ITEM,
        "invoiceType": "2",
        "allElectronicInvoiceNumber": "26312000000000000043",
        "oldEleInvoiceNumber": "26312000000000000042",
        "exTaxAmount": "-200.00",
        "taxAmount": "-12.00",
        "orderAmount": "-212.00",
    }
    by_hand = {k: v for k, v in NUONUO_ITEM.items() if k != "orderNo"}
    voided = {**NUONUO_ITEM, "status": "3", "allElectronicInvoiceNumber": "26312000000000000044"}
    issuing = {**NUONUO_ITEM, "status": "20"}
    answer = nuonuo.classify_list_page(envelope([red, by_hand, voided, issuing]))
    assert isinstance(answer, tuple)
    total, (r, h, v) = answer
    assert total == 4
    assert (r.kind, r.original_invoice_no, r.totals.gross_amount) == (
        "RED",
        "26312000000000000042",
        Decimal("-212.00"),
    )
    assert h.serial is None and h.kind == "BLUE" and h.original_invoice_no is None
    assert v.state == "VOIDED"


@pytest.mark.parametrize(
    "item",
    [
        {**NUONUO_ITEM, "orderAmount": None},
        {**NUONUO_ITEM, "invoiceTime": "yesterday"},
        {
            k: v
            for k, v in NUONUO_ITEM.items()
            if k not in ("invoiceNo", "allElectronicInvoiceNumber")
        },
    ],
)
def test_nuonuo_an_unreadable_issued_item_fails_the_page(item: dict[str, object]) -> None:
    answer = nuonuo.classify_list_page(envelope([item]))
    assert isinstance(answer, Retryable) and answer.reason.code == "GARBLED_LIST"


def test_nuonuo_refusals() -> None:
    credential = nuonuo.classify_list_page(nuonuo.Envelope("070601", "signature mismatch", None))
    assert isinstance(credential, NeedsHuman)
    session = nuonuo.classify_list_page(nuonuo.Envelope("E9301", "session expired", None))
    assert isinstance(session, NeedsHuman)
    other = nuonuo.classify_list_page(nuonuo.Envelope("E9101", "endTime too far", None))
    assert isinstance(other, Retryable) and other.reason.code == "E9101"
    garbled = nuonuo.classify_list_page(nuonuo.Envelope("E0000", "", ["not", "an", "object"]))
    assert isinstance(garbled, Retryable) and garbled.reason.code == "GARBLED_LIST"
