"""Money and VAT maths: turns ERP line values into invoice lines, breakdown and totals.

Public API:
    LineInput                                   -- one ERP line, before tax maths
    build_lines(inputs, price_basis) -> list[InvoiceLine]
    tax_breakdown(lines) -> list[TaxSubtotal]   -- one entry per rate, ascending
    totals(lines) -> Totals                     -- sums of the rounded line values
    sum_by_rate(lines), sum_lines(lines)        -- the same sums as plain Decimals
    build_invoice(...) -> Invoice               -- a BLUE invoice
    build_red_invoice(blue, *, serial, original_invoice_no, reason) -> Invoice
    round_money(d) -> Decimal                   -- half-up (四舍五入) to 2 places
    line_tax_error(line) -> Decimal             -- net x rate - tax, the platforms' measure
    TAX_ERROR_LIMIT_LINE, TAX_ERROR_LIMIT_INVOICE, AMOUNT_TOLERANCE, DECIMAL_CONTEXT
    TaxMathError                                -- input that cannot be computed

Rounding follows the platforms: each line is rounded on its own, half-up to
cents, and every sum is a sum of rounded values (never a rounded sum), so the
header always equals what a finance user adds up from the printed lines.

Tax-exclusive prices:  net = round(qty x price), tax = round(net x rate).
Tax-inclusive prices:  gross = round(qty x price), net = round(gross / (1 + rate)),
                       tax = gross - net (180.00 at 9 % -> 165.14 + 14.86).

Discounts: a line with a discount becomes a DISCOUNTED line (the undiscounted
amounts) immediately followed by a DISCOUNT line with the same name, tax code,
rate and tax policy, negative amounts, and **no quantity and no unit price**
(null). The discount amount is in the same basis as the unit price: net for
tax-exclusive, gross for tax-inclusive; its tax is computed like any line's.

Per-invoice tax error: each line's |net x rate - tax| is at most half a cent
(x 1.13 for tax-inclusive lines), so an invoice can exceed the platforms'
1.27 limit on the *sum* of line errors only beyond ~225 lines all rounding the
same way. `build_lines` then moves single cents between tax and net/gross on
the lines with the largest error (each stays within 0.02, far inside the 0.06
line limit) until the sum is back inside the limit. Shorter invoices are never
adjusted, so they match a hand calculation exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from syncd.errors import DocumentError
from syncd.invoice.model import (
    Buyer,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceType,
    LineNature,
    Party,
    PriceBasis,
    ReversalReason,
    SourceRef,
    TaxPolicy,
    TaxSubtotal,
    Totals,
)

__all__ = [
    "AMOUNT_TOLERANCE",
    "DECIMAL_CONTEXT",
    "TAX_ERROR_LIMIT_INVOICE",
    "TAX_ERROR_LIMIT_LINE",
    "LineInput",
    "TaxMathError",
    "build_invoice",
    "build_lines",
    "build_red_invoice",
    "line_tax_error",
    "round_money",
    "sum_by_rate",
    "sum_lines",
    "tax_breakdown",
    "totals",
]

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
AMOUNT_TOLERANCE = Decimal("0.01")  # |qty x price - amount| per line
TAX_ERROR_LIMIT_LINE = Decimal("0.06")  # |net x rate - tax| per line
TAX_ERROR_LIMIT_INVOICE = Decimal("1.27")  # |sum of (net x rate - tax)| per invoice
#: a line moved by the invoice balancing stays within two cents of its exact tax (far inside
#: the platforms' per-line limit, so a balanced line never becomes a line error)
_BALANCED_LINE_ERROR = Decimal("0.02")

# Wide enough that products and quotients of bounded invoice values are exact
# (or, for a division, correct far beyond the cent) and never trap.
DECIMAL_CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP)
# The same settings, for calling the context's own methods (`_CTX.multiply(a, b)`) on the
# per-line hot path: identical results to the operators under `localcontext(DECIMAL_CONTEXT)`
# without entering and leaving a context for every amount. Only its flags change, and
# nothing reads them (traps act on each operation, not on accumulated flags).
_CTX = DECIMAL_CONTEXT.copy()
_ONE = Decimal(1)


class TaxMathError(DocumentError, ValueError):
    """An input line whose amounts cannot be computed at all (says which line and why)."""

    def __init__(self, index: int | None, reason: str) -> None:
        self.index = index
        self.reason = reason
        where = f"line {index + 1}: " if index is not None else ""
        super().__init__(f"{where}{reason}")


@dataclass(frozen=True, slots=True)
class LineInput:
    """One ERP line. `discount_amount` is in the price basis (net or gross), >= 0."""

    name: str
    tax_code: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    spec: str | None = None
    unit: str | None = None
    discount_amount: Decimal | None = None
    tax_policy: TaxPolicy | None = None


def round_money(value: Decimal) -> Decimal:
    """Half-up to cents; symmetric, so round_money(-x) == -round_money(x)."""
    result = value.quantize(CENT, rounding=ROUND_HALF_UP, context=_CTX)
    return result.copy_abs() if result.is_zero() else result


def line_tax_error(line: InvoiceLine) -> Decimal:
    """net x rate - tax, exact (not rounded): what the platforms limit per line and per invoice."""
    return _CTX.subtract(_CTX.multiply(line.net_amount, line.tax_rate), line.tax_amount)


def _split(
    amount: Decimal, rate: Decimal, price_basis: PriceBasis
) -> tuple[Decimal, Decimal, Decimal]:
    """(net, tax, gross) of one unrounded amount given in `price_basis`; sign-symmetric."""
    if price_basis is PriceBasis.TAX_EXCLUSIVE:
        net = round_money(amount)
        tax = round_money(_CTX.multiply(net, rate))
        return net, tax, _CTX.add(net, tax)
    gross = round_money(amount)
    net = round_money(_CTX.divide(gross, _CTX.add(_ONE, rate)))
    return net, _CTX.subtract(gross, net), gross


def _check_input(index: int, item: LineInput) -> None:
    for field in ("quantity", "unit_price", "tax_rate", "discount_amount"):
        value = getattr(item, field)
        if value is None and field == "discount_amount":
            continue
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TaxMathError(index, f"{field} must be a finite Decimal, got {value!r}")
    if item.tax_rate < 0 or item.tax_rate >= 1:
        raise TaxMathError(index, f"tax_rate must be a fraction in [0, 1), got {item.tax_rate}")
    if item.discount_amount is not None and item.discount_amount < 0:
        raise TaxMathError(index, f"discount_amount must not be negative: {item.discount_amount}")


def build_lines(inputs: Iterable[LineInput], price_basis: PriceBasis) -> list[InvoiceLine]:
    """Invoice lines for `inputs`, numbered from 1; a discounted input yields two lines.

    Raises TaxMathError only for values that cannot be computed (a float, a rate
    outside [0, 1), a negative discount). Everything else a platform would
    refuse (e.g. a discount larger than the line) is left for
    `syncd.invoice.validation.validate` to report in finance terms.
    """
    lines: list[InvoiceLine] = []
    for index, item in enumerate(inputs):
        _check_input(index, item)
        raw = _CTX.multiply(item.quantity, item.unit_price)
        net, tax, gross = _split(raw, item.tax_rate, price_basis)
        discount = round_money(item.discount_amount) if item.discount_amount is not None else ZERO
        lines.append(
            InvoiceLine(
                line_no=len(lines) + 1,
                nature=LineNature.DISCOUNTED if discount else LineNature.NORMAL,
                name=item.name,
                tax_code=item.tax_code,
                spec=item.spec,
                unit=item.unit,
                quantity=item.quantity,
                unit_price=item.unit_price,
                net_amount=net,
                tax_rate=item.tax_rate,
                tax_amount=tax,
                gross_amount=gross,
                tax_policy=item.tax_policy,
            )
        )
        if discount:
            d_net, d_tax, d_gross = _split(-discount, item.tax_rate, price_basis)
            lines.append(
                InvoiceLine(
                    line_no=len(lines) + 1,
                    nature=LineNature.DISCOUNT,
                    name=item.name,
                    tax_code=item.tax_code,
                    spec=None,
                    unit=None,
                    quantity=None,
                    unit_price=None,
                    net_amount=d_net,
                    tax_rate=item.tax_rate,
                    tax_amount=d_tax,
                    gross_amount=d_gross,
                    tax_policy=item.tax_policy,
                )
            )
    return _balance_tax_errors(lines, price_basis)


def _balance_tax_errors(lines: list[InvoiceLine], price_basis: PriceBasis) -> list[InvoiceLine]:
    """Bring |sum of line tax errors| within the invoice limit by moving single cents.

    Deterministic: the candidate order is by error size, then line number. Only
    NORMAL/DISCOUNTED lines with a positive rate are touched, so discount lines
    keep exactly mirroring their formula and zero-rate lines keep a zero tax.
    """
    total_error = ZERO
    for line in lines:
        total_error = _CTX.add(total_error, line_tax_error(line))
    if total_error.copy_abs() <= TAX_ERROR_LIMIT_INVOICE:  # exact, as abs() at 80 digits
        return lines
    with localcontext(DECIMAL_CONTEXT):
        # error > 0: tax too small, so raise tax by a cent on lines whose own error is > 0
        # first (it shrinks both errors); then, if those run out -- e.g. the discount lines
        # carry the error and their lines lean the other way -- on any other line whose
        # error stays within two cents after the move.
        direction = 1 if total_error > 0 else -1
        movable = [
            i
            for i, line in enumerate(lines)
            if line.nature is not LineNature.DISCOUNT and line.tax_rate > 0
        ]
        same_sign = sorted(
            (i for i in movable if line_tax_error(lines[i]) * direction > 0),
            key=lambda i: (-abs(line_tax_error(lines[i])), i),
        )
        others = sorted(
            (i for i in movable if line_tax_error(lines[i]) * direction <= 0),
            key=lambda i: (abs(line_tax_error(lines[i])), i),
        )
        result = list(lines)
        step = CENT * direction
        for i in (*same_sign, *others):
            if abs(total_error) <= TAX_ERROR_LIMIT_INVOICE:
                break
            line = result[i]
            if price_basis is PriceBasis.TAX_EXCLUSIVE:
                update = {
                    "tax_amount": line.tax_amount + step,
                    "gross_amount": line.gross_amount + step,
                }
            else:
                update = {
                    "tax_amount": line.tax_amount + step,
                    "net_amount": line.net_amount - step,
                }
            new_line = line.model_copy(update=update)
            if abs(line_tax_error(new_line)) > _BALANCED_LINE_ERROR:
                continue
            total_error += line_tax_error(new_line) - line_tax_error(line)
            result[i] = new_line
        return result


def sum_by_rate(lines: Iterable[InvoiceLine]) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(rate, net, tax) per distinct rate, ascending: the breakdown as plain values."""
    sums: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for line in lines:
        net, tax = sums.get(line.tax_rate, (ZERO, ZERO))
        sums[line.tax_rate] = (_CTX.add(net, line.net_amount), _CTX.add(tax, line.tax_amount))
    return [(rate, net, tax) for rate, (net, tax) in sorted(sums.items())]


def sum_lines(lines: Iterable[InvoiceLine]) -> tuple[Decimal, Decimal, Decimal]:
    """(net, tax, gross) summed over the lines: the totals as plain values."""
    net = tax = gross = ZERO
    for line in lines:
        net = _CTX.add(net, line.net_amount)
        tax = _CTX.add(tax, line.tax_amount)
        gross = _CTX.add(gross, line.gross_amount)
    return net, tax, gross


def tax_breakdown(lines: Iterable[InvoiceLine]) -> list[TaxSubtotal]:
    """One entry per distinct rate, ascending; sums of the rounded line values."""
    return [
        TaxSubtotal(tax_rate=rate, net_amount=net, tax_amount=tax)
        for rate, net, tax in sum_by_rate(lines)
    ]


def totals(lines: Iterable[InvoiceLine]) -> Totals:
    """Header totals: sums of the rounded line values."""
    net, tax, gross = sum_lines(lines)
    return Totals(net_amount=net, tax_amount=tax, gross_amount=gross)


def build_invoice(
    *,
    serial: str,
    invoice_type: InvoiceType,
    seller: Party,
    buyer: Buyer,
    lines: Sequence[LineInput],
    price_basis: PriceBasis,
    source: SourceRef,
    currency: str = "CNY",
    issue_date: date | None = None,
    drawer: str | None = None,
    payee: str | None = None,
    reviewer: str | None = None,
    remark: str | None = None,
) -> Invoice:
    """A BLUE invoice whose lines, breakdown and totals are consistent by construction."""
    built = build_lines(lines, price_basis)
    return Invoice(
        serial=serial,
        kind=InvoiceKind.BLUE,
        invoice_type=invoice_type,
        original_invoice_no=None,
        reversal_reason=None,
        currency=currency,
        price_basis=price_basis,
        issue_date=issue_date,
        seller=seller,
        buyer=buyer,
        drawer=drawer,
        payee=payee,
        reviewer=reviewer,
        remark=remark,
        lines=tuple(built),
        tax_breakdown=tuple(tax_breakdown(built)),
        totals=totals(built),
        source=source,
    )


def _negate(value: Decimal) -> Decimal:
    result = -value
    return result.copy_abs() if result.is_zero() else result


def build_red_invoice(
    blue: Invoice,
    *,
    serial: str,
    original_invoice_no: str,
    reason: ReversalReason,
    issue_date: date | None = None,
) -> Invoice:
    """The full reversal of `blue`: every amount and quantity negated, unit prices kept.

    That is how 数电 red invoices are written (negative quantity x positive
    price = negative amount). Discount lines therefore become *positive* in the
    red invoice; `syncd.invoice.validation` applies the discount sign rule mirrored for
    RED. The blue's parties, lines and source are kept; the issue date is the
    red one's own (null: the platform's date). Raises TaxMathError for a non-BLUE input.
    """
    if blue.kind is not InvoiceKind.BLUE:
        raise TaxMathError(None, f"only a blue invoice can be reversed, not {blue.kind.value}")
    red_lines = tuple(
        line.model_copy(
            update={
                "quantity": _negate(line.quantity) if line.quantity is not None else None,
                "net_amount": _negate(line.net_amount),
                "tax_amount": _negate(line.tax_amount),
                "gross_amount": _negate(line.gross_amount),
            }
        )
        for line in blue.lines
    )
    return blue.model_copy(
        update={
            "serial": serial,
            "kind": InvoiceKind.RED,
            "original_invoice_no": original_invoice_no,
            "reversal_reason": reason,
            "issue_date": issue_date,
            "lines": red_lines,
            "tax_breakdown": tuple(tax_breakdown(red_lines)),
            "totals": totals(red_lines),
        }
    )
