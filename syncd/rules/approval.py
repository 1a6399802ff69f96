"""Does a document need a person's approval before it is sent? (pure)

A document type's `approval` condition is evaluated once, at intake, against the change
event's row *and* the invoice syncd built from it (`invoice.gross`, `invoice.net`,
`invoice.tax`, `invoice.type`, `invoice.lines`), so a DBA can say "gross above 100 000"
in the same language as `qualifies`.

The invariant: when in doubt, ask a person. An UNKNOWN outcome (a value Debezium did not
send, a NULL compared with a bound) holds the document for approval like a TRUE one;
only a clear FALSE lets it go to the provider unapproved.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from syncd.changes import ChangeEvent, ColumnValue
from syncd.config import DocumentConfig
from syncd.invoice.model import Invoice
from syncd.rules.conditions import Outcome, Truth, evaluate


def invoice_columns(invoice: Invoice) -> dict[str, ColumnValue]:
    """The pseudo-columns an `approval` condition may read."""
    totals = invoice.totals
    return {
        "invoice.gross": Decimal(totals.gross_amount),
        "invoice.net": Decimal(totals.net_amount),
        "invoice.tax": Decimal(totals.tax_amount),
        "invoice.type": str(invoice.invoice_type.value),
        "invoice.lines": len(invoice.lines),
    }


def approval_needed(doc: DocumentConfig, event: ChangeEvent, invoice: Invoice) -> Outcome | None:
    """The outcome that holds the document for approval, or None when it may go ahead
    (no `approval` condition, or the condition is clearly false)."""
    if doc.approval is None:
        return None
    after = {**(event.after or {}), **invoice_columns(invoice)}
    outcome = evaluate(doc.approval, replace(event, after=after))
    if outcome.truth is Truth.FALSE:
        return None
    if outcome.truth is Truth.UNKNOWN:
        return Outcome(Truth.UNKNOWN, f"approval cannot be decided ({outcome.reason})")
    return outcome


__all__ = ["approval_needed", "invoice_columns"]
