"""Valid sample invoices for the invoice-model tests (plain values, no I/O)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from syncd.invoice.model import (
    Buyer,
    Invoice,
    InvoiceType,
    Party,
    PriceBasis,
    ReversalReason,
    SourceRef,
    TaxPolicy,
)
from syncd.invoice.taxmath import LineInput, build_invoice, build_red_invoice

# Valid unified social credit codes (check characters computed with stdnum.cn.uscc).
SELLER_TAX_ID = "91310115MA1K4PLN89"
BUYER_TAX_ID = "91110108MA01ABCD2H"
OTHER_VALID_TAX_ID = "91110000600037341L"  # from python-stdnum's own doctest
TAX_CODE = "3040201000000000000"
GOODS_CODE = "1090101000000000000"
BLUE_NO = "26312000000000000042"

D = Decimal


def seller() -> Party:
    return Party(
        name="Acme Trading Co., Ltd.",
        tax_id=SELLER_TAX_ID,
        address="1 Century Ave, Shanghai",
        phone="021-5555 0000",
        bank_name="Bank of China Shanghai Branch",
        bank_account="4567 8901 2345",
    )


def buyer(**changes: Any) -> Buyer:
    values: dict[str, Any] = {
        "name": "Example Buyer Ltd.",
        "tax_id": BUYER_TAX_ID,
        "email": "ap@example.com",
    }
    values.update(changes)
    return Buyer(**values)


def source(order_id: int = 42) -> SourceRef:
    return SourceRef(
        document="sales_order", table="erp.sales_order", key={"id": order_id}, revision=0
    )


def line(
    name: str = "Consulting service",
    quantity: str = "2",
    unit_price: str = "82.57",
    rate: str = "0.09",
    **extra: Any,
) -> LineInput:
    extra.setdefault("tax_code", TAX_CODE)
    extra.setdefault("unit", "hour")
    return LineInput(
        name=name, quantity=D(quantity), unit_price=D(unit_price), tax_rate=D(rate), **extra
    )


def blue(
    lines: list[LineInput] | None = None,
    basis: PriceBasis = PriceBasis.TAX_EXCLUSIVE,
    invoice_type: InvoiceType = InvoiceType.SPECIAL,
    **extra: Any,
) -> Invoice:
    extra.setdefault("issue_date", date(2026, 11, 27))
    extra.setdefault("drawer", "Li Lei")
    extra.setdefault("remark", "SO-2026-000042")
    return build_invoice(
        serial="SX3F7Q2M9KD4HT6W1B8N5C0RJA",
        invoice_type=invoice_type,
        seller=extra.pop("seller", seller()),
        buyer=extra.pop("buyer", buyer()),
        lines=lines if lines is not None else [line()],
        price_basis=basis,
        source=source(),
        **extra,
    )


def multi_rate() -> Invoice:
    return blue(
        [
            line(),
            line("Steel bolts M8", "1200", "0.3512", "0.13", unit="个", tax_code=GOODS_CODE),
            line("Training", "1", "1000", "0.06", spec="2 days"),
            line(
                "Export goods",
                "3",
                "99.99",
                "0",
                tax_policy=TaxPolicy.ZERO_RATE,
                tax_code=GOODS_CODE,
                unit="kg",
            ),
            line(
                "Exempt books",
                "10",
                "12.5",
                "0",
                tax_policy=TaxPolicy.EXEMPT,
                tax_code=GOODS_CODE,
                unit="件",
            ),
            line("Deposit handling", "1", "20", "0", tax_policy=TaxPolicy.NOT_TAXABLE),
        ]
    )


def with_discount(basis: PriceBasis = PriceBasis.TAX_EXCLUSIVE) -> Invoice:
    return blue(
        [
            line(
                "Laptop",
                "3",
                "4999",
                "0.13",
                unit="台",
                tax_code=GOODS_CODE,
                discount_amount=D("300"),
            ),
            line(),
        ],
        basis=basis,
    )


def red_of(invoice: Invoice) -> Invoice:
    return build_red_invoice(
        invoice,
        serial="SREDREDRED0000000000000001",
        original_invoice_no=BLUE_NO,
        reason=ReversalReason.SALES_RETURN,
    )
