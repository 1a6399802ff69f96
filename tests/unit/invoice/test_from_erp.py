import json
from decimal import Decimal

import pytest

from syncd.changes import UNAVAILABLE
from syncd.config import TaxRateUnit
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.invoice.from_erp import build_blue, build_red
from syncd.invoice.model import InvoiceKind, ReversalReason
from syncd.rules.decide import decide
from tests.unit.config_helpers import ROOT, demo_config, line_row, order_row, update

D = Decimal
BLUE_NO = "26312000000000000042"


@pytest.fixture(scope="module")
def doc():
    return demo_config().documents["sales_order"]


def ident(kind: DocumentKind = DocumentKind.ISSUE) -> DocumentIdentity:
    return DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)], kind)


def expected_example() -> dict:
    """The example of docs/invoice-format.md, with the demo seller and buyer."""
    text = (ROOT / "docs" / "invoice-format.md").read_text(encoding="utf-8")
    start = text.index("```json\n") + len("```json\n")
    example = json.loads(text[start : text.index("```", start)])
    example["serial"] = serial_for(ident())
    example["issue_date"] = None
    example["seller"]["tax_id"] = "91310115MA1K4PLN89"
    example["buyer"]["tax_id"] = "91110108MA01ABCD2H"
    example["drawer"] = None
    return example


def test_demo_order_becomes_the_documented_invoice(doc):
    ev = update(order_row(), status="CONFIRMED")
    decision = decide(ev, doc)
    result = build_blue(doc, ev.after, [line_row()], decision.identity)
    assert result.problems == ()
    assert result.ok
    assert result.invoice.model_dump(mode="json") == expected_example()


def test_tax_inclusive_prices_and_percent_rates(doc):
    percent = doc.model_copy(deep=True)
    percent.lines.tax_rate_unit = TaxRateUnit.PERCENT
    row = order_row(price_includes_tax=True)
    lines = [line_row(quantity=D("2"), unit_price=D("90"), tax_rate=D("9"))]
    result = build_blue(percent, row, lines, ident())
    assert result.ok, result.summary()
    (line,) = result.invoice.lines
    assert result.invoice.price_basis == "TAX_INCLUSIVE"
    assert (line.net_amount, line.tax_amount, line.gross_amount) == (
        D("165.14"),
        D("14.86"),
        D("180.00"),
    )
    assert line.tax_rate == D("0.09")


def test_discount_becomes_a_discount_line(doc):
    result = build_blue(doc, order_row(), [line_row(discount_amount=D("10.00"))], ident())
    assert result.ok, result.summary()
    assert [line.nature for line in result.invoice.lines] == ["DISCOUNTED", "DISCOUNT"]
    assert result.invoice.totals.net_amount == D("155.14")


def test_lines_keep_their_order_and_text_numbers_are_read_exactly(doc):
    lines = [
        line_row(line_no=1),
        line_row(
            line_no=2, item_name="Travel", quantity="1", unit_price="100.005", tax_rate="0.06"
        ),
    ]
    result = build_blue(doc, order_row(), lines, ident())
    assert result.ok, result.summary()
    assert [line.name for line in result.invoice.lines] == ["Consulting service", "Travel"]
    assert result.invoice.lines[1].net_amount == D("100.01")


def test_header_problems_are_readable(doc):
    row = order_row(buyer_name=None, invoice_type="SPECAL", price_includes_tax="maybe")
    result = build_blue(doc, row, [line_row()], ident())
    assert result.invoice is None
    assert [str(p) for p in result.problems] == [
        "header.buyer.name: column buyer_name is NULL",
        "header.invoice_type: column invoice_type: 'SPECAL' is not one of SPECIAL, ORDINARY",
        "header.price_basis: value 'maybe' is not in map (True, False)",
    ]


def test_missing_and_unavailable_columns(doc):
    row = order_row(buyer_email=UNAVAILABLE)
    del row["currency"]
    result = build_blue(doc, row, [line_row()], ident())
    assert [p.code for p in result.problems] == ["MISSING", "MISSING"]
    messages = result.summary()
    assert "header.buyer.email: column buyer_email was not sent by Debezium" in messages
    assert "header.currency: column currency is not in the row" in messages


def test_line_problems_name_the_line(doc):
    lines = [line_row(), line_row(line_no=2, quantity=None, unit_price="abc", tax_code=True)]
    result = build_blue(doc, order_row(), lines, ident())
    assert result.invoice is None
    assert [str(p) for p in result.problems] == [
        "lines[2].tax_code: column tax_code: expected text, got bool",
        "lines[2].quantity: column quantity is NULL",
        "lines[2].unit_price: column unit_price: 'abc' is not a number",
    ]


def test_no_lines(doc):
    result = build_blue(doc, order_row(), [], ident())
    assert [p.code for p in result.problems] == ["NO_LINES"]


def test_validation_problems_keep_the_invoice_for_display(doc):
    result = build_blue(doc, order_row(buyer_tax_id=None), [line_row()], ident())
    assert result.invoice is not None
    assert not result.ok
    assert [p.code for p in result.problems] == ["BUYER_TAX_ID_REQUIRED"]


def test_tax_math_errors_are_problems(doc):
    result = build_blue(doc, order_row(), [line_row(tax_rate=D("1.5"))], ident())
    assert [p.code for p in result.problems] == ["TAX_MATH"]


def test_red_invoice_reverses_the_frozen_blue(doc):
    blue = build_blue(doc, order_row(), [line_row()], ident()).invoice
    row = order_row(
        status="CANCELLED",
        invoice_no=BLUE_NO,
        cancel_reason="RETURN",
        buyer_name="Edited Later Ltd.",
    )
    result = build_red(doc, row, blue, BLUE_NO, ident(DocumentKind.REVERSAL))
    assert result.ok, result.summary()
    red = result.invoice
    assert red.kind is InvoiceKind.RED
    assert red.original_invoice_no == BLUE_NO
    assert red.reversal_reason is ReversalReason.SALES_RETURN
    assert red.buyer.name == "Example Buyer Ltd."  # from the frozen blue, not the edited row
    assert red.totals.gross_amount == D("-180.00")
    assert red.serial == serial_for(ident(DocumentKind.REVERSAL)) != blue.serial


def test_red_reason_default_and_unknown(doc):
    blue = build_blue(doc, order_row(), [line_row()], ident()).invoice
    rev = ident(DocumentKind.REVERSAL)
    default = build_red(doc, order_row(cancel_reason="whatever"), blue, BLUE_NO, rev)
    assert default.invoice.reversal_reason is ReversalReason.INVOICING_ERROR
    null = build_red(doc, order_row(cancel_reason=None), blue, BLUE_NO, rev)
    assert null.invoice.reversal_reason is ReversalReason.INVOICING_ERROR
    with pytest.raises(ValueError, match="REVERSAL identity"):
        build_red(doc, order_row(), blue, BLUE_NO, ident())
