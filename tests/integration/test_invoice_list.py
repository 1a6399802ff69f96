"""The platform's own invoice list, through syncd's clients, over both sandbox dialects.

The contract every provider's `list_invoices` keeps (docs/issuers.md, "Listing"): every
issued invoice of the seller in the dates, each once, across pages and (Nuonuo) 10-day
windows; invoices issued by hand in the portal included, without a serial; a serial the
platform forgot still listed, without it; filters by buyer and gross total exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.invoice.model import InvoiceType
from syncd.issuers.base import (
    InvoiceLister,
    InvoiceListQuery,
    Issued,
    Issuer,
    IssueResult,
    NotFound,
    PlatformInvoice,
    Processing,
    ReversalRequest,
)
from syncd.issuers.nuonuo import BEIJING, NuonuoIssuer, NuonuoIssuerSettings, order_payload
from syncd.issuers.sandbox import SandboxIssuer
from tests.integration.sandbox_process import SandboxProcess
from tests.unit import invoice_samples as samples

pytestmark = pytest.mark.integration

DIALECTS = ("idempotent", "nuonuo")
OTHER_BUYER = samples.OTHER_VALID_TAX_ID


class Platform:
    """One sandbox dialect and syncd's client for it."""

    def __init__(self, process: SandboxProcess) -> None:
        self.process = process
        self.dialect = process.dialect
        self.client: SandboxIssuer | NuonuoIssuer
        if self.dialect == "nuonuo":
            self.client = NuonuoIssuer(
                NuonuoIssuerSettings(
                    base_url=process.url,
                    app_key=DEV_APP_KEY,
                    app_secret=DEV_APP_SECRET,  # type: ignore[arg-type]
                    seller_tax_id=samples.SELLER_TAX_ID,
                    read_timeout=5.0,
                )
            )
        else:
            self.client = process.client()

    def listed(self, **query: Any) -> list[PlatformInvoice]:
        today = datetime.now(BEIJING).date()
        args: dict[str, Any] = {
            "seller_tax_id": samples.SELLER_TAX_ID,
            "issued_from": today,
            "issued_to": today,
        }
        args.update(query)
        return list(self.client.list_invoices(InvoiceListQuery(**args)))

    def portal_entry(
        self, invoice: dict[str, Any], issued_at: datetime | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.dialect == "nuonuo":
            order = order_payload(invoice, now=datetime.now(UTC))["order"]
            order.pop("orderNo")
            body["order"] = order
        else:
            body["invoice"] = {k: v for k, v in invoice.items() if k != "serial"}
        if issued_at is not None:
            body["issued_at"] = issued_at.isoformat()
        return body

    def portal(self, *entries: dict[str, Any]) -> None:
        """Invoices issued by hand in the platform's portal (one request, all or none)."""
        response = self.process.control("POST", "/_sandbox/portal-invoices", json=list(entries))
        assert response.status_code == 201, response.text
        assert len(response.json()["invoices"]) == len(entries)

    def settle(self, serial: str, *, reversal: bool = False) -> IssueResult:
        query = self.client.query_reversal if reversal else self.client.query
        deadline = time.monotonic() + 20
        while True:
            result = query(serial)
            if not isinstance(result, Processing) or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def issue(self, invoice: dict[str, Any]) -> Issued:
        self.client.issue(invoice)
        result = self.settle(invoice["serial"])
        assert isinstance(result, Issued), result
        return result


@pytest.fixture(params=DIALECTS)
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    process = SandboxProcess(store=tmp_path / "platform.db", dialect=request.param).start()
    platform = Platform(process)
    try:
        yield platform
    finally:
        platform.client.close()
        process.stop()


def invoice(
    n: int, *, quantity: int = 2, buyer_tax_id: str = samples.BUYER_TAX_ID
) -> dict[str, Any]:
    doc = samples.blue(
        [samples.line("Consulting service", str(quantity), "100.00", "0.06")],
        invoice_type=InvoiceType.ORDINARY,
        buyer=samples.buyer(tax_id=buyer_tax_id),
        issue_date=None,
    )
    data: dict[str, Any] = json.loads(doc.to_json())
    data["serial"] = f"SLIST{n:011d}"
    return data


def test_issued_and_portal_invoices_are_listed_with_what_reconcile_needs(
    platform: Platform,
) -> None:
    assert isinstance(platform.client, InvoiceLister)
    assert isinstance(platform.client, Issuer)
    first = platform.issue(invoice(1, quantity=2))
    second = platform.issue(invoice(2, quantity=3, buyer_tax_id=OTHER_BUYER))
    platform.portal(platform.portal_entry(invoice(3, quantity=5)))

    listed = platform.listed()
    assert len(listed) == 3
    by_no = {i.invoice_no: i for i in listed}
    one = by_no[first.invoice_no]
    assert one.serial == invoice(1)["serial"]
    assert one.kind == "BLUE" and one.state == "ISSUED" and one.invoice_type == "ORDINARY"
    assert one.buyer_tax_id == samples.BUYER_TAX_ID
    assert one.buyer_name == "Example Buyer Ltd."
    assert one.seller_tax_id == samples.SELLER_TAX_ID
    assert (one.totals.net_amount, one.totals.tax_amount, one.totals.gross_amount) == (
        Decimal("200.00"),
        Decimal("12.00"),
        Decimal("212.00"),
    )
    assert one.issued_at.date() == datetime.now(BEIJING).date()
    assert first.totals is not None and one.totals == first.totals
    assert by_no[second.invoice_no].buyer_tax_id == OTHER_BUYER
    (by_hand,) = [i for i in listed if i.invoice_no not in (first.invoice_no, second.invoice_no)]
    assert by_hand.serial is None and by_hand.totals.gross_amount == Decimal("530.00")

    # the filters are exact
    assert {i.invoice_no for i in platform.listed(buyer_tax_id=OTHER_BUYER)} == {second.invoice_no}
    assert [i.serial for i in platform.listed(gross_amount=Decimal("212.00"))] == [
        invoice(1)["serial"]
    ]
    assert platform.listed(gross_amount=Decimal("212.01")) == []
    yesterday = datetime.now(BEIJING).date() - timedelta(days=1)
    assert platform.listed(issued_from=yesterday, issued_to=yesterday) == []


def test_every_invoice_once_across_pages_and_windows(platform: Platform) -> None:
    """105 invoices by hand over 23 days: more than one page (50 / 100) and, for Nuonuo,
    three 10-day windows; the first and last day of the range count."""
    today = datetime.now(BEIJING).date()
    start = today - timedelta(days=22)
    entries = []
    for n in range(105):
        day = start + timedelta(days=n % 23)
        moment = datetime(day.year, day.month, day.day, 12, 0, tzinfo=BEIJING)
        entries.append(platform.portal_entry(invoice(100 + n, quantity=1 + n), moment))
    platform.portal(*entries)
    listed = platform.listed(issued_from=start, issued_to=today)
    assert len(listed) == 105
    assert len({i.invoice_no for i in listed}) == 105
    assert sorted(i.totals.gross_amount for i in listed) == [
        Decimal(106 * (1 + n)).quantize(Decimal("0.01")) for n in range(105)
    ]
    first_day = platform.listed(issued_from=start, issued_to=start)
    assert len(first_day) == len(range(0, 105, 23))
    assert all(i.issued_at.date() == start for i in first_day)


def test_a_forgotten_serial_is_not_found_but_still_listed(platform: Platform) -> None:
    platform.process.set_faults(forget_next_serials=1)
    forgotten = invoice(7, quantity=4)
    platform.client.issue(forgotten)
    remembered = platform.issue(invoice(8, quantity=6))
    listed = {i.totals.gross_amount: i for i in platform.listed()}
    assert listed[Decimal("424.00")].serial is None  # 4 × 106
    assert listed[Decimal("636.00")].serial == invoice(8)["serial"]
    assert listed[Decimal("636.00")].invoice_no == remembered.invoice_no
    assert isinstance(platform.client.query(forgotten["serial"]), NotFound)


def test_a_reversal_is_listed_as_a_red_invoice_of_its_blue_one(platform: Platform) -> None:
    blue = platform.issue(invoice(9))
    red_serial = "RLIST00000000009"
    request = ReversalRequest(
        red_serial, blue.invoice_no, "SALES_RETURN", invoice=_red_of(invoice(9), red_serial)
    )
    platform.client.reverse(request)
    red = platform.settle(red_serial, reversal=True)
    assert isinstance(red, Issued), red
    listed = {i.invoice_no: i for i in platform.listed()}
    listed_red = listed[red.invoice_no]
    assert listed_red.kind == "RED" and listed_red.original_invoice_no == blue.invoice_no
    assert listed_red.totals.gross_amount == Decimal("-212.00")
    assert listed_red.serial == red_serial
    if platform.dialect != "nuonuo":  # Nuonuo's list names no reversal on the blue item
        assert listed[blue.invoice_no].state == "REVERSED"
        assert listed[blue.invoice_no].red_invoice_no == red.invoice_no


def _red_of(blue: dict[str, Any], serial: str) -> dict[str, Any]:
    return {**blue, "serial": serial, "kind": "RED"}


def test_a_bad_range_is_refused_before_asking() -> None:
    with pytest.raises(ValueError, match="before"):
        InvoiceListQuery(samples.SELLER_TAX_ID, date(2026, 12, 2), date(2026, 12, 1))
