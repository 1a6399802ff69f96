"""Partial red invoices: pro rata amounts, the last return takes what is left, and the
reds of a line never exceed it (property-tested)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.invoice.model import Invoice, InvoiceKind, PriceBasis, ReversalReason
from syncd.invoice.partial import (
    Returned,
    ReturnRefusedError,
    build_partial_red,
    returned_so_far,
)
from syncd.invoice.validation import validate
from tests.unit.invoice_samples import blue, line, with_discount

SERIAL = "SPARTIAL0000000000000000001"[:26]


def _red(invoice, line_no: int, quantity: str, before: Returned | None = None):  # type: ignore[no-untyped-def]
    return build_partial_red(
        invoice,
        line_no=line_no,
        quantity=Decimal(quantity),
        before=before or Returned(),
        serial=SERIAL,
        original_invoice_no="26312000000000000042",
        reason=ReversalReason.SALES_RETURN,
    )


def test_one_unit_of_the_second_line() -> None:
    inv = blue([line(), line("Training", "3", "100", "0.06")])
    red = _red(inv, 2, "1")
    assert red.kind is InvoiceKind.RED
    assert red.original_invoice_no == "26312000000000000042"
    assert [ln.line_no for ln in red.lines] == [2]  # the blue line it reverses
    (rl,) = red.lines
    assert rl.quantity == Decimal(-1)
    assert (rl.net_amount, rl.tax_amount, rl.gross_amount) == (
        Decimal("-100.00"),
        Decimal("-6.00"),
        Decimal("-106.00"),
    )
    assert red.totals.gross_amount == Decimal("-106.00")
    assert validate(red) == []


@pytest.mark.parametrize("basis", list(PriceBasis))
@settings(max_examples=60, deadline=None)
@given(
    quantity=st.integers(min_value=2, max_value=40),
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999"), places=2),
    cuts=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=6),
)
def test_returns_add_up_to_the_line_and_never_beyond(
    basis: PriceBasis, quantity: int, price: Decimal, cuts: list[int]
) -> None:
    inv = blue([line("Goods", str(quantity), str(price), "0.13")], basis=basis)
    blue_line = inv.lines[0]
    reds: list[Invoice] = []
    left = quantity
    for cut in cuts:
        units = min(cut, left - 1) if left > 1 else left
        if units <= 0:
            break
        before = returned_so_far(reds).get(1, Returned())
        red = _red(inv, 1, str(units), before)
        assert validate(red) == [], validate(red)
        reds.append(red)
        left -= units
    if left:
        reds.append(_red(inv, 1, str(left), returned_so_far(reds)[1]))
    done = returned_so_far(reds)[1]
    assert done.quantity == blue_line.quantity
    assert (done.net, done.tax, done.gross) == (
        blue_line.net_amount,
        blue_line.tax_amount,
        blue_line.gross_amount,
    )
    with pytest.raises(ReturnRefusedError, match="would make"):
        _red(inv, 1, "1", done)


def test_refusals_are_readable() -> None:
    inv = blue([line()])
    with pytest.raises(ReturnRefusedError, match="has no line 3"):
        _red(inv, 3, "1")
    with pytest.raises(ReturnRefusedError, match="must be positive"):
        _red(inv, 1, "0")
    with pytest.raises(ReturnRefusedError, match="returning 3 more would make 3 of 2"):
        _red(inv, 1, "3")
    with pytest.raises(ReturnRefusedError, match="carries a discount"):
        _red(with_discount(), 1, "1")


def test_a_full_red_counts_against_every_line() -> None:
    from tests.unit.invoice_samples import red_of

    inv = blue([line(), line("Training", "3", "100", "0.06")])
    done = returned_so_far([red_of(inv)])
    assert done[2].quantity == Decimal(3)
    with pytest.raises(ReturnRefusedError):
        _red(inv, 2, "1", done[2])
