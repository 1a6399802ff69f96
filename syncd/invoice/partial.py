"""Partial red-letter invoices: returning some units of one line of a blue invoice.

Invariant protected here: for every line of a blue invoice, the quantities and the amounts
(net, tax, gross) of all its red invoices together never exceed the blue line's. A 数电
platform refuses a red invoice that would (and a finance team would have to undo it by
hand), so syncd checks it before anything is sent, with a sentence the ERP can show.

Amounts of a partial return are the blue line's amounts pro rata (half-up to cents,
following the line's price basis), except for the return that brings the line to its full
quantity: it takes exactly what is left, so the reds of a fully returned line add up to the
blue line to the cent. Pure: invoices in, invoice (or a `ReturnRefusedError`) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from syncd.errors import DocumentError
from syncd.invoice.model import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    LineNature,
    PriceBasis,
    ReversalReason,
)
from syncd.invoice.taxmath import round_money, tax_breakdown, totals

__all__ = [
    "ReturnRefusedError",
    "Returned",
    "build_partial_red",
    "build_partial_red_lines",
    "returned_so_far",
]


class ReturnRefusedError(DocumentError, ValueError):
    """A return that cannot become a red invoice (unknown line, too many units, ...)."""


@dataclass(frozen=True, slots=True)
class Returned:
    """What the red invoices so far took from one blue line (positive numbers)."""

    quantity: Decimal = Decimal(0)
    net: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    gross: Decimal = Decimal(0)

    def plus(self, line: InvoiceLine) -> Returned:
        return Returned(
            self.quantity - (line.quantity or Decimal(0)),
            self.net - line.net_amount,
            self.tax - line.tax_amount,
            self.gross - line.gross_amount,
        )


def returned_so_far(reds: Iterable[Invoice]) -> dict[int, Returned]:
    """Blue line number -> what the red invoices `reds` (full or partial) returned of it."""
    out: dict[int, Returned] = {}
    for red in reds:
        if red.kind is not InvoiceKind.RED:
            continue
        for line in red.lines:
            out[line.line_no] = out.get(line.line_no, Returned()).plus(line)
    return out


def build_partial_red(
    blue: Invoice,
    *,
    line_no: int,
    quantity: Decimal,
    before: Returned,
    serial: str,
    original_invoice_no: str,
    reason: ReversalReason,
) -> Invoice:
    """The red invoice returning `quantity` units of the blue invoice's line `line_no`
    (its position on the blue invoice), given what earlier reds returned of it (`before`).

    Raises ReturnRefusedError with a readable message when the line does not exist, is a
    discount line or is followed by one, the quantity is not positive, or the running
    total would exceed the blue line.
    """
    return build_partial_red_lines(
        blue,
        {line_no: quantity},
        before={line_no: before},
        serial=serial,
        original_invoice_no=original_invoice_no,
        reason=reason,
    )


def build_partial_red_lines(
    blue: Invoice,
    quantities: Mapping[int, Decimal],
    *,
    before: Mapping[int, Returned],
    serial: str,
    original_invoice_no: str,
    reason: ReversalReason,
) -> Invoice:
    """One red invoice returning, of each blue line `line_no`, `quantities[line_no]`
    units (a credit note of several lines), given what earlier reds returned of each line
    (`before`). The same checks as `build_partial_red`, line by line; lines in blue order.
    """
    if blue.kind is not InvoiceKind.BLUE:
        raise ReturnRefusedError(
            f"only a blue invoice can be returned against, not {blue.kind.value}"
        )
    if not quantities:
        raise ReturnRefusedError("nothing to return: no line given")
    for line_no in quantities:
        if not any(ln.line_no == line_no for ln in blue.lines):
            raise ReturnRefusedError(
                f"invoice {original_invoice_no} has no line {line_no} (lines 1..{len(blue.lines)})"
            )
    lines = tuple(
        _red_line(
            blue,
            index,
            quantities[line.line_no],
            before.get(line.line_no, Returned()),
            original_invoice_no,
        )
        for index, line in enumerate(blue.lines)
        if line.line_no in quantities
    )
    return blue.model_copy(
        update={
            "serial": serial,
            "kind": InvoiceKind.RED,
            "original_invoice_no": original_invoice_no,
            "reversal_reason": reason,
            "issue_date": None,
            "lines": lines,
            "tax_breakdown": tuple(tax_breakdown(lines)),
            "totals": totals(lines),
        }
    )


def _red_line(
    blue: Invoice, index: int, quantity: Decimal, before: Returned, original_invoice_no: str
) -> InvoiceLine:
    line = blue.lines[index]
    line_no = line.line_no
    following = blue.lines[index + 1] if index + 1 < len(blue.lines) else None
    if line.nature is LineNature.DISCOUNT or (
        following is not None and following.nature is LineNature.DISCOUNT
    ):
        raise ReturnRefusedError(
            f"line {line_no} of invoice {original_invoice_no} carries a discount; "
            "return it in full (cancel the document) instead"
        )
    if not quantity.is_finite() or quantity <= 0:
        raise ReturnRefusedError(f"the returned quantity must be positive, got {quantity}")
    if line.quantity is None or line.unit_price is None:
        raise ReturnRefusedError(f"line {line_no} of invoice {original_invoice_no} has no quantity")
    total = line.quantity
    after = before.quantity + quantity
    if after > total:
        raise ReturnRefusedError(
            f"line {line_no} of invoice {original_invoice_no}: returning {_num(quantity)} "
            f"more would make {_num(after)} of {_num(total)} returned "
            f"({_num(before.quantity)} returned before)"
        )
    if after == total:  # the last units take exactly what is left
        net = line.net_amount - before.net
        tax = line.tax_amount - before.tax
        gross = line.gross_amount - before.gross
    else:
        share = quantity / total
        tax = round_money(line.tax_amount * share)
        if blue.price_basis is PriceBasis.TAX_INCLUSIVE:
            gross = round_money(line.gross_amount * share)
            net = gross - tax
        else:
            net = round_money(line.net_amount * share)
            gross = net + tax
    return line.model_copy(
        update={
            "quantity": -quantity,
            "net_amount": -net,
            "tax_amount": -tax,
            "gross_amount": -gross,
        }
    )


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")
