"""Business rules of the canonical invoice, checked before anything is sent.

Public API:
    validate(invoice) -> list[Problem]   -- empty list: the platform should accept it
    Problem(code, path, message)         -- message is written for a finance user
    ALLOWED_RATES, LIMITS, MAX_LINES     -- the documented limits below
    PROBLEM_CODES                        -- every code validate() can report (stable)

`validate` never raises for bad data: every rule reports a Problem (the row is
then marked INVALID in the ERP with the messages), so one bad line cannot stop
the daemon. Paths use 0-based indexes (`lines[2].tax_code`); messages use the
line number a person sees on the invoice ("line 3: ...").

Documented choices (close to what Nuonuo / Baiwang / the 数电 platform accept):
- Lengths are counted in characters, not bytes: party name <= 100; address and
  phone together <= 100; bank name and account together <= 100; line name
  <= 100; spec and unit <= 40 each; remark <= 200; drawer/payee/reviewer <= 20;
  buyer email <= 100.
- Amounts must be whole cents (at most 2 places; the JSON always writes
  exactly 2). Quantities and unit prices have at most 8 decimal places.
- A line has a quantity and a unit price, or (only allowed for DISCOUNT lines
  and lines sold without a quantity) neither. DISCOUNT lines carry neither.
- Signs: on a BLUE invoice NORMAL/DISCOUNTED lines are positive and DISCOUNT
  lines negative; a RED invoice is the negation (quantities and amounts
  negative, DISCOUNT lines positive); unit prices are always positive.
- Rate 0 without a tax policy is treated as zero-rated; a tax policy on a
  non-zero rate is an error; a 0 % line carries no tax at all.
- Buyer tax ID: required for SPECIAL invoices and for company buyers; a
  natural person may omit it on an ORDINARY invoice, and if given it may be a
  USCC or a resident identity card number (`stdnum.cn.ric`). A natural person
  cannot receive a SPECIAL invoice. IDs must be written compactly (no spaces,
  upper case), exactly as the platform will compare them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Final

from stdnum import exceptions as stdnum_errors
from stdnum.cn import ric, uscc

from syncd.invoice.model import (
    Buyer,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceType,
    LineNature,
    Party,
    PriceBasis,
    format_amount,
    places_within,
)
from syncd.invoice.taxmath import (
    AMOUNT_TOLERANCE,
    DECIMAL_CONTEXT,
    TAX_ERROR_LIMIT_INVOICE,
    TAX_ERROR_LIMIT_LINE,
    line_tax_error,
    sum_by_rate,
    sum_lines,
)

__all__ = ["ALLOWED_RATES", "LIMITS", "MAX_LINES", "PROBLEM_CODES", "Problem", "validate"]

ALLOWED_RATES: Final = frozenset(
    Decimal(r) for r in ("0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0")
)
MAX_LINES: Final = 2000
LIMITS: Final = {
    "party_name": 100,
    "address_phone": 100,
    "bank_account": 100,
    "line_name": 100,
    "spec": 40,
    "unit": 40,
    "remark": 200,
    "person": 20,
    "email": 100,
}
PROBLEM_CODES: Final = frozenset(
    {
        "AMOUNT_PRECISION",
        "BLUE_HAS_ORIGINAL",
        "BLUE_HAS_REASON",
        "BREAKDOWN_MISMATCH",
        "BREAKDOWN_ORDER",
        "BUYER_EMAIL_FORMAT",
        "BUYER_TAX_ID_INVALID",
        "BUYER_TAX_ID_REQUIRED",
        "CURRENCY_FORMAT",
        "DISCOUNT_MISMATCH",
        "DISCOUNT_MISSING",
        "DISCOUNT_ORPHAN",
        "DISCOUNT_QUANTITY",
        "DISCOUNT_TOO_LARGE",
        "FIELD_TOO_LONG",
        "INTERNAL",
        "INVOICE_TAX_ERROR",
        "LINE_AMOUNT_MISMATCH",
        "LINE_GROSS_MISMATCH",
        "LINE_NAME_MISSING",
        "LINE_NO",
        "LINE_SIGN",
        "LINE_TAX_MISMATCH",
        "NO_LINES",
        "PARTY_NAME_MISSING",
        "QUANTITY_PRECISION",
        "QUANTITY_PRICE_PAIR",
        "QUANTITY_SIGN",
        "RED_ORIGINAL_FORMAT",
        "RED_ORIGINAL_MISSING",
        "RED_REASON_MISSING",
        "SELLER_TAX_ID_INVALID",
        "SELLER_TAX_ID_MISSING",
        "SERIAL_FORMAT",
        "SPECIAL_NATURAL_PERSON",
        "TAX_CODE_FORMAT",
        "TAX_POLICY_RATE",
        "TAX_RATE_NOT_ALLOWED",
        "TOO_MANY_LINES",
        "TOTALS_GROSS_MISMATCH",
        "TOTALS_MISMATCH",
        "TOTALS_SIGN",
        "UNIT_PRICE_PRECISION",
        "UNIT_PRICE_SIGN",
        "ZERO_RATE_TAX",
    }
)
_MAX_QTY_PLACES = 8
_TAX_CODE = re.compile(r"[0-9]{19}")
_INVOICE_NO = re.compile(r"[0-9]{20}")
_SERIAL = re.compile(r"[A-Z0-9]{8,32}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule. `code` is stable (for metrics and tests); `message` is for people."""

    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def validate(invoice: Invoice) -> list[Problem]:
    """Every rule the invoice breaks, in a stable order; [] when it is fine."""
    v = _Validator(invoice)
    try:
        with localcontext(DECIMAL_CONTEXT):
            v.run()
    except Exception as exc:  # a bug here must not crash the pipeline on bad data
        v.add("INTERNAL", "", f"the invoice could not be fully checked ({type(exc).__name__})")
    return v.problems


def _too_many_places(value: Decimal, limit: int) -> bool:
    """More than `limit` places actually needed. Most values are *written* with at most
    `limit` places, which settles it without normalising (cheap, and this runs for every
    amount of every invoice)."""
    return not places_within(value, limit) and _places(value) > limit


def _places(value: Decimal) -> int:
    """Decimal places actually needed: 2.50 -> 1, 3 -> 0."""
    if value.is_zero():
        return 0
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _fmt(value: Decimal) -> str:
    return "0" if value.is_zero() else format(value.normalize(), "f")


def _money(value: Decimal) -> str:
    return format_amount(value)


def _pct(rate: Decimal) -> str:
    return f"{_fmt(rate * 100)} %"


class _Validator:
    def __init__(self, invoice: Invoice) -> None:
        self.inv = invoice
        self.problems: list[Problem] = []
        self.red = invoice.kind is InvoiceKind.RED
        # +1 for BLUE, -1 for RED: every sign rule is written for BLUE and mirrored.
        self.sign = -1 if self.red else 1

    def add(self, code: str, path: str, message: str) -> None:
        self.problems.append(Problem(code, path, message))

    def run(self) -> None:
        self.header()
        self.parties()
        self.line_count()
        for index, line in enumerate(self.inv.lines):
            self.line(index, line)
        self.discounts()
        self.invoice_tax_error()
        self.breakdown()
        self.totals()

    # -- header ---------------------------------------------------------------

    def header(self) -> None:
        inv = self.inv
        if not _SERIAL.fullmatch(inv.serial):
            self.add(
                "SERIAL_FORMAT",
                "serial",
                f"serial '{inv.serial}' must be 8 to 32 upper-case letters or digits",
            )
        if not _CURRENCY.fullmatch(inv.currency):
            self.add(
                "CURRENCY_FORMAT",
                "currency",
                f"currency '{inv.currency}' must be a three-letter ISO 4217 code",
            )
        if self.red:
            no = inv.original_invoice_no
            if no is None:
                self.add(
                    "RED_ORIGINAL_MISSING",
                    "original_invoice_no",
                    "a red invoice must give the number of the invoice it reverses",
                )
            elif not _INVOICE_NO.fullmatch(no):
                self.add(
                    "RED_ORIGINAL_FORMAT",
                    "original_invoice_no",
                    f"original invoice number '{no}' must be 20 digits",
                )
            if inv.reversal_reason is None:
                self.add(
                    "RED_REASON_MISSING",
                    "reversal_reason",
                    "a red invoice must give a reversal reason",
                )
        else:
            if inv.original_invoice_no is not None:
                self.add(
                    "BLUE_HAS_ORIGINAL",
                    "original_invoice_no",
                    "a blue invoice must not reference an original invoice",
                )
            if inv.reversal_reason is not None:
                self.add(
                    "BLUE_HAS_REASON",
                    "reversal_reason",
                    "a blue invoice must not have a reversal reason",
                )
        self.length("remark", inv.remark, "remark", "remark")
        for field in ("drawer", "payee", "reviewer"):
            self.length(field, getattr(inv, field), "person", field)

    def length(self, path: str, value: str | None, limit_key: str, label: str) -> None:
        limit = LIMITS[limit_key]
        if value is not None and len(value) > limit:
            self.add(
                "FIELD_TOO_LONG",
                path,
                f"{label} is {len(value)} characters long; at most {limit} are allowed",
            )

    # -- parties --------------------------------------------------------------

    def parties(self) -> None:
        self.party("seller", self.inv.seller)
        self.party("buyer", self.inv.buyer)
        self.seller_tax_id()
        self.buyer_tax_id()
        email = self.inv.buyer.email
        if email is not None:
            self.length("buyer.email", email, "email", "buyer email")
            if not _EMAIL.fullmatch(email):
                self.add(
                    "BUYER_EMAIL_FORMAT",
                    "buyer.email",
                    f"buyer email '{email}' is not an e-mail address",
                )

    def party(self, role: str, party: Party) -> None:
        if not party.name.strip():
            self.add("PARTY_NAME_MISSING", f"{role}.name", f"{role} name is empty")
        self.length(f"{role}.name", party.name, "party_name", f"{role} name")
        pairs = (
            ("address", party.address, party.phone, "address_phone", "address and phone"),
            (
                "bank_name",
                party.bank_name,
                party.bank_account,
                "bank_account",
                "bank name and account",
            ),
        )
        for field, first, second, key, label in pairs:
            size = len(first or "") + len(second or "")
            if size > LIMITS[key]:
                self.add(
                    "FIELD_TOO_LONG",
                    f"{role}.{field}",
                    f"{role} {label} are {size} characters long together; "
                    f"at most {LIMITS[key]} are allowed",
                )

    def seller_tax_id(self) -> None:
        tax_id = self.inv.seller.tax_id
        if tax_id is None or not tax_id.strip():
            self.add("SELLER_TAX_ID_MISSING", "seller.tax_id", "seller tax ID is missing")
            return
        reason = _uscc_problem(tax_id)
        if reason:
            self.add(
                "SELLER_TAX_ID_INVALID",
                "seller.tax_id",
                f"seller tax ID '{tax_id}' is not a valid unified social credit code: {reason}",
            )

    def buyer_tax_id(self) -> None:
        buyer: Buyer = self.inv.buyer
        special = self.inv.invoice_type is InvoiceType.SPECIAL
        if special and buyer.natural_person:
            self.add(
                "SPECIAL_NATURAL_PERSON",
                "buyer.natural_person",
                "a special VAT invoice cannot be issued to a natural person",
            )
        tax_id = buyer.tax_id
        if tax_id is None or not tax_id.strip():
            if special:
                self.add(
                    "BUYER_TAX_ID_REQUIRED",
                    "buyer.tax_id",
                    "a special VAT invoice needs the buyer's tax ID",
                )
            elif not buyer.natural_person:
                self.add(
                    "BUYER_TAX_ID_REQUIRED",
                    "buyer.tax_id",
                    "the buyer's tax ID is required for a company buyer "
                    "(only natural persons may omit it)",
                )
            return
        reason = _uscc_problem(tax_id)
        if reason and buyer.natural_person and not special and _ric_ok(tax_id):
            return
        if reason:
            self.add(
                "BUYER_TAX_ID_INVALID",
                "buyer.tax_id",
                f"buyer tax ID '{tax_id}' is not a valid unified social credit code: {reason}",
            )

    # -- lines ----------------------------------------------------------------

    def line_count(self) -> None:
        n = len(self.inv.lines)
        if n == 0:
            self.add("NO_LINES", "lines", "the invoice has no lines")
        elif n > MAX_LINES:
            self.add(
                "TOO_MANY_LINES",
                "lines",
                f"the invoice has {n} lines; at most {MAX_LINES} are allowed",
            )

    def line(self, index: int, line: InvoiceLine) -> None:
        at = f"lines[{index}]"
        who = f"line {index + 1}"
        add = self.add
        if self.inv.kind is InvoiceKind.RED:
            # a red line carries the number of the blue line it reverses (a partial red
            # invoice reverses some lines only): ascending, each blue line at most once
            previous = self.inv.lines[index - 1].line_no if index else 0
            if line.line_no <= previous:
                add(
                    "LINE_NO",
                    f"{at}.line_no",
                    f"{who}: line number is {line.line_no}, expected more than {previous} "
                    "(the blue invoice's line it reverses, ascending)",
                )
        elif line.line_no != index + 1:
            add(
                "LINE_NO",
                f"{at}.line_no",
                f"{who}: line number is {line.line_no}, expected {index + 1}",
            )
        if not line.name.strip():
            add("LINE_NAME_MISSING", f"{at}.name", f"{who}: goods or service name is empty")
        self.length(f"{at}.name", line.name, "line_name", f"{who}: goods or service name")
        self.length(f"{at}.spec", line.spec, "spec", f"{who}: specification")
        self.length(f"{at}.unit", line.unit, "unit", f"{who}: unit")
        if not _TAX_CODE.fullmatch(line.tax_code):
            add(
                "TAX_CODE_FORMAT",
                f"{at}.tax_code",
                f"{who}: tax classification code '{line.tax_code}' must be 19 digits",
            )
        rate = line.tax_rate
        if rate not in ALLOWED_RATES:
            add(
                "TAX_RATE_NOT_ALLOWED",
                f"{at}.tax_rate",
                f"{who}: tax rate {_pct(rate)} is not allowed "
                "(allowed: 13 %, 9 %, 6 %, 5 %, 3 %, 1 %, 0 %)",
            )
        if line.tax_policy is not None and rate != 0:
            add(
                "TAX_POLICY_RATE",
                f"{at}.tax_policy",
                f"{who}: tax policy {line.tax_policy.value} requires a 0 % rate, not {_pct(rate)}",
            )
        self.line_precision(at, who, line)
        self.line_quantity(at, who, line)
        self.line_signs(at, who, line)
        self.line_arithmetic(at, who, line)

    def line_precision(self, at: str, who: str, line: InvoiceLine) -> None:
        for field, label in (("quantity", "quantity"), ("unit_price", "unit price")):
            value: Decimal | None = getattr(line, field)
            if value is not None and _too_many_places(value, _MAX_QTY_PLACES):
                self.add(
                    f"{field.upper()}_PRECISION",
                    f"{at}.{field}",
                    f"{who}: {label} {_fmt(value)} has more than {_MAX_QTY_PLACES} decimal places",
                )
        for field in ("net_amount", "tax_amount", "gross_amount"):
            value = getattr(line, field)
            if _too_many_places(value, 2):
                self.cents(f"{at}.{field}", value, f"{who}: {_label(field)}")

    def cents(self, path: str, value: Decimal, label: str) -> None:
        """Report an amount that is not whole cents. Callers test `_too_many_places(value,
        2)` first, so the path and label are only formatted for a broken amount."""
        self.add(
            "AMOUNT_PRECISION",
            path,
            f"{label} {_fmt(value)} must be a whole number of cents (2 decimal places)",
        )

    def line_quantity(self, at: str, who: str, line: InvoiceLine) -> None:
        has_qty, has_price = line.quantity is not None, line.unit_price is not None
        if line.nature is LineNature.DISCOUNT:
            if has_qty or has_price:
                self.add(
                    "DISCOUNT_QUANTITY",
                    f"{at}.quantity",
                    f"{who}: a discount line has no quantity and no unit price",
                )
        elif has_qty != has_price:
            missing = "unit price" if has_qty else "quantity"
            self.add(
                "QUANTITY_PRICE_PAIR",
                f"{at}.{'unit_price' if has_qty else 'quantity'}",
                f"{who}: {missing} is missing (give both quantity and unit price, or neither)",
            )

    def line_signs(self, at: str, who: str, line: InvoiceLine) -> None:
        kind = "red" if self.red else "blue"
        discount = line.nature is LineNature.DISCOUNT
        # Expected sign of the amounts, on this invoice.
        want = -self.sign if discount else self.sign
        word = "positive" if want > 0 else "negative"
        what = "a discount line" if discount else "a line"
        if line.net_amount * want <= 0 or line.gross_amount * want <= 0:
            self.add(
                "LINE_SIGN",
                f"{at}.net_amount",
                f"{who}: on a {kind} invoice the amounts of {what} must be {word} "
                f"(amount {_money(line.net_amount)}, with tax {_money(line.gross_amount)})",
            )
        elif line.tax_amount * want < 0:
            self.add(
                "LINE_SIGN",
                f"{at}.tax_amount",
                f"{who}: on a {kind} invoice the tax of {what} must be {word} or zero "
                f"(tax {_money(line.tax_amount)})",
            )
        if line.quantity is not None and line.quantity * self.sign <= 0:
            self.add(
                "QUANTITY_SIGN",
                f"{at}.quantity",
                f"{who}: on a {kind} invoice the quantity must be "
                f"{'positive' if self.sign > 0 else 'negative'} "
                f"(got {_fmt(line.quantity)})",
            )
        if line.unit_price is not None and line.unit_price <= 0:
            self.add(
                "UNIT_PRICE_SIGN",
                f"{at}.unit_price",
                f"{who}: unit price must be positive (got {_fmt(line.unit_price)})",
            )

    def line_arithmetic(self, at: str, who: str, line: InvoiceLine) -> None:
        # Runs inside validate()'s localcontext(DECIMAL_CONTEXT), like every rule.
        if line.net_amount + line.tax_amount != line.gross_amount:
            self.add(
                "LINE_GROSS_MISMATCH",
                f"{at}.gross_amount",
                f"{who}: amount {_money(line.net_amount)} plus tax "
                f"{_money(line.tax_amount)} is not the amount with tax "
                f"{_money(line.gross_amount)}",
            )
        if line.quantity is not None and line.unit_price is not None:
            inclusive = self.inv.price_basis is PriceBasis.TAX_INCLUSIVE
            field = "gross_amount" if inclusive else "net_amount"
            amount: Decimal = getattr(line, field)
            product = line.quantity * line.unit_price
            if abs(product - amount) > AMOUNT_TOLERANCE:
                self.add(
                    "LINE_AMOUNT_MISMATCH",
                    f"{at}.{field}",
                    f"{who}: quantity {_fmt(line.quantity)} × unit price "
                    f"{_fmt(line.unit_price)} = {_fmt(product)}, but the "
                    f"{_label(field)} is {_money(amount)} "
                    f"(at most {AMOUNT_TOLERANCE} difference allowed)",
                )
        error = line_tax_error(line)
        if line.tax_rate == 0 and not line.tax_amount.is_zero():
            self.add(
                "ZERO_RATE_TAX",
                f"{at}.tax_amount",
                f"{who}: a 0 % line cannot carry tax (got {_money(line.tax_amount)})",
            )
        elif abs(error) > TAX_ERROR_LIMIT_LINE:
            self.add(
                "LINE_TAX_MISMATCH",
                f"{at}.tax_amount",
                f"{who}: tax {_money(line.tax_amount)} does not match amount "
                f"{_money(line.net_amount)} × {_pct(line.tax_rate)} = "
                f"{_fmt(line.net_amount * line.tax_rate)} "
                f"(at most {TAX_ERROR_LIMIT_LINE} difference allowed)",
            )

    def discounts(self) -> None:
        lines = self.inv.lines
        for index, line in enumerate(lines):
            nxt = lines[index + 1] if index + 1 < len(lines) else None
            if line.nature is LineNature.DISCOUNTED and (
                nxt is None or nxt.nature is not LineNature.DISCOUNT
            ):
                self.add(
                    "DISCOUNT_MISSING",
                    f"lines[{index}].nature",
                    f"line {index + 1}: a discounted line must be followed "
                    "immediately by its discount line",
                )
            if line.nature is not LineNature.DISCOUNT:
                continue
            at, who = f"lines[{index}]", f"line {index + 1}"
            prev = lines[index - 1] if index > 0 else None
            if prev is None or prev.nature is not LineNature.DISCOUNTED:
                self.add(
                    "DISCOUNT_ORPHAN",
                    f"{at}.nature",
                    f"{who}: a discount line must immediately follow the discounted "
                    "line it belongs to",
                )
                continue
            for field, label in (
                ("name", "goods or service name"),
                ("tax_code", "tax classification code"),
                ("tax_rate", "tax rate"),
                ("tax_policy", "tax policy"),
            ):
                if getattr(line, field) != getattr(prev, field):
                    self.add(
                        "DISCOUNT_MISMATCH",
                        f"{at}.{field}",
                        f"{who}: a discount line must have the same {label} as "
                        f"line {index} it discounts",
                    )
            if abs(line.net_amount) > abs(prev.net_amount) or abs(line.gross_amount) > abs(
                prev.gross_amount
            ):
                self.add(
                    "DISCOUNT_TOO_LARGE",
                    f"{at}.net_amount",
                    f"{who}: the discount {_money(abs(line.gross_amount))} (with tax) is "
                    f"larger than line {index}'s amount {_money(abs(prev.gross_amount))}",
                )

    # -- invoice-level sums -----------------------------------------------------

    def invoice_tax_error(self) -> None:
        total = sum((line_tax_error(line) for line in self.inv.lines), Decimal(0))
        if abs(total) > TAX_ERROR_LIMIT_INVOICE:
            self.add(
                "INVOICE_TAX_ERROR",
                "lines",
                f"the line taxes differ from amount × rate by {_fmt(total)} in total; "
                f"at most {TAX_ERROR_LIMIT_INVOICE} is allowed",
            )

    def breakdown(self) -> None:
        given = self.inv.tax_breakdown
        for index, entry in enumerate(given):
            for field in ("net_amount", "tax_amount"):
                value = getattr(entry, field)
                if _too_many_places(value, 2):
                    self.cents(
                        f"tax_breakdown[{index}].{field}",
                        value,
                        f"tax breakdown {_pct(entry.tax_rate)}: {_label(field)}",
                    )
        expected = sum_by_rate(self.inv.lines)
        if [(e.tax_rate, e.net_amount, e.tax_amount) for e in given] == expected:
            return
        rates = [e.tax_rate for e in given]
        if rates != sorted(set(rates)):
            self.add(
                "BREAKDOWN_ORDER",
                "tax_breakdown",
                "the tax breakdown must have one entry per rate, in ascending order",
            )
        want = {rate: (net, tax) for rate, net, tax in expected}
        have = {e.tax_rate: e for e in given}
        for rate in sorted(set(want) | set(have)):
            w, h = want.get(rate), have.get(rate)
            if h is None:
                self.add(
                    "BREAKDOWN_MISMATCH",
                    "tax_breakdown",
                    f"the tax breakdown has no entry for {_pct(rate)}",
                )
            elif w is None:
                self.add(
                    "BREAKDOWN_MISMATCH",
                    "tax_breakdown",
                    f"the tax breakdown has an entry for {_pct(rate)} but no line has that rate",
                )
            elif w != (h.net_amount, h.tax_amount):
                index = given.index(h)
                self.add(
                    "BREAKDOWN_MISMATCH",
                    f"tax_breakdown[{index}]",
                    f"tax breakdown {_pct(rate)}: amount {_money(h.net_amount)} and tax "
                    f"{_money(h.tax_amount)} should be {_money(w[0])} and "
                    f"{_money(w[1])} (the sums of the lines)",
                )

    def totals(self) -> None:
        given = self.inv.totals
        for field in ("net_amount", "tax_amount", "gross_amount"):
            value = getattr(given, field)
            if _too_many_places(value, 2):
                self.cents(f"totals.{field}", value, f"total {_label(field)}")
        expected = dict(
            zip(
                ("net_amount", "tax_amount", "gross_amount"), sum_lines(self.inv.lines), strict=True
            )
        )
        for field, want in expected.items():
            have = getattr(given, field)
            if have != want:
                self.add(
                    "TOTALS_MISMATCH",
                    f"totals.{field}",
                    f"total {_label(field)} is {_money(have)} but the lines add up to "
                    f"{_money(want)}",
                )
        if given.net_amount + given.tax_amount != given.gross_amount:
            self.add(
                "TOTALS_GROSS_MISMATCH",
                "totals.gross_amount",
                f"total amount {_money(given.net_amount)} plus total tax "
                f"{_money(given.tax_amount)} is not the total with tax "
                f"{_money(given.gross_amount)}",
            )
        kind = "red" if self.red else "blue"
        word = "negative" if self.red else "positive"
        if self.inv.lines and (
            given.gross_amount * self.sign <= 0 or given.net_amount * self.sign <= 0
        ):
            self.add(
                "TOTALS_SIGN",
                "totals.gross_amount",
                f"the total of a {kind} invoice must be {word} (got {_money(given.gross_amount)})",
            )


_LABELS: Final = {
    "net_amount": "amount",
    "tax_amount": "tax",
    "gross_amount": "amount with tax",
}


def _label(field: str) -> str:
    return _LABELS[field]


def _stdnum_reason(check: Callable[[str], object], number: str) -> str | None:
    try:
        check(number)
    except stdnum_errors.InvalidLength:
        return "it must be 18 characters long"
    except stdnum_errors.InvalidFormat:
        return "it contains characters that are not allowed"
    except stdnum_errors.InvalidChecksum:
        return "the check character does not match (probably a typing error)"
    except stdnum_errors.ValidationError:
        return "it is not a valid number"
    return None


@lru_cache(maxsize=4096)
def _uscc_problem(tax_id: str) -> str | None:
    """Why `tax_id` is not a compact, valid USCC, or None. Cached: a pure function of the
    string, and the seller's ID and repeat buyers' IDs come back on every invoice, while
    python-stdnum's cleaning and checksum are the dearest part of validation."""
    if tax_id != uscc.compact(tax_id):
        return "write it without spaces or dashes, in upper case"
    return _stdnum_reason(uscc.validate, tax_id)


@lru_cache(maxsize=1024)
def _ric_ok(tax_id: str) -> bool:
    """A compact, valid resident identity card number (cached like `_uscc_problem`)."""
    return tax_id == ric.compact(tax_id) and bool(ric.is_valid(tax_id))
