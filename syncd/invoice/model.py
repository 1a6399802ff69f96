"""The canonical invoice: the one data model syncd and the invoicing platform agree on.

Public API:
    Invoice, Party, Buyer, InvoiceLine, TaxSubtotal, Totals, SourceRef   -- the models
    InvoiceKind, InvoiceType, PriceBasis, LineNature, TaxPolicy, ReversalReason -- enums
    Invoice.model_validate_json(text)  -- parse the wire JSON (unknown fields rejected)
    Invoice.to_json() -> str           -- the wire JSON (docs/invoice-format.md)
    format_amount(d), format_plain(d)  -- how decimals are written on the wire
    places_within(d, n) -> bool        -- d is written with at most n decimals

The models check *shape* only (types, enums, exact decimals, no unknown fields):
business rules live in `syncd.invoice.validation`, so a wrong invoice can still be
represented and reported as a list of readable problems rather than a crash.

Decimals are accepted from JSON only as strings (a JSON number would already
have passed through a float); from Python as `Decimal`, `int` or `str`, never
`float`. Negative zero is normalised to zero so that a negated (red) invoice
never renders `-0.00`.
"""

from __future__ import annotations

import enum
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationInfo

__all__ = [
    "Amount",
    "Buyer",
    "Invoice",
    "InvoiceKind",
    "InvoiceLine",
    "InvoiceType",
    "LineNature",
    "Party",
    "PriceBasis",
    "Quantity",
    "Rate",
    "ReversalReason",
    "SourceRef",
    "TaxPolicy",
    "TaxSubtotal",
    "Totals",
    "format_amount",
    "format_plain",
    "places_within",
]

# Bounds that keep every later Decimal operation exact and exception-free: no
# invoice amount comes near 10**15 CNY and nothing needs more than 20 places.
_MAX_ABS = Decimal(10) ** 15
_MAX_PLACES = 20
_CENT = Decimal("0.01")


class InvoiceKind(enum.StrEnum):
    BLUE = "BLUE"
    RED = "RED"  # reversal: 红字发票 / credit note


class InvoiceType(enum.StrEnum):
    SPECIAL = "SPECIAL"  # 数电专票: buyer may deduct input VAT, needs a valid buyer tax ID
    ORDINARY = "ORDINARY"  # 数电普票


class PriceBasis(enum.StrEnum):
    TAX_EXCLUSIVE = "TAX_EXCLUSIVE"
    TAX_INCLUSIVE = "TAX_INCLUSIVE"


class LineNature(enum.StrEnum):
    NORMAL = "NORMAL"
    DISCOUNTED = "DISCOUNTED"  # a line that is immediately followed by its DISCOUNT line
    DISCOUNT = "DISCOUNT"


class TaxPolicy(enum.StrEnum):
    EXEMPT = "EXEMPT"  # 免税
    NOT_TAXABLE = "NOT_TAXABLE"  # 不征税
    ZERO_RATE = "ZERO_RATE"  # 零税率 (e.g. exports)


class ReversalReason(enum.StrEnum):
    SALES_RETURN = "SALES_RETURN"
    INVOICING_ERROR = "INVOICING_ERROR"
    SERVICE_STOPPED = "SERVICE_STOPPED"
    ALLOWANCE = "ALLOWANCE"


def places_within(value: Decimal, places: int) -> bool:
    """True when the finite `value` is *written* with at most `places` decimals (its
    exponent is >= -places; trailing zeros count).

    Reads the exponent off `str(value)`, several times cheaper than `as_tuple()` (which
    builds a tuple of every digit) on the per-amount validation path; the scientific
    notation `str` uses for positive exponents and tiny numbers falls back to `as_tuple()`.
    """
    text = str(value)
    if "E" in text or "e" in text:
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        return -exponent <= places
    point = text.find(".")
    return point < 0 or len(text) - point - 1 <= places


def _coerce_decimal(value: Any, info: ValidationInfo) -> Decimal:
    """A Decimal from what the models accept (see the module docstring), or a ValueError."""
    if info.mode == "json" and not isinstance(value, str):
        raise ValueError('decimal values must be JSON strings (e.g. "165.14"), not numbers')
    if isinstance(value, bool | float):
        raise ValueError("decimal values must be given as strings, never as floats")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        try:
            return Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    raise ValueError(f"expected a decimal number, got {type(value).__name__}")


def _to_decimal(value: Any, info: ValidationInfo) -> Decimal:
    # A plain Decimal from Python (every model syncd builds itself) skips the coercion
    # checks, which cannot apply to it; the bounds below are checked for every value.
    if type(value) is Decimal and info.mode != "json":
        result = value
    else:
        result = _coerce_decimal(value, info)
    if not result.is_finite():
        raise ValueError("decimal values must be finite")
    # adjusted() < 14 means |result| < 10**14 even after abs() rounds to the context's
    # precision, so the (allocating) comparison is only made near the bound.
    if result.adjusted() >= 14 and abs(result) >= _MAX_ABS:
        raise ValueError("decimal value out of range (at most 15 integer digits)")
    if not places_within(result, _MAX_PLACES) and result != result.quantize(
        Decimal(1).scaleb(-_MAX_PLACES)
    ):
        raise ValueError(f"decimal value has more than {_MAX_PLACES} decimal places")
    if result.is_zero():
        result = result.copy_abs()
    return result


def format_plain(value: Decimal) -> str:
    """Shortest exact positional form: `Decimal("2.000")` -> `"2"`, never an exponent."""
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def format_amount(value: Decimal) -> str:
    """Exactly two places for whole cents; an invalid sub-cent amount is written in full.

    Rounding here would silently hide a wrong amount from the receiver's
    validation, so a value such as 1.005 is rendered as "1.005", not "1.01".
    """
    if value.is_zero():
        return "0.00"
    cents = value.quantize(_CENT)
    if value == cents:
        return format(cents, "f")
    return format_plain(value)


Amount = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
]
Quantity = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    PlainSerializer(format_plain, return_type=str, when_used="json"),
]
Rate = Quantity  # a fraction: "0.13" is 13 %

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=False)


class _Frozen(BaseModel):
    model_config = _MODEL_CONFIG


class Party(_Frozen):
    """The seller (and the common part of the buyer).

    `tax_id` is the 18-character unified social credit code (统一社会信用代码).
    """

    name: str
    tax_id: str | None
    address: str | None = None
    phone: str | None = None
    bank_name: str | None = None
    bank_account: str | None = None


class Buyer(Party):
    """The buyer; `tax_id` may be null for a natural person on an ORDINARY invoice."""

    email: str | None = None
    natural_person: bool = False


class InvoiceLine(_Frozen):
    line_no: int
    nature: LineNature
    name: str
    tax_code: str  # 19-digit tax classification code (税收分类编码)
    spec: str | None = None
    unit: str | None = None
    quantity: Quantity | None
    unit_price: Quantity | None
    net_amount: Amount
    tax_rate: Rate
    tax_amount: Amount
    gross_amount: Amount
    tax_policy: TaxPolicy | None = None


class TaxSubtotal(_Frozen):
    tax_rate: Rate
    net_amount: Amount
    tax_amount: Amount


class Totals(_Frozen):
    net_amount: Amount
    tax_amount: Amount
    gross_amount: Amount


class SourceRef(_Frozen):
    """Where the invoice came from; for audit and reconciliation only."""

    document: str
    table: str
    key: dict[str, int | str]
    revision: int


class Invoice(_Frozen):
    serial: str
    kind: InvoiceKind
    invoice_type: InvoiceType
    original_invoice_no: str | None = None
    reversal_reason: ReversalReason | None = None
    currency: str = "CNY"
    price_basis: PriceBasis
    issue_date: date | None = None
    seller: Party
    buyer: Buyer
    drawer: str | None = None
    payee: str | None = None
    reviewer: str | None = None
    remark: str | None = None
    lines: tuple[InvoiceLine, ...]
    tax_breakdown: tuple[TaxSubtotal, ...]
    totals: Totals
    source: SourceRef

    def to_json(self) -> str:
        """The wire JSON, fields in the documented order."""
        return self.model_dump_json()
