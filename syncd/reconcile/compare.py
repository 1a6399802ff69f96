"""Compare the three sides of invoicing and name every disagreement: pure, no I/O.

Finance trusts "every qualifying document has exactly one invoice" only when it can see
it. This module decides, for the documents of one period, what each side says:

* the ERP row (does it qualify now, is it cancelled, which invoice number it carries),
* syncd's ledger (the issue and reversal rows, their states, serials, numbers, amounts),
* the platform's own list of the invoices it issued (including ones typed in by hand),

and reports every disagreement as an `Exception_` of one `ExceptionClass`, with the
document key, serial, invoice number(s) and amounts. Amounts are `Decimal` end to end:
a sum of floats could hide (or invent) the one-cent difference an auditor asks about.

The rules are deliberately conservative about time: reconcile runs while the daemon
works, so a document the daemon is still processing (READY, SUBMITTED, a reversal
pending) is reported with its state, never silently skipped, but only the classes the
evidence supports are raised.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

from syncd.identity import DocumentKind
from syncd.issuers.base import PlatformInvoice
from syncd.lifecycle import DocumentState

ZERO = Decimal("0.00")


class ExceptionClass(enum.StrEnum):
    """The kinds of disagreement, in the order the report lists them."""

    #: a qualifying (or invoiced) ERP row the ledger has no document for
    MISSING_IN_LEDGER = "missing_in_ledger"
    #: a ledger document whose ERP row does not exist (deleted, or a key that never was)
    MISSING_IN_ERP = "missing_in_erp"
    #: ISSUED in the ledger, but the ERP row's invoice number is missing or different
    INVOICE_NO_MISMATCH = "invoice_no_mismatch"
    #: the ERP row is cancelled (`reverses` holds) but its blue invoice is not reversed
    CANCELLED_NOT_REVERSED = "cancelled_not_reversed"
    #: the blue invoice is reversed but the ERP row is not cancelled
    REVERSED_NOT_CANCELLED = "reversed_not_cancelled"
    #: the ledger's amounts and the platform's differ for one invoice number
    AMOUNT_MISMATCH = "amount_mismatch"
    #: an invoice at the platform the ledger does not know (issued by hand in the portal)
    UNKNOWN_TO_LEDGER = "unknown_to_ledger"
    #: an invoice the ledger holds as issued that the platform does not list
    UNKNOWN_TO_PLATFORM = "unknown_to_platform"
    #: more than one live blue invoice for one document: the exactly-once breach
    DUPLICATE_BLUE = "duplicate_blue"


@dataclass(frozen=True, slots=True)
class Amounts:
    net: Decimal = ZERO
    tax: Decimal = ZERO
    gross: Decimal = ZERO

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(self.net + other.net, self.tax + other.tax, self.gross + other.gross)

    def magnitude(self) -> Amounts:
        """Without sign: a red invoice is negative on one side, positive on another."""
        return Amounts(abs(self.net), abs(self.tax), abs(self.gross))


@dataclass(frozen=True, slots=True)
class ErpDocument:
    """One ERP document row as reconcile reads it (the current row, not a change)."""

    document_type: str
    key: str  # canonical JSON of the key, as the ledger stores it
    qualifies: bool  # `qualifies` holds for the row as it is now (snapshot semantics)
    cancelled: bool  # `reverses` holds for the row as it is now
    invoice_no: str | None  # the write-back invoice number column


@dataclass(frozen=True, slots=True)
class LedgerDocument:
    """One ledger row (an issue or a reversal), with the amounts of its frozen payload
    (None once the payload was pruned after `ledger.payload_retention_days`)."""

    id: int
    document_type: str
    source_table: str
    key: str
    kind: DocumentKind
    revision: int
    state: DocumentState
    serial: str
    invoice_no: str | None
    issued_at: datetime | None
    amounts: Amounts | None
    reverses_id: int | None = None


#: One invoice of the platform's own list (`issuers.base.InvoiceLister.list_invoices`).
PlatformEntry: TypeAlias = PlatformInvoice


def platform_amounts(entry: PlatformEntry) -> Amounts:
    t = entry.totals
    return Amounts(Decimal(t.net_amount), Decimal(t.tax_amount), Decimal(t.gross_amount))


@dataclass(frozen=True, slots=True)
class Exception_:  # noqa: N801 - "Exception" is the builtin; this is a reconciliation exception
    """One disagreement: which class, which document, and the evidence."""

    cls: ExceptionClass
    document_type: str | None
    key: str | None
    serial: str | None
    invoice_nos: tuple[str, ...]
    state: str | None
    ledger: Amounts | None
    platform: Amounts | None
    detail: str

    def amounts(self) -> Amounts:
        """The amounts this exception is about (the ledger's, else the platform's)."""
        return self.ledger or self.platform or Amounts()


@dataclass(frozen=True, slots=True)
class ClassTotal:
    count: int
    amounts: Amounts


@dataclass(slots=True)
class Report:
    """The result: exceptions in class order, totals per class and per ledger state."""

    period_start: datetime
    period_end: datetime
    documents: int  # ERP or ledger documents looked at
    platform_invoices: int
    exceptions: list[Exception_] = field(default_factory=list)
    #: "<kind>/<state>" -> amounts of the ledger rows in it
    by_state: dict[str, Amounts] = field(default_factory=dict)
    state_counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.exceptions

    def by_class(self) -> dict[ExceptionClass, ClassTotal]:
        """Every class (zeros included), with its count and summed amounts."""
        counts: dict[ExceptionClass, int] = dict.fromkeys(ExceptionClass, 0)
        sums: dict[ExceptionClass, Amounts] = {c: Amounts() for c in ExceptionClass}
        for e in self.exceptions:
            counts[e.cls] += 1
            sums[e.cls] = sums[e.cls] + e.amounts()
        return {c: ClassTotal(counts[c], sums[c]) for c in ExceptionClass}


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything `reconcile` judges. `erp` and `ledger` are the documents in scope (the
    ERP rows of the period, plus the rows of ledger documents created in it); `platform`
    is the platform's list from the period's start until now; `known_serials` and
    `known_invoice_nos` are every serial and number the whole ledger holds for the
    platform's invoices (so an invoice of another period is not "unknown")."""

    period_start: datetime
    period_end: datetime
    erp: Sequence[ErpDocument]
    ledger: Sequence[LedgerDocument]
    platform: Sequence[PlatformEntry]
    known_serials: frozenset[str]
    known_invoice_nos: frozenset[str]
    document_tables: Mapping[str, str]  # document type -> its source table
    platform_listed: bool = True  # False: no platform list (its classes are not judged)


def _ex(
    cls: ExceptionClass,
    row: LedgerDocument | None,
    detail: str,
    *,
    erp: ErpDocument | None = None,
    invoice_nos: Iterable[str | None] = (),
    platform: Amounts | None = None,
) -> Exception_:
    numbers = tuple(dict.fromkeys(n for n in invoice_nos if n))
    return Exception_(
        cls=cls,
        document_type=row.document_type if row else (erp.document_type if erp else None),
        key=row.key if row else (erp.key if erp else None),
        serial=row.serial if row else None,
        invoice_nos=numbers,
        state=row.state.value if row else None,
        ledger=row.amounts if row else None,
        platform=platform,
        detail=detail,
    )


_ISSUED = DocumentState.ISSUED
_REVERSED = DocumentState.REVERSED
_HAS_INVOICE = frozenset({DocumentState.ISSUED, DocumentState.REVERSED})


def compare(inputs: Inputs) -> Report:
    """Every exception of the period, in class order, and the totals."""
    report = Report(
        inputs.period_start,
        inputs.period_end,
        documents=0,
        platform_invoices=len(inputs.platform),
    )
    found: list[Exception_] = []
    erp_by_doc = {(e.document_type, e.key): e for e in inputs.erp}
    issues: dict[tuple[str, str], list[LedgerDocument]] = defaultdict(list)
    reversals_of: dict[int, list[LedgerDocument]] = defaultdict(list)
    for row in inputs.ledger:
        label = f"{row.kind.value}/{row.state.value}"
        report.state_counts[label] = report.state_counts.get(label, 0) + 1
        if row.amounts is not None:
            report.by_state[label] = report.by_state.get(label, Amounts()) + row.amounts
        if row.kind is DocumentKind.ISSUE:
            issues[(row.document_type, row.key)].append(row)
        elif row.reverses_id is not None:
            reversals_of[row.reverses_id].append(row)
    report.documents = len(set(erp_by_doc) | set(issues))
    platform_state = {p.invoice_no: p.state for p in inputs.platform if p.kind == "BLUE"}

    for doc, erp in erp_by_doc.items():
        if doc not in issues and (erp.qualifies or erp.invoice_no):
            why = "qualifies" if erp.qualifies else "carries an invoice number"
            found.append(
                _ex(
                    ExceptionClass.MISSING_IN_LEDGER,
                    None,
                    f"the ERP row {why} but the ledger has no document for it",
                    erp=erp,
                    invoice_nos=[erp.invoice_no],
                )
            )
    for doc, rows in issues.items():
        own = [r for r in rows if r.source_table == inputs.document_tables.get(r.document_type)]
        if not own:
            continue
        own.sort(key=lambda r: r.revision)
        current = own[-1]
        row_now = erp_by_doc.get(doc)
        if row_now is None:
            found.append(
                _ex(
                    ExceptionClass.MISSING_IN_ERP,
                    current,
                    "the ledger holds this document but the ERP has no row with its key",
                    invoice_nos=[current.invoice_no],
                )
            )
            continue
        erp = row_now
        live = [r for r in own if r.state is _ISSUED]
        if len(live) > 1:
            found.append(
                _ex(
                    ExceptionClass.DUPLICATE_BLUE,
                    current,
                    f"{len(live)} revisions are ISSUED and none of them reversed",
                    invoice_nos=[r.invoice_no for r in live],
                )
            )
        if current.state is _ISSUED:
            if erp.invoice_no != current.invoice_no:
                shown = erp.invoice_no or "nothing"
                found.append(
                    _ex(
                        ExceptionClass.INVOICE_NO_MISMATCH,
                        current,
                        f"the ledger issued {current.invoice_no}; the ERP row shows {shown}",
                        invoice_nos=[current.invoice_no, erp.invoice_no],
                    )
                )
            if erp.cancelled:
                pending = [r.state.value for r in reversals_of.get(current.id, [])]
                note = f" (reversal {', '.join(pending)})" if pending else " (no reversal)"
                found.append(
                    _ex(
                        ExceptionClass.CANCELLED_NOT_REVERSED,
                        current,
                        "the ERP row is cancelled but its invoice is not reversed" + note,
                        invoice_nos=[current.invoice_no],
                    )
                )
            at_platform = platform_state.get(current.invoice_no or "")
            if at_platform in ("REVERSED", "VOIDED") and not erp.cancelled:
                found.append(
                    _ex(
                        ExceptionClass.REVERSED_NOT_CANCELLED,
                        current,
                        f"the platform holds the invoice as {at_platform} (done in its portal); "
                        "the ledger as ISSUED and the ERP row is not cancelled",
                        invoice_nos=[current.invoice_no],
                    )
                )
        elif current.state is _REVERSED and not erp.cancelled:
            reds = [r.invoice_no for r in reversals_of.get(current.id, [])]
            found.append(
                _ex(
                    ExceptionClass.REVERSED_NOT_CANCELLED,
                    current,
                    "the invoice is reversed but the ERP row is not cancelled",
                    invoice_nos=[current.invoice_no, *reds],
                )
            )
    if inputs.platform_listed:
        doubled = {
            (e.document_type, e.key) for e in found if e.cls is ExceptionClass.DUPLICATE_BLUE
        }
        found += _platform_exceptions(inputs, issues, doubled)
    order = {c: i for i, c in enumerate(ExceptionClass)}
    found.sort(key=lambda e: (order[e.cls], e.document_type or "", e.key or "", e.invoice_nos))
    report.exceptions = found
    return report


def _platform_exceptions(
    inputs: Inputs,
    issues: Mapping[tuple[str, str], Sequence[LedgerDocument]],
    doubled: set[tuple[str | None, str | None]],
) -> list[Exception_]:
    found: list[Exception_] = []
    by_number: dict[str, PlatformEntry] = {}
    by_serial: dict[str, list[PlatformEntry]] = defaultdict(list)
    for p in inputs.platform:
        by_number[p.invoice_no] = p
        if p.serial:
            by_serial[p.serial].append(p)
    for row in inputs.ledger:
        if row.state not in _HAS_INVOICE or not row.invoice_no:
            continue
        entry = by_number.get(row.invoice_no)
        if entry is None:
            listed = row.issued_at is None or row.issued_at >= inputs.period_start
            if listed:
                found.append(
                    _ex(
                        ExceptionClass.UNKNOWN_TO_PLATFORM,
                        row,
                        f"the ledger holds {row.invoice_no} as issued; the platform does not "
                        "list it",
                        invoice_nos=[row.invoice_no],
                    )
                )
            continue
        theirs = platform_amounts(entry)
        if row.amounts is not None and row.amounts.magnitude() != theirs.magnitude():
            found.append(
                _ex(
                    ExceptionClass.AMOUNT_MISMATCH,
                    row,
                    f"ledger gross {row.amounts.gross}, platform gross {theirs.gross}",
                    invoice_nos=[row.invoice_no],
                    platform=theirs,
                )
            )
    for p in inputs.platform:
        if not inputs.period_start <= p.issued_at < inputs.period_end:
            continue
        if p.invoice_no in inputs.known_invoice_nos or (p.serial in inputs.known_serials):
            continue
        how = "by hand (no serial)" if not p.serial else f"under serial {p.serial}"
        found.append(
            Exception_(
                cls=ExceptionClass.UNKNOWN_TO_LEDGER,
                document_type=None,
                key=None,
                serial=p.serial,
                invoice_nos=(p.invoice_no,),
                state=p.state,
                ledger=None,
                platform=platform_amounts(p),
                detail=f"a {p.kind} invoice issued at the platform {how} the ledger does not know",
            )
        )
    # Blue invoices the platform still holds as issued, per document (through the serials
    # of its ledger revisions): more than one is a second invoice for one document.
    for doc, rows in issues.items():
        if doc in doubled:
            continue  # the ledger already shows it: one exception per document
        blues = [
            p
            for r in rows
            for p in by_serial.get(r.serial, ())
            if p.kind == "BLUE" and p.state == "ISSUED"
        ]
        if len(blues) > 1:
            current = max(rows, key=lambda r: r.revision)
            found.append(
                _ex(
                    ExceptionClass.DUPLICATE_BLUE,
                    current,
                    f"the platform holds {len(blues)} unreversed blue invoices for this document",
                    invoice_nos=[p.invoice_no for p in blues],
                    platform=sum((platform_amounts(p) for p in blues), Amounts()),
                )
            )
    return found


__all__ = [
    "Amounts",
    "ClassTotal",
    "ErpDocument",
    "ExceptionClass",
    "Exception_",
    "Inputs",
    "LedgerDocument",
    "PlatformEntry",
    "Report",
    "compare",
]
