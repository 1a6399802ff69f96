"""The sandbox platform's own checks of a submitted invoice.

This is deliberately *not* syncd's validator: the sandbox plays the provider,
and a validator shared by both sides would hide one bug on both sides at once.
Everything here is written from the platform rules (notes/einvoice.md and
docs/invoice-format.md) and is pure: JSON value in, list of violations out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final

MAX_LINES: Final = 2000
LINE_AMOUNT_TOLERANCE: Final = Decimal("0.01")
LINE_TAX_TOLERANCE: Final = Decimal("0.06")
INVOICE_TAX_TOLERANCE: Final = Decimal("1.27")
ALLOWED_RATES: Final = frozenset(
    Decimal(r) for r in ("0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0")
)
CENT: Final = Decimal("0.01")

SERIAL_RE: Final = re.compile(r"[A-Z0-9]{8,32}")
INVOICE_NO_RE: Final = re.compile(r"\d{20}")
TAX_CODE_RE: Final = re.compile(r"\d{19}")
AMOUNT_RE: Final = re.compile(r"-?\d{1,15}\.\d{2}")
QTY_RE: Final = re.compile(r"-?\d{1,15}(\.\d{1,8})?")
RATE_RE: Final = re.compile(r"\d(\.\d{1,4})?")
EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
LOOSE_TAX_ID_RE: Final = re.compile(r"[0-9A-Z]{15,20}")

REVERSAL_REASONS: Final = frozenset(
    {"SALES_RETURN", "INVOICING_ERROR", "SERVICE_STOPPED", "ALLOWANCE"}
)

# GB 32100-2015: 31 characters (no I, O, Z, S, V) and the weights of positions 1..17.
_USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason the platform refuses an invoice: a stable code, where, and why."""

    code: str
    path: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


def uscc_is_valid(value: str) -> bool:
    """Unified social credit code: 18 characters, region digits, mod-31 check character."""
    if len(value) != 18 or any(c not in _USCC_ALPHABET for c in value):
        return False
    if not value[2:8].isdigit():
        return False
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(value[:17], _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31] == value[17]


def round_half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# --- field schema ---------------------------------------------------------------------

_HEADER_FIELDS: Final = frozenset(
    {
        "serial",
        "kind",
        "invoice_type",
        "original_invoice_no",
        "reversal_reason",
        "currency",
        "price_basis",
        "issue_date",
        "seller",
        "buyer",
        "drawer",
        "payee",
        "reviewer",
        "remark",
        "lines",
        "tax_breakdown",
        "totals",
        "source",
    }
)
_OPTIONAL_HEADER: Final = frozenset(
    {
        "original_invoice_no",
        "reversal_reason",
        "issue_date",
        "drawer",
        "payee",
        "reviewer",
        "remark",
        "source",
    }
)
_PARTY_FIELDS: Final = frozenset(
    {"name", "tax_id", "address", "phone", "bank_name", "bank_account"}
)
_BUYER_FIELDS: Final = _PARTY_FIELDS | {"email", "natural_person"}
_LINE_FIELDS: Final = frozenset(
    {
        "line_no",
        "nature",
        "name",
        "tax_code",
        "spec",
        "unit",
        "quantity",
        "unit_price",
        "net_amount",
        "tax_rate",
        "tax_amount",
        "gross_amount",
        "tax_policy",
    }
)
_OPTIONAL_LINE: Final = frozenset({"spec", "unit", "quantity", "unit_price", "tax_policy"})
_BREAKDOWN_FIELDS: Final = frozenset({"tax_rate", "net_amount", "tax_amount"})
_TOTALS_FIELDS: Final = frozenset({"net_amount", "tax_amount", "gross_amount"})


class _Checker:
    """Collects violations while walking one payload; never raises on bad input."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def add(self, code: str, path: str, message: str) -> None:
        self.violations.append(Violation(code, path, message))

    def fields(
        self, obj: object, path: str, allowed: frozenset[str], optional: frozenset[str]
    ) -> Mapping[str, Any] | None:
        if not isinstance(obj, Mapping):
            self.add("INVALID_TYPE", path or "$", "must be a JSON object")
            return None
        for key in sorted(set(obj) - allowed):
            self.add("UNKNOWN_FIELD", _join(path, key), "field is not part of the invoice format")
        for key in sorted(allowed - optional - set(obj)):
            self.add("MISSING_FIELD", _join(path, key), "field is required")
        return obj

    def text(
        self, obj: Mapping[str, Any], key: str, path: str, *, required: bool, max_len: int
    ) -> str | None:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            if required and key in obj:
                self.add("MISSING_FIELD", where, "must not be null")
            return None
        if not isinstance(value, str):
            self.add("INVALID_TYPE", where, "must be a string")
            return None
        if required and not value.strip():
            self.add("MISSING_FIELD", where, "must not be empty")
        if len(value) > max_len:
            self.add("FIELD_TOO_LONG", where, f"at most {max_len} characters")
        return value

    def enum(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        allowed: frozenset[str],
        *,
        nullable: bool = False,
    ) -> str | None:
        value = obj.get(key)
        if value is None and (nullable or key not in obj):
            return None
        if not isinstance(value, str) or value not in allowed:
            self.add(
                "INVALID_VALUE", _join(path, key), f"must be one of {', '.join(sorted(allowed))}"
            )
            return None
        return value

    def decimal(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        pattern: re.Pattern[str],
        what: str,
        *,
        nullable: bool = False,
    ) -> Decimal | None:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            if not nullable and key in obj:
                self.add("MISSING_FIELD", where, "must not be null")
            return None
        if not isinstance(value, str):
            self.add("INVALID_AMOUNT", where, f"{what} must be a JSON string holding a decimal")
            return None
        if not pattern.fullmatch(value):
            self.add("INVALID_AMOUNT", where, f"{value!r} is not a valid {what}")
            return None
        try:
            return Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern already guards this
            self.add("INVALID_AMOUNT", where, f"{value!r} is not a decimal")
            return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@dataclass(frozen=True, slots=True)
class _Line:
    index: int
    nature: str | None
    name: str | None
    rate: Decimal | None
    net: Decimal | None
    tax: Decimal | None
    gross: Decimal | None


def check_invoice(payload: object, *, today: date | None = None) -> list[Violation]:
    """All the reasons the platform refuses this blue invoice (empty list: acceptable).

    Red invoices are never submitted directly: they come out of a confirmed
    red-letter form (`POST /v1/red-forms`), exactly as on the real platforms.
    """
    c = _Checker()
    doc = c.fields(payload, "", _HEADER_FIELDS, _OPTIONAL_HEADER)
    if doc is None:
        return c.violations

    serial = doc.get("serial")
    if not isinstance(serial, str) or not SERIAL_RE.fullmatch(serial):
        c.add("INVALID_SERIAL", "serial", "must be 8 to 32 characters of A-Z and 0-9")

    kind = c.enum(doc, "kind", "", frozenset({"BLUE", "RED"}))
    if kind == "RED":
        c.add(
            "RED_REQUIRES_FORM",
            "kind",
            "red invoices are issued from a red-letter form: POST /v1/red-forms",
        )
    for key in ("original_invoice_no", "reversal_reason"):
        if doc.get(key) is not None and kind == "BLUE":
            c.add("INVALID_VALUE", key, "must be null on a blue invoice")
    invoice_type = c.enum(doc, "invoice_type", "", frozenset({"SPECIAL", "ORDINARY"}))
    if "currency" in doc and doc.get("currency") != "CNY":
        c.add("UNSUPPORTED_CURRENCY", "currency", "the platform issues CNY invoices only")
    basis = c.enum(doc, "price_basis", "", frozenset({"TAX_EXCLUSIVE", "TAX_INCLUSIVE"}))
    _check_issue_date(c, doc.get("issue_date"), today)

    _check_seller(c, doc.get("seller"))
    _check_buyer(c, doc.get("buyer"), invoice_type)
    for key, limit in (("drawer", 20), ("payee", 20), ("reviewer", 20), ("remark", 200)):
        c.text(doc, key, "", required=False, max_len=limit)
    source = doc.get("source")
    if source is not None and not isinstance(source, Mapping):
        c.add("INVALID_TYPE", "source", "must be a JSON object or null")

    lines = _check_lines(c, doc.get("lines"), basis)
    if lines is not None and not c.violations:
        _check_sums(c, doc, lines)
    return c.violations


def _check_issue_date(c: _Checker, value: object, today: date | None) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        c.add("INVALID_TYPE", "issue_date", "must be an ISO date string or null")
        return
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        c.add("INVALID_VALUE", "issue_date", f"{value!r} is not an ISO date")
        return
    if today is not None and parsed > today:
        c.add("INVALID_VALUE", "issue_date", "an invoice cannot be dated in the future")


def _check_seller(c: _Checker, value: object) -> None:
    seller = c.fields(value, "seller", _PARTY_FIELDS, frozenset(_PARTY_FIELDS - {"name", "tax_id"}))
    if seller is None:
        return
    c.text(seller, "name", "seller", required=True, max_len=100)
    tax_id = c.text(seller, "tax_id", "seller", required=True, max_len=18)
    # The account behind the app key owns the seller ID; the sandbox checks its shape only.
    if tax_id is not None and not LOOSE_TAX_ID_RE.fullmatch(tax_id):
        c.add("INVALID_SELLER_TAX_ID", "seller.tax_id", "not a taxpayer identification number")
    _check_contact(c, seller, "seller")


def _check_contact(c: _Checker, party: Mapping[str, Any], path: str) -> None:
    address = c.text(party, "address", path, required=False, max_len=100) or ""
    phone = c.text(party, "phone", path, required=False, max_len=30) or ""
    if len(address) + len(phone) > 100:
        c.add("FIELD_TOO_LONG", f"{path}.address", "address and phone together: at most 100")
    bank = c.text(party, "bank_name", path, required=False, max_len=100) or ""
    account = c.text(party, "bank_account", path, required=False, max_len=50) or ""
    if len(bank) + len(account) > 100:
        c.add("FIELD_TOO_LONG", f"{path}.bank_name", "bank and account together: at most 100")


def _check_buyer(c: _Checker, value: object, invoice_type: str | None) -> None:
    optional = frozenset(_BUYER_FIELDS - {"name"})
    buyer = c.fields(value, "buyer", _BUYER_FIELDS, optional)
    if buyer is None:
        return
    c.text(buyer, "name", "buyer", required=True, max_len=100)
    natural = buyer.get("natural_person", False)
    if not isinstance(natural, bool):
        c.add("INVALID_TYPE", "buyer.natural_person", "must be true or false")
        natural = False
    tax_id = buyer.get("tax_id")
    if tax_id is not None and not isinstance(tax_id, str):
        c.add("INVALID_TYPE", "buyer.tax_id", "must be a string or null")
        tax_id = None
    if invoice_type == "SPECIAL":
        if natural:
            c.add(
                "SPECIAL_FOR_NATURAL_PERSON",
                "buyer.natural_person",
                "a special VAT invoice cannot be issued to a natural person",
            )
        if not tax_id:
            c.add(
                "MISSING_BUYER_TAX_ID",
                "buyer.tax_id",
                "a special VAT invoice needs the buyer's unified social credit code",
            )
        elif not uscc_is_valid(tax_id):
            c.add(
                "INVALID_BUYER_TAX_ID",
                "buyer.tax_id",
                f"{tax_id!r} is not a valid unified social credit code",
            )
    elif tax_id:
        if not LOOSE_TAX_ID_RE.fullmatch(tax_id):
            c.add("INVALID_BUYER_TAX_ID", "buyer.tax_id", "not a taxpayer identification number")
    elif not natural:
        c.add(
            "MISSING_BUYER_TAX_ID",
            "buyer.tax_id",
            "only a natural person may buy without a taxpayer ID",
        )
    email = c.text(buyer, "email", "buyer", required=False, max_len=100)
    if email and not EMAIL_RE.fullmatch(email):
        c.add("INVALID_VALUE", "buyer.email", "not an email address")
    _check_contact(c, buyer, "buyer")


def _check_lines(c: _Checker, value: object, basis: str | None) -> list[_Line] | None:
    if not isinstance(value, list):
        c.add("INVALID_TYPE", "lines", "must be a list")
        return None
    if not value:
        c.add("NO_LINES", "lines", "an invoice needs at least one line")
        return None
    if len(value) > MAX_LINES:
        c.add("TOO_MANY_LINES", "lines", f"at most {MAX_LINES} lines")
        return None
    lines: list[_Line] = []
    for i, raw in enumerate(value):
        line = _check_line(c, raw, i, basis)
        if line is not None:
            lines.append(line)
    _check_discounts(c, lines)
    return lines if len(lines) == len(value) else None


def _check_line(c: _Checker, raw: object, i: int, basis: str | None) -> _Line | None:
    path = f"lines[{i}]"
    line = c.fields(raw, path, _LINE_FIELDS, _OPTIONAL_LINE)
    if line is None:
        return None
    if line.get("line_no") != i + 1 or isinstance(line.get("line_no"), bool):
        c.add("INVALID_LINE_NO", f"{path}.line_no", f"must be {i + 1} (lines are numbered 1..n)")
    nature = c.enum(line, "nature", path, frozenset({"NORMAL", "DISCOUNTED", "DISCOUNT"}))
    name = c.text(line, "name", path, required=True, max_len=100)
    code = line.get("tax_code")
    if not isinstance(code, str) or not TAX_CODE_RE.fullmatch(code):
        c.add(
            "INVALID_TAX_CODE",
            f"{path}.tax_code",
            "the tax classification code has exactly 19 digits",
        )
    c.text(line, "spec", path, required=False, max_len=40)
    c.text(line, "unit", path, required=False, max_len=20)
    qty = c.decimal(line, "quantity", path, QTY_RE, "quantity (<= 8 decimals)", nullable=True)
    price = c.decimal(line, "unit_price", path, QTY_RE, "unit price (<= 8 decimals)", nullable=True)
    net = c.decimal(line, "net_amount", path, AMOUNT_RE, "amount (2 decimals)")
    tax = c.decimal(line, "tax_amount", path, AMOUNT_RE, "amount (2 decimals)")
    gross = c.decimal(line, "gross_amount", path, AMOUNT_RE, "amount (2 decimals)")
    rate = c.decimal(line, "tax_rate", path, RATE_RE, "tax rate")
    policy = c.enum(
        line, "tax_policy", path, frozenset({"EXEMPT", "NOT_TAXABLE", "ZERO_RATE"}), nullable=True
    )
    if rate is not None and rate not in ALLOWED_RATES:
        c.add(
            "INVALID_TAX_RATE",
            f"{path}.tax_rate",
            f"{rate} is not an allowed VAT rate (13%, 9%, 6%, 5%, 3%, 1%, 0%)",
        )
    if policy is not None and rate is not None and rate != 0:
        c.add("INVALID_TAX_POLICY", f"{path}.tax_policy", "a tax policy flag needs a rate of 0")
    if (line.get("quantity") is None) != (line.get("unit_price") is None):
        c.add("MISSING_FIELD", f"{path}.quantity", "quantity and unit price go together")
    if qty is not None and price is not None:
        if nature != "DISCOUNT" and (qty <= 0 or price < 0):
            c.add("INVALID_VALUE", f"{path}.quantity", "quantity must be positive, price >= 0")
        base = gross if basis == "TAX_INCLUSIVE" else net
        if base is not None and abs(qty * price - base) > LINE_AMOUNT_TOLERANCE:
            c.add(
                "LINE_AMOUNT_MISMATCH",
                f"{path}.{'gross' if base is gross else 'net'}_amount",
                f"|quantity x unit price - amount| = {abs(qty * price - base)} exceeds 0.01",
            )
    if net is not None and tax is not None and gross is not None:
        if net + tax != gross:
            c.add(
                "LINE_GROSS_MISMATCH",
                f"{path}.gross_amount",
                f"net {net} + tax {tax} != gross {gross}",
            )
        if nature == "DISCOUNT":
            if net >= 0 or gross >= 0 or tax > 0:
                c.add(
                    "INVALID_DISCOUNT_LINE",
                    f"{path}.net_amount",
                    "a discount line carries negative amounts",
                )
        elif net <= 0 or tax < 0:
            c.add(
                "NEGATIVE_AMOUNT",
                f"{path}.net_amount",
                "a blue invoice line carries positive amounts",
            )
        if rate is not None and abs(net * rate - tax) > LINE_TAX_TOLERANCE:
            c.add(
                "LINE_TAX_MISMATCH",
                f"{path}.tax_amount",
                f"|net x rate - tax| = {abs(net * rate - tax)} exceeds 0.06",
            )
    return _Line(i, nature, name, rate, net, tax, gross)


def _check_discounts(c: _Checker, lines: list[_Line]) -> None:
    for pos, line in enumerate(lines):
        prev = lines[pos - 1] if pos > 0 else None
        nxt = lines[pos + 1] if pos + 1 < len(lines) else None
        path = f"lines[{line.index}]"
        if line.nature == "DISCOUNT":
            if prev is None or prev.nature != "DISCOUNTED" or prev.index != line.index - 1:
                c.add(
                    "INVALID_DISCOUNT_LINE",
                    path,
                    "a discount line must immediately follow its DISCOUNTED line",
                )
                continue
            if prev.name != line.name or prev.rate != line.rate:
                c.add(
                    "INVALID_DISCOUNT_LINE",
                    path,
                    "a discount line has the same name and rate as its discounted line",
                )
            if prev.net is not None and line.net is not None and prev.net + line.net < 0:
                c.add(
                    "INVALID_DISCOUNT_LINE",
                    f"{path}.net_amount",
                    "the discount exceeds the discounted line",
                )
        elif line.nature == "DISCOUNTED" and (
            nxt is None or nxt.nature != "DISCOUNT" or nxt.index != line.index + 1
        ):
            c.add(
                "INVALID_DISCOUNT_LINE",
                path,
                "a DISCOUNTED line must be immediately followed by its DISCOUNT line",
            )


def _sum(values: list[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal("0.00"))


def _check_sums(c: _Checker, doc: Mapping[str, Any], lines: list[_Line]) -> None:
    drift = _sum(
        [
            ln.net * ln.rate - ln.tax
            for ln in lines
            if ln.net is not None and ln.rate is not None and ln.tax is not None
        ]
    )
    if abs(drift) > INVOICE_TAX_TOLERANCE:
        c.add(
            "INVOICE_TAX_MISMATCH", "lines", f"|sum(net x rate - tax)| = {abs(drift)} exceeds 1.27"
        )

    by_rate: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for ln in lines:
        assert ln.rate is not None and ln.net is not None and ln.tax is not None
        n, t = by_rate.get(ln.rate, (Decimal(0), Decimal(0)))
        by_rate[ln.rate] = (n + ln.net, t + ln.tax)
    _check_breakdown(c, doc.get("tax_breakdown"), by_rate)

    totals = c.fields(doc.get("totals"), "totals", _TOTALS_FIELDS, frozenset())
    if totals is None:
        return
    expected = {
        "net_amount": _sum([ln.net for ln in lines]),
        "tax_amount": _sum([ln.tax for ln in lines]),
        "gross_amount": _sum([ln.gross for ln in lines]),
    }
    got: dict[str, Decimal | None] = {}
    for key, want in expected.items():
        got[key] = value = c.decimal(totals, key, "totals", AMOUNT_RE, "amount (2 decimals)")
        if value is not None and value != want:
            c.add(
                "TOTALS_MISMATCH",
                f"totals.{key}",
                f"{value} is not the sum of the line values ({want})",
            )
    if expected["gross_amount"] <= 0:
        c.add("NON_POSITIVE_TOTAL", "totals.gross_amount", "a blue invoice totals more than 0")


def _check_breakdown(
    c: _Checker, value: object, by_rate: dict[Decimal, tuple[Decimal, Decimal]]
) -> None:
    if not isinstance(value, list):
        c.add("INVALID_TYPE", "tax_breakdown", "must be a list")
        return
    seen: list[Decimal] = []
    for i, raw in enumerate(value):
        path = f"tax_breakdown[{i}]"
        entry = c.fields(raw, path, _BREAKDOWN_FIELDS, frozenset())
        if entry is None:
            continue
        rate = c.decimal(entry, "tax_rate", path, RATE_RE, "tax rate")
        net = c.decimal(entry, "net_amount", path, AMOUNT_RE, "amount (2 decimals)")
        tax = c.decimal(entry, "tax_amount", path, AMOUNT_RE, "amount (2 decimals)")
        if rate is None:
            continue
        if rate not in by_rate:
            c.add("TAX_BREAKDOWN_MISMATCH", f"{path}.tax_rate", f"no line has the rate {rate}")
            continue
        if seen and rate <= seen[-1]:
            c.add(
                "TAX_BREAKDOWN_MISMATCH",
                f"{path}.tax_rate",
                "one entry per rate, ascending by rate",
            )
        seen.append(rate)
        want_net, want_tax = by_rate[rate]
        if net is not None and net != want_net:
            c.add(
                "TAX_BREAKDOWN_MISMATCH",
                f"{path}.net_amount",
                f"{net} is not the sum of the lines at {rate} ({want_net})",
            )
        if tax is not None and tax != want_tax:
            c.add(
                "TAX_BREAKDOWN_MISMATCH",
                f"{path}.tax_amount",
                f"{tax} is not the sum of the lines at {rate} ({want_tax})",
            )
    missing = set(by_rate) - set(seen)
    for rate in sorted(missing):
        c.add("TAX_BREAKDOWN_MISMATCH", "tax_breakdown", f"no entry for the rate {rate}")


def totals_of(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """(net, tax, gross) of an accepted payload, as 2-decimal strings."""
    totals = payload["totals"]
    return (str(totals["net_amount"]), str(totals["tax_amount"]), str(totals["gross_amount"]))


def negate_amount(value: str) -> str:
    """The red invoice's amount for a blue amount: exact negation, 2 decimals."""
    negated = round_half_up(-Decimal(value))
    return str(negated if negated != 0 else abs(negated))


# --- partial red-letter forms (returns) ----------------------------------------------
#
# The platform's own rule, independent of any client: the red invoices of one blue line
# together never return more units than the line has. A partial form names the lines
# and units; its red amounts are the line's pro rata, and the form that completes a line
# takes exactly what is left of it.


@dataclass(frozen=True, slots=True)
class ReturnedUnits:
    """Units and amounts already returned of one blue line (positive numbers)."""

    quantity: Decimal = Decimal(0)
    net: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    gross: Decimal = Decimal(0)


def check_red_form_lines(value: object) -> tuple[list[Violation], list[tuple[int, Decimal]]]:
    """Violations of a form's `lines` ([{line_no, quantity}]) and the parsed lines."""
    if not isinstance(value, list) or not value:
        return [Violation("INVALID_VALUE", "lines", "a non-empty list of lines")], []
    out: list[Violation] = []
    parsed: list[tuple[int, Decimal]] = []
    seen: set[int] = set()
    for i, raw in enumerate(value):
        path = f"lines[{i}]"
        if not isinstance(raw, dict) or set(raw) != {"line_no", "quantity"}:
            out.append(Violation("INVALID_VALUE", path, "an object {line_no, quantity}"))
            continue
        line_no, quantity = raw["line_no"], raw["quantity"]
        if isinstance(line_no, bool) or not isinstance(line_no, int) or line_no < 1:
            out.append(Violation("INVALID_VALUE", f"{path}.line_no", "a line number >= 1"))
            continue
        try:
            units = Decimal(str(quantity)) if isinstance(quantity, str | int) else Decimal("NaN")
        except ArithmeticError:
            units = Decimal("NaN")
        if not units.is_finite() or units <= 0 or units.as_tuple().exponent < -8:  # type: ignore[operator]
            out.append(
                Violation("INVALID_VALUE", f"{path}.quantity", "a positive number, <= 8 decimals")
            )
            continue
        if line_no in seen:
            out.append(Violation("DUPLICATE_LINE", f"{path}.line_no", "each line once"))
            continue
        seen.add(line_no)
        parsed.append((line_no, units))
    return out, parsed


def check_returnable(
    blue: Mapping[str, Any],
    lines: list[tuple[int, Decimal]],
    before: Mapping[int, Decimal],
) -> list[Violation]:
    """Why these returned units cannot be reversed from `blue` (empty: they can).
    `before`: units of each line already on live red forms."""
    out: list[Violation] = []
    by_no = {int(line["line_no"]): (i, line) for i, line in enumerate(blue["lines"])}
    for line_no, units in lines:
        found = by_no.get(line_no)
        if found is None:
            out.append(Violation("UNKNOWN_LINE", "lines", f"the invoice has no line {line_no}"))
            continue
        i, line = found
        following = blue["lines"][i + 1] if i + 1 < len(blue["lines"]) else None
        if line.get("nature") != "NORMAL" or (
            following is not None and following.get("nature") == "DISCOUNT"
        ):
            out.append(Violation("NOT_RETURNABLE", "lines", f"line {line_no} carries a discount"))
            continue
        total = Decimal(str(line.get("quantity") or 0))
        already = before.get(line_no, Decimal(0))
        if already + units > total:
            out.append(
                Violation(
                    "EXCEEDS_ORIGINAL",
                    "lines",
                    f"line {line_no}: {already} of {total} returned already, {units} more "
                    "would exceed the original",
                )
            )
    return out


def partial_red_lines(
    blue: Mapping[str, Any],
    lines: list[tuple[int, Decimal]],
    before: Mapping[int, ReturnedUnits],
) -> list[dict[str, str | int]]:
    """The red lines of a partial form: per returned line its (negative) quantity and
    amounts, pro rata; the form completing a line takes what is left of it."""
    by_no = {int(line["line_no"]): line for line in blue["lines"]}
    out: list[dict[str, str | int]] = []
    inclusive = blue.get("price_basis") == "TAX_INCLUSIVE"
    for line_no, units in lines:
        line = by_no[line_no]
        total = Decimal(str(line["quantity"]))
        net_all, tax_all = Decimal(str(line["net_amount"])), Decimal(str(line["tax_amount"]))
        gross_all = Decimal(str(line["gross_amount"]))
        prior = before.get(line_no, ReturnedUnits())
        if prior.quantity + units == total:
            net, tax, gross = net_all - prior.net, tax_all - prior.tax, gross_all - prior.gross
        else:
            tax = round_half_up(tax_all * units / total)
            if inclusive:
                gross = round_half_up(gross_all * units / total)
                net = gross - tax
            else:
                net = round_half_up(net_all * units / total)
                gross = net + tax
        out.append(
            {
                "line_no": line_no,
                "quantity": str(-units),
                "net_amount": str(round_half_up(-net)),
                "tax_amount": str(round_half_up(-tax)),
                "gross_amount": str(round_half_up(-gross)),
            }
        )
    return out


# --- limits on red-letter forms --------------------------------------------------------
#
# The platform's own deadlines and counts, checked when a form is raised (never taken
# from the client): a form only until `within_days` days after the blue invoice's issue
# date (the platform's calendar, UTC+8), and at most `max_forms` live forms (full and
# partial together) against one blue invoice.

PLATFORM_TZ: Final = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class RedFormLimits:
    """The sandbox operator's limits (`syncd sandbox --red-within-days/--red-max-per-invoice`);
    None: no limit."""

    within_days: int | None = None
    max_forms: int | None = None


def check_red_form_limits(
    limits: RedFormLimits, *, issued_at: datetime | None, live_forms: int, now: datetime
) -> list[Violation]:
    """Why one more red-letter form against a blue invoice issued at `issued_at`, with
    `live_forms` forms already, is refused at `now` (empty: it is not)."""
    out: list[Violation] = []
    if limits.max_forms is not None and live_forms >= limits.max_forms:
        out.append(
            Violation(
                "RED_LIMIT_EXCEEDED",
                "original_invoice_no",
                f"{live_forms} red-letter form(s) exist; at most {limits.max_forms} per invoice",
            )
        )
    if limits.within_days is not None and issued_at is not None:
        issued = issued_at.astimezone(PLATFORM_TZ).date()
        today = now.astimezone(PLATFORM_TZ).date()
        if (today - issued).days > limits.within_days:
            out.append(
                Violation(
                    "RED_DEADLINE_PASSED",
                    "original_invoice_no",
                    f"issued on {issued.isoformat()}; red-letter forms only within "
                    f"{limits.within_days} days",
                )
            )
    return out
