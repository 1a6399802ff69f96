"""Canonical invoices (docs/invoice-format.md) for the sandbox tests.

Amounts are computed here the way the format prescribes (half-up per line,
totals = sums of rounded lines) -- independently of both syncd's builder and
the sandbox's checks.
"""

from __future__ import annotations

import copy
import itertools
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

VALID_BUYER_USCC = "91110108MA01ABCD2H"  # mod-31 check character verified by stdnum too
SELLER_USCC = "91310115MA1K4PLN89"
CENT = Decimal("0.01")

_counter = itertools.count(1)


def new_serial(prefix: str = "T") -> str:
    return f"{prefix}{next(_counter):08d}{id(_counter) % 10**6:06d}".upper()[:32]


def _r(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def line(
    name: str,
    qty: str,
    price: str,
    rate: str,
    *,
    no: int = 1,
    tax_code: str = "3040201000000000000",
    nature: str = "NORMAL",
) -> dict[str, Any]:
    net = _r(Decimal(qty) * Decimal(price))
    tax = _r(net * Decimal(rate))
    return {
        "line_no": no,
        "nature": nature,
        "name": name,
        "tax_code": tax_code,
        "spec": None,
        "unit": "hour",
        "quantity": qty,
        "unit_price": price,
        "net_amount": str(net),
        "tax_rate": rate,
        "tax_amount": str(tax),
        "gross_amount": str(net + tax),
        "tax_policy": None,
    }


def discount(of: dict[str, Any], amount: str, *, no: int) -> dict[str, Any]:
    net = -Decimal(amount)
    tax = _r(net * Decimal(of["tax_rate"]))
    return {
        **of,
        "line_no": no,
        "nature": "DISCOUNT",
        "quantity": None,
        "unit_price": None,
        "net_amount": str(net),
        "tax_amount": str(tax),
        "gross_amount": str(net + tax),
    }


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """Recompute breakdown and totals from the lines (call after editing lines)."""
    by_rate: dict[Decimal, list[Decimal]] = {}
    for ln in doc["lines"]:
        acc = by_rate.setdefault(Decimal(ln["tax_rate"]), [Decimal("0.00"), Decimal("0.00")])
        acc[0] += Decimal(ln["net_amount"])
        acc[1] += Decimal(ln["tax_amount"])
    doc["tax_breakdown"] = [
        {"tax_rate": str(rate), "net_amount": str(n), "tax_amount": str(t)}
        for rate, (n, t) in sorted(by_rate.items())
    ]
    net = sum((Decimal(ln["net_amount"]) for ln in doc["lines"]), Decimal("0.00"))
    tax = sum((Decimal(ln["tax_amount"]) for ln in doc["lines"]), Decimal("0.00"))
    doc["totals"] = {"net_amount": str(net), "tax_amount": str(tax), "gross_amount": str(net + tax)}
    return doc


def invoice(
    serial: str | None = None,
    *,
    invoice_type: str = "ORDINARY",
    lines: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "serial": serial or new_serial(),
        "kind": "BLUE",
        "invoice_type": invoice_type,
        "original_invoice_no": None,
        "reversal_reason": None,
        "currency": "CNY",
        "price_basis": "TAX_EXCLUSIVE",
        "issue_date": None,
        "seller": {
            "name": "Acme Trading Co., Ltd.",
            "tax_id": SELLER_USCC,
            "address": "1 Century Ave, Shanghai",
            "phone": "021-5555 0000",
            "bank_name": "Bank of China Shanghai Branch",
            "bank_account": "4567 8901 2345",
        },
        "buyer": {
            "name": "Example Buyer Ltd.",
            "tax_id": VALID_BUYER_USCC,
            "address": None,
            "phone": None,
            "bank_name": None,
            "bank_account": None,
            "email": "ap@example.com",
            "natural_person": False,
        },
        "drawer": "Li Lei",
        "payee": None,
        "reviewer": None,
        "remark": "SO-2026-000042",
        "lines": lines or [line("Consulting service", "2", "82.57", "0.09")],
        "source": {
            "document": "sales_order",
            "table": "erp.sales_order",
            "key": {"id": 42},
            "revision": 0,
        },
    }
    doc.update(overrides)
    return finish(doc)


def variant(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)
