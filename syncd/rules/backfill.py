"""Deciding what a row *as it is now* asks for: the backfill's counterpart of `decide`.

A backfill reads current rows, not changes, so it sees each row the way the connector's
snapshot does (`op=r`: `becomes: X` holds for a row whose value is X). Unlike the daemon's
snapshot rule it acts on the row whatever the document's `snapshot` policy says -- an
operator asked for exactly these rows -- and it may reverse: a row that satisfies
`reverses` now (an order cancelled while the connector was down) asks for the reversal of
its invoice. Everything else is `decide`'s: an uninvoiced row that satisfies `qualifies`
is an ISSUE under the same identity (and so the same serial) a change event of that row
gets; a row already carrying an invoice number is ignored; a condition that cannot be
evaluated is UNDECIDED with its reason. Whether the ledger already holds the document is
decided by the pipeline (`syncd.pipeline.backfill`), not here.
"""

from __future__ import annotations

from syncd.changes import UNAVAILABLE, ChangeEvent, Op
from syncd.config import DocumentConfig
from syncd.identity import DocumentIdentity, DocumentKind, IdentityError, read_key
from syncd.rules.decide import Action, Decision, DocumentRules


def decide_current(
    event: ChangeEvent, doc: DocumentConfig, rules: DocumentRules | None = None
) -> Decision:
    """ISSUE, REVERSE, IGNORE or UNDECIDED for a row read now (`event.op` must be READ)."""
    if event.op is not Op.READ or event.after is None:
        raise ValueError("a backfill decides rows read as they are now (op r with a row)")
    if rules is None:
        rules = DocumentRules.of(doc)
    row = event.after
    if rules.reverses is not None:
        rev = rules.reverses(event)
        if rev.is_true:
            return _with_identity(Action.REVERSE, rev.reason, event, doc, DocumentKind.REVERSAL)
        if rev.is_unknown:
            return Decision(
                Action.UNDECIDED, f"cannot tell whether the row reverses: {rev.reason}", doc.name
            )
    qual = rules.qualifies(event)
    if qual.is_unknown:
        return Decision(
            Action.UNDECIDED, f"cannot tell whether the row qualifies: {qual.reason}", doc.name
        )
    if not qual.is_true:
        return Decision(Action.IGNORE, f"does not qualify ({qual.reason})", doc.name)
    if rules.writes_back_to_source:
        invoice_no = row.get(rules.invoice_no_column, UNAVAILABLE)
        if invoice_no is UNAVAILABLE:
            return Decision(
                Action.UNDECIDED,
                f"{qual.reason}, but the row has no column {rules.invoice_no_column}",
                doc.name,
            )
        if invoice_no is not None:
            return Decision(
                Action.IGNORE, f"{qual.reason}, but already invoiced ({invoice_no!s})", doc.name
            )
    return _with_identity(Action.ISSUE, qual.reason, event, doc, DocumentKind.ISSUE)


def _with_identity(
    action: Action, reason: str, event: ChangeEvent, doc: DocumentConfig, kind: DocumentKind
) -> Decision:
    try:
        key = read_key(event.after, event.key, doc.key_columns, event.table)
    except IdentityError as exc:
        return Decision(Action.UNDECIDED, str(exc), doc.name)
    return Decision(action, reason, doc.name, DocumentIdentity.of(doc.name, doc.table, key, kind))
