"""From ERP rows to a validated canonical invoice, as the DBAs' config says.

Pure: the document row (a decoded ChangeEvent image), the line rows (read by
`syncd.erp.lines.load_lines`) and the document config in; an Invoice or a list of
readable problems out. Every problem names the config key and the column, so an
INVALID status written back to the ERP tells a clerk what to fix ("header.buyer.name:
column buyer_name is NULL"), and nothing is guessed: a value of the wrong type
is a problem, not a silent conversion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar

from syncd.changes import UNAVAILABLE
from syncd.config import DocumentConfig, FieldSource, Scalar, SellerIdentity, TaxRateUnit
from syncd.config.related import Unresolved
from syncd.identity import DocumentIdentity, DocumentKind, key_text, serial_for
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
from syncd.invoice.partial import (
    Returned,
    ReturnRefusedError,
    build_partial_red,
    build_partial_red_lines,
)
from syncd.invoice.taxmath import LineInput, TaxMathError, build_invoice, build_red_invoice
from syncd.invoice.validation import validate
from syncd.safetext import printable

E = TypeVar("E", bound=StrEnum)
_TEMPLATE_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?)\}")
_HUNDRED = Decimal(100)
#: Longest message of one mapping problem (the ERP's error column and the log get it).
PROBLEM_LIMIT = 500
#: Bounds of a number an invoice field may hold (amounts of 数电 invoices stay far below
#: 10^16; prices and quantities have at most 8 decimals, rounding needs a few more).
_MAX_INTEGER_DIGITS = 16
_MAX_DECIMALS = 20
_NUMBER_CEILING = 10**_MAX_INTEGER_DIGITS


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One reason the document cannot become an invoice. `code` is stable."""

    code: str  # MISSING | NULL | TYPE | VALUE | RELATED | TAX_MATH | a validation code
    path: str  # config path or invoice path
    message: str

    def __post_init__(self) -> None:
        # Messages quote values from the ERP row and are written back into its error
        # column and logged: bounded, and printable whatever the row held.
        object.__setattr__(self, "message", printable(self.message, PROBLEM_LIMIT))
        object.__setattr__(self, "path", printable(self.path, 200))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True, slots=True)
class MappingResult:
    invoice: Invoice | None
    problems: tuple[MappingProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.invoice is not None and not self.problems

    def summary(self) -> str:
        """One line for the ERP's error column and logs."""
        return "; ".join(str(p) for p in self.problems)


class _MissingError(Exception):
    pass


class _Reader:
    """Resolves FieldSources against one row, collecting problems instead of raising."""

    def __init__(self, row: Mapping[str, Any], where: str) -> None:
        self.row = row
        self.where = where
        self.problems: list[MappingProblem] = []

    def problem(self, code: str, path: str, message: str) -> None:
        self.problems.append(MappingProblem(code, f"{self.where}{path}", message))

    def column(self, name: str, path: str) -> Any:
        if name not in self.row:
            self.problem("MISSING", path, f"column {name} is not in the row")
            raise _MissingError
        value = self.row[name]
        if value is UNAVAILABLE:
            self.problem(
                "MISSING", path, f"column {name} was not sent by Debezium (unchanged TOAST value)"
            )
            raise _MissingError
        if type(value) is Unresolved:  # a related row missing or ambiguous
            self.problem("RELATED", path, str(value))
            raise _MissingError
        return value

    def raw(self, src: FieldSource | None, path: str) -> Any:
        """The value after `map`/`default`; None when unmapped or NULL."""
        if src is None:
            return None
        if src.column is not None:
            value: Any = self.column(src.column, path)
        elif src.template is not None:
            value = self._template(src.template, path)
        else:
            value = src.const
        if src.map is not None and value is not None:
            mapped = _lookup(src.map, value)
            if mapped is _NOT_FOUND:
                if "default" in src.model_fields_set:
                    return src.default
                options = ", ".join(str(k) for k in src.map)
                self.problem("VALUE", path, f"value {value!r} is not in map ({options})")
                raise _MissingError
            value = mapped
        if value is None and "default" in src.model_fields_set:
            return src.default
        return value

    def _template(self, template: str, path: str) -> str:
        def repl(match: re.Match[str]) -> str:
            value = self.column(match.group(1), path)
            return "" if value is None else _text(value)

        return _TEMPLATE_REF.sub(repl, template)

    def text(self, src: FieldSource | None, path: str, *, required: bool = False) -> str | None:
        try:
            value = self.raw(src, path)
        except _MissingError:
            return None
        if value is None:
            if required:
                self.problem("NULL", path, f"{_describe(src)} is NULL")
            return None
        if type(value) is str:  # the usual case first (isinstance on a union is dearer)
            text: str = value.strip()
        elif isinstance(value, str | int | Decimal) and not isinstance(value, bool):
            text = _text(value).strip()
        else:
            got = type(value).__name__
            self.problem("TYPE", path, f"{_describe(src)}: expected text, got {got}")
            return None
        if not text and required:
            self.problem("NULL", path, f"{_describe(src)} is empty")
            return None
        return text or None

    def decimal(self, src: FieldSource | None, path: str, *, required: bool) -> Decimal | None:
        try:
            value = self.raw(src, path)
        except _MissingError:
            return None
        if value is None:
            if required:
                self.problem("NULL", path, f"{_describe(src)} is NULL")
            return None
        if type(value) is Decimal:  # what a numeric column gives: already the number
            return self._in_range(value, src, path)
        if isinstance(value, bool):
            self.problem("TYPE", path, f"{_describe(src)}: expected a number, got a boolean")
            return None
        if isinstance(value, Decimal | int):
            if isinstance(value, int) and abs(value) >= _NUMBER_CEILING:
                return self._in_range(Decimal(_NUMBER_CEILING), src, path)
            return self._in_range(Decimal(value), src, path)
        if isinstance(value, float):
            return self._in_range(Decimal(repr(value)), src, path)  # constants from YAML
        if isinstance(value, str):
            text = value.strip()
            try:
                number = Decimal(text) if len(text) <= 64 else Decimal("NaN")
            except InvalidOperation:
                number = Decimal("NaN")
            if number.is_finite():
                return self._in_range(number, src, path)
            self.problem("TYPE", path, f"{_describe(src)}: {_clip(value)} is not a number")
            return None
        got = type(value).__name__
        self.problem("TYPE", path, f"{_describe(src)}: expected a number, got {got}")
        return None

    def _in_range(self, number: Decimal, src: FieldSource | None, path: str) -> Decimal | None:
        """`number` if an invoice can hold it: finite, under 10^16, at most 20 decimals.

        Invoice maths multiplies and rounds these values; a crafted 1e999999999 would
        overflow it, and one with a million decimals would cost seconds per line."""
        if not number.is_finite():
            self.problem("TYPE", path, f"{_describe(src)}: {number} is not a finite number")
            return None
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if number.adjusted() >= _MAX_INTEGER_DIGITS or exponent < -_MAX_DECIMALS:
            self.problem(
                "RANGE",
                path,
                f"{_describe(src)}: out of range (at most "
                f"{_MAX_INTEGER_DIGITS} digits before the point and {_MAX_DECIMALS} "
                "after it)",
            )
            return None
        return number

    def boolean(self, src: FieldSource | None, path: str) -> bool:
        try:
            value = self.raw(src, path)
        except _MissingError:
            return False
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        self.problem("TYPE", path, f"{_describe(src)}: {value!r} is not a boolean")
        return False

    def enum(
        self, kind: type[E], src: FieldSource | None, path: str, *, required: bool
    ) -> E | None:
        try:
            value = self.raw(src, path)
        except _MissingError:
            return None
        if value is None:
            if required:
                self.problem("NULL", path, f"{_describe(src)} is NULL")
            return None
        text = str(value).strip().upper()
        try:
            return kind(text)
        except ValueError:
            options = ", ".join(m.value for m in kind)
            self.problem("VALUE", path, f"{_describe(src)}: {value!r} is not one of {options}")
            return None

    def date_value(self, src: FieldSource | None, path: str) -> date | None:
        try:
            value = self.raw(src, path)
        except _MissingError:
            return None
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip()[:10])
            except ValueError:
                pass
        self.problem("TYPE", path, f"{_describe(src)}: {value!r} is not a date")
        return None


_BOOLS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}
_NOT_FOUND: Any = object()


def _lookup(table: Mapping[Any, Scalar], value: Any) -> Any:
    if isinstance(value, bool):
        if value in table and isinstance(next(k for k in table if k == value), bool):
            return table[value]
        for key in table:
            if isinstance(key, str) and key.lower() == str(value).lower():
                return table[key]
        return _NOT_FOUND
    for key, mapped in table.items():
        if isinstance(key, bool):
            continue
        if key == value or str(key) == _text(value):
            return mapped
    return _NOT_FOUND


def _clip(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _text(value: Any) -> str:
    """A column value as text; a number in plain notation only while that stays short (a
    crafted 1E+999999999 would otherwise become a billion digits)."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if (
            isinstance(exponent, int)
            and exponent >= -_MAX_DECIMALS
            and value.adjusted() < _MAX_INTEGER_DIGITS
        ):
            return format(value, "f")
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _NUMBER_CEILING:
        # str() of a 5000-digit int raises; no text field of an invoice needs its digits
        return f"<integer of {int(value.bit_length() * 0.30103) + 1} digits>"
    return str(value)


def _describe(src: FieldSource | None) -> str:
    if src is None:
        return "value"
    if src.column is not None:
        return f"column {src.column}"
    if src.template is not None:
        return f"template {src.template!r}"
    return f"constant {src.const!r}"


def source_ref(identity: DocumentIdentity) -> SourceRef:
    """The invoice's `source` block for `identity` (key values as int or text)."""
    return SourceRef(
        document=identity.document_type,
        table=identity.source_table,
        key={
            name: value if isinstance(value, int) else key_text(name, value)
            for name, value in identity.key
        },
        revision=identity.revision,
    )


def _seller(seller: SellerIdentity) -> Party:
    return _party(
        seller.name,
        seller.tax_id,
        seller.address,
        seller.phone,
        seller.bank_name,
        seller.bank_account,
    )


@lru_cache(maxsize=64)
def _party(
    name: str,
    tax_id: str | None,
    address: str | None,
    phone: str | None,
    bank_name: str | None,
    bank_account: str | None,
) -> Party:
    """The seller's Party, built once per distinct seller: it is the same on every invoice
    of a config, and a Party is immutable, so invoices can share one instance. Keyed by
    the values, not the (mutable) config object."""
    return Party(
        name=name,
        tax_id=tax_id,
        address=address,
        phone=phone,
        bank_name=bank_name,
        bank_account=bank_account,
    )


def _line_inputs(
    doc: DocumentConfig, lines: Sequence[Mapping[str, Any]], problems: list[MappingProblem]
) -> list[LineInput]:
    cols = doc.lines.columns
    out: list[LineInput] = []
    for index, row in enumerate(lines):
        label = row.get(doc.lines.order_by, index + 1)
        r = _Reader(row, f"lines[{_text(label)}].")
        name = r.text(cols.name, "name", required=True)
        tax_code = r.text(cols.tax_code, "tax_code", required=True)
        quantity = r.decimal(cols.quantity, "quantity", required=True)
        unit_price = r.decimal(cols.unit_price, "unit_price", required=True)
        tax_rate = r.decimal(cols.tax_rate, "tax_rate", required=True)
        discount = r.decimal(cols.discount_amount, "discount_amount", required=False)
        spec = r.text(cols.spec, "spec")
        unit = r.text(cols.unit, "unit")
        policy = r.enum(TaxPolicy, cols.tax_policy, "tax_policy", required=False)
        problems.extend(r.problems)
        if (
            r.problems
            or name is None
            or tax_code is None
            or quantity is None
            or unit_price is None
            or tax_rate is None
        ):
            continue
        if doc.lines.tax_rate_unit is TaxRateUnit.PERCENT:
            tax_rate = tax_rate / _HUNDRED
        out.append(
            LineInput(
                name=name,
                tax_code=tax_code,
                quantity=quantity,
                unit_price=unit_price,
                tax_rate=tax_rate.normalize() if tax_rate else Decimal(0),
                spec=spec,
                unit=unit,
                discount_amount=discount if discount else None,
                tax_policy=policy,
            )
        )
    return out


def build_blue(
    doc: DocumentConfig,
    row: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    identity: DocumentIdentity,
    max_lines: int | None = None,
) -> MappingResult:
    """The BLUE invoice for one document row and its lines, validated; a document of more
    than `max_lines` lines is refused before any line is read."""
    h = doc.header
    r = _Reader(row, "header.")
    buyer_name = r.text(h.buyer.name, "buyer.name", required=True)
    buyer = dict(
        tax_id=r.text(h.buyer.tax_id, "buyer.tax_id"),
        address=r.text(h.buyer.address, "buyer.address"),
        phone=r.text(h.buyer.phone, "buyer.phone"),
        bank_name=r.text(h.buyer.bank_name, "buyer.bank_name"),
        bank_account=r.text(h.buyer.bank_account, "buyer.bank_account"),
        email=r.text(h.buyer.email, "buyer.email"),
    )
    natural_person = r.boolean(h.buyer.natural_person, "buyer.natural_person")
    invoice_type = r.enum(InvoiceType, h.invoice_type, "invoice_type", required=True)
    price_basis = r.enum(PriceBasis, h.price_basis, "price_basis", required=True)
    currency = r.text(h.currency, "currency", required=True)
    remark = r.text(h.remark, "remark")
    drawer = r.text(h.drawer, "drawer")
    payee = r.text(h.payee, "payee")
    reviewer = r.text(h.reviewer, "reviewer")
    issue_date = r.date_value(h.issue_date, "issue_date")
    problems = list(r.problems)
    if max_lines is not None and len(lines) > max_lines:
        problems.append(
            MappingProblem(
                "TOO_MANY_LINES",
                "lines",
                f"more than {max_lines} rows in {doc.lines.table} (limits.max_lines_per_document)",
            )
        )
        return MappingResult(None, tuple(problems))
    if not lines:
        problems.append(
            MappingProblem("NO_LINES", "lines", f"no rows in {doc.lines.table} for this document")
        )
    seller = doc.seller_for(row)
    if isinstance(seller, str):  # the row's company has no issuer account
        problems.append(MappingProblem("NO_ACCOUNT", "account", seller))
    inputs = _line_inputs(doc, lines, problems)
    if (
        problems
        or buyer_name is None
        or invoice_type is None
        or price_basis is None
        or isinstance(seller, str)
    ):
        return MappingResult(None, tuple(problems))
    try:
        invoice = build_invoice(
            serial=serial_for(identity),
            invoice_type=invoice_type,
            seller=_seller(seller),
            buyer=Buyer(name=buyer_name, natural_person=natural_person, **buyer),
            lines=inputs,
            price_basis=price_basis,
            source=source_ref(identity),
            currency=(currency or "CNY").upper(),
            issue_date=issue_date,
            drawer=drawer,
            payee=payee,
            reviewer=reviewer,
            remark=remark,
        )
    except (TaxMathError, ArithmeticError) as exc:
        return MappingResult(None, (MappingProblem("TAX_MATH", "lines", _first_line(exc)),))
    except ValueError as exc:  # pydantic: a value the invoice model refuses
        return MappingResult(None, (MappingProblem("VALUE", "", _first_line(exc)),))
    return _validated(invoice)


def reversal_reason(doc: DocumentConfig, row: Mapping[str, Any]) -> MappingResult | ReversalReason:
    r = _Reader(row, "header.")
    reason = r.enum(ReversalReason, doc.header.reversal_reason, "reversal_reason", required=True)
    if reason is None:
        return MappingResult(None, tuple(r.problems))
    return reason


def build_red(
    doc: DocumentConfig,
    row: Mapping[str, Any],
    blue: Invoice,
    original_invoice_no: str,
    identity: DocumentIdentity,
) -> MappingResult:
    """The RED invoice reversing `blue` (the frozen payload of the issued invoice).

    `row` is the document row of the cancelling change (for the reversal reason);
    the amounts come from the blue invoice, never from the current ERP rows,
    which may have been edited since.
    """
    reason = reversal_reason(doc, row)
    if isinstance(reason, MappingResult):
        return reason
    if identity.kind is not DocumentKind.REVERSAL:
        raise ValueError("a red invoice needs a REVERSAL identity")
    try:
        red = build_red_invoice(
            blue,
            serial=serial_for(identity),
            original_invoice_no=original_invoice_no,
            reason=reason,
        )
    except ValueError as exc:
        return MappingResult(None, (MappingProblem("VALUE", "", _first_line(exc)),))
    return _validated(red)


def _validated(invoice: Invoice) -> MappingResult:
    problems = tuple(MappingProblem(p.code, p.path, p.message) for p in validate(invoice))
    return MappingResult(invoice, problems)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def build_return_red(
    doc: DocumentConfig,
    row: Mapping[str, Any],
    blue: Invoice,
    original_invoice_no: str,
    identity: DocumentIdentity,
    before: Mapping[int, Returned],
) -> MappingResult:
    """The partial RED invoice of one return row (`doc.returns`): `returns.quantity` units
    of the blue invoice's line `returns.line`, given what earlier reds returned of each
    line (`before`, see `syncd.invoice.partial.returned_so_far`)."""
    returns = doc.returns
    if returns is None:
        raise ValueError(f"document type {doc.name} has no returns")
    if identity.kind is not DocumentKind.REVERSAL:
        raise ValueError("a red invoice needs a REVERSAL identity")
    r = _Reader(row, "returns.")
    reason = r.enum(ReversalReason, returns.reversal_reason, "reversal_reason", required=True)
    line = r.decimal(FieldSource(column=returns.line), "line", required=True)
    quantity = r.decimal(FieldSource(column=returns.quantity), "quantity", required=True)
    if reason is None or line is None or quantity is None or r.problems:
        return MappingResult(None, tuple(r.problems))
    if line != line.to_integral_value() or line < 1:
        return MappingResult(
            None, (MappingProblem("VALUE", "returns.line", f"line {line} is not a line number"),)
        )
    try:
        red = build_partial_red(
            blue,
            line_no=int(line),
            quantity=quantity,
            before=before.get(int(line), Returned()),
            serial=serial_for(identity),
            original_invoice_no=original_invoice_no,
            reason=reason,
        )
    except ReturnRefusedError as exc:
        return MappingResult(None, (MappingProblem("RETURN", "returns", str(exc)),))
    return _validated(red)


def build_credit_red(
    doc: DocumentConfig,
    row: Mapping[str, Any],
    blue: Invoice,
    original_invoice_no: str,
    identity: DocumentIdentity,
    quantities: Mapping[int, Decimal],
    before: Mapping[int, Returned],
) -> MappingResult:
    """The RED invoice of a credit note (`doc.credit_notes`): of each blue line (by its
    number on the blue invoice) the credited units, given what earlier reds returned."""
    credit = doc.credit_notes
    if credit is None:
        raise ValueError(f"document type {doc.name} has no credit_notes")
    if identity.kind is not DocumentKind.REVERSAL:
        raise ValueError("a red invoice needs a REVERSAL identity")
    r = _Reader(row, "credit_notes.")
    reason = r.enum(ReversalReason, credit.reversal_reason, "reversal_reason", required=True)
    if reason is None or r.problems:
        return MappingResult(None, tuple(r.problems))
    try:
        red = build_partial_red_lines(
            blue,
            quantities,
            before=before,
            serial=serial_for(identity),
            original_invoice_no=original_invoice_no,
            reason=reason,
        )
    except ReturnRefusedError as exc:
        return MappingResult(None, (MappingProblem("RETURN", "credit_notes", str(exc)),))
    return _validated(red)
