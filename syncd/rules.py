"""Deciding what a row change means: issue, reverse, or ignore -- and why.

Pure: one ChangeEvent and one DocumentConfig in, one Decision out. Every
decision carries a sentence a DBA can read in `syncd preview`, in logs and in
the ledger ("status became CONFIRMED", "own write-back: only write-back columns
changed"), because "why was this order (not) invoiced?" is the first question
finance asks.

Safety rules encoded here:
- syncd's own write-back, captured by Debezium, never re-triggers anything;
- snapshot rows (`op=r`, the connector reading history) never reverse, and never
  issue for a row that already carries an invoice number;
- a condition that cannot be evaluated (TOAST value not sent, no before image)
  yields UNDECIDED -- neither issued nor silently dropped; the pipeline must
  dead-letter it with the reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from syncd.changes import UNAVAILABLE, ChangeEvent, ColumnValue, Op, Row
from syncd.conditions import Outcome, Truth, evaluate
from syncd.config import DocumentConfig, SnapshotPolicy, SyncdConfig
from syncd.serial import DocumentIdentity, DocumentKind, KeyValue


class Action(enum.StrEnum):
    ISSUE = "issue"
    REVERSE = "reverse"
    IGNORE = "ignore"
    UNDECIDED = "undecided"  # a condition read a value that is not known


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, why, and for which document.

    `identity` (set for issue and reverse) is the ledger's unique key and the
    input of the deterministic serial; its revision is 0 -- the ledger raises it
    when a corrected document is re-issued.
    """

    action: Action
    reason: str
    document: str | None = None
    identity: DocumentIdentity | None = None

    @property
    def acts(self) -> bool:
        return self.action in (Action.ISSUE, Action.REVERSE)


class IdentityError(ValueError):
    """The change does not carry the document's key columns."""


def identity(
    event: ChangeEvent, doc: DocumentConfig, kind: DocumentKind = DocumentKind.ISSUE
) -> DocumentIdentity:
    """The document a change belongs to, from the key columns of the row image."""
    row = event.after if event.after is not None else event.before
    parts: list[tuple[str, KeyValue]] = []
    for column in doc.key_columns:
        value: ColumnValue = None
        if row is not None and column in row:
            value = row[column]
        elif event.key is not None and column in event.key:
            value = event.key[column]
        if value is None or value is UNAVAILABLE:
            raise IdentityError(f"key column {column} missing in the change of {event.table}")
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            raise IdentityError(
                f"key column {column} has a {type(value).__name__} value; document keys must "
                "be integers, decimals or text"
            )
        parts.append((column, value))
    return DocumentIdentity.of(doc.name, doc.table, parts, kind)


def _changed_columns(before: Row, after: Row) -> set[str]:
    changed = set()
    for column in set(before) | set(after):
        new = after.get(column)
        if new is UNAVAILABLE:
            continue  # not sent because unchanged (TOAST)
        if before.get(column) != new:
            changed.add(column)
    return changed


def _with_identity(
    action: Action, reason: str, event: ChangeEvent, doc: DocumentConfig
) -> Decision:
    kind = DocumentKind.REVERSAL if action is Action.REVERSE else DocumentKind.ISSUE
    try:
        ident = identity(event, doc, kind)
    except IdentityError as exc:
        return Decision(Action.UNDECIDED, str(exc), doc.name)
    return Decision(action, reason, doc.name, ident)


def _invoice_no(row: Row | None, doc: DocumentConfig) -> ColumnValue:
    column = doc.write_back.columns.invoice_no
    if row is None or column not in row:
        return UNAVAILABLE
    return row[column]


def _undecided(outcome: Outcome, what: str, event: ChangeEvent, doc: DocumentConfig) -> Decision:
    reason = f"cannot tell whether {what}: {outcome.reason}"
    return _with_identity(Action.UNDECIDED, reason, event, doc)


def decide(event: ChangeEvent, doc: DocumentConfig) -> Decision:
    """Decide one change of `doc.table` (route it first with `route`)."""
    if event.op is Op.DELETE:
        return Decision(
            Action.IGNORE,
            "delete: a deleted row neither issues nor reverses (cancel the document instead)",
            doc.name,
        )
    if event.op is Op.TRUNCATE:
        return Decision(Action.IGNORE, "truncate: ignored", doc.name)
    if event.op is Op.MESSAGE:
        return Decision(Action.IGNORE, "logical decoding message: ignored", doc.name)
    if event.after is None:
        return Decision(Action.UNDECIDED, f"op {event.op.value} without an after image", doc.name)

    if event.op is Op.UPDATE and event.before is not None:
        changed = _changed_columns(event.before, event.after)
        if not changed:
            return Decision(Action.IGNORE, "no column changed", doc.name)
        own = doc.own_columns()
        if own and changed <= own:
            return Decision(
                Action.IGNORE, "own write-back: only write-back columns changed", doc.name
            )

    if event.op is Op.READ:
        return _decide_snapshot(event, doc)

    if doc.reverses is not None:
        rev = evaluate(doc.reverses, event)
        if rev.is_true:
            return _with_identity(Action.REVERSE, rev.reason, event, doc)
        if rev.is_unknown:
            return _undecided(rev, "the change reverses an invoice", event, doc)

    qual = evaluate(doc.qualifies, event)
    if qual.is_unknown:
        return _undecided(qual, "the change qualifies", event, doc)
    if qual.truth is Truth.FALSE:
        return Decision(Action.IGNORE, f"not a qualifying change ({qual.reason})", doc.name)
    if doc.writes_back_to_source:
        invoice_no = _invoice_no(event.after, doc)
        if invoice_no is UNAVAILABLE:
            return _with_identity(
                Action.UNDECIDED,
                f"{qual.reason}, but {doc.write_back.columns.invoice_no} is not in the row "
                "(unchanged TOAST value or missing column)",
                event,
                doc,
            )
        if invoice_no is not None:
            return _with_identity(
                Action.IGNORE, f"{qual.reason}, but already invoiced ({invoice_no!s})", event, doc
            )
    return _with_identity(Action.ISSUE, qual.reason, event, doc)


def _decide_snapshot(event: ChangeEvent, doc: DocumentConfig) -> Decision:
    if doc.snapshot is SnapshotPolicy.IGNORE:
        return Decision(Action.IGNORE, "snapshot row (snapshot policy: ignore)", doc.name)
    invoice_no = _invoice_no(event.after, doc)
    if invoice_no is UNAVAILABLE:
        return _with_identity(
            Action.UNDECIDED,
            f"snapshot row without a usable {doc.write_back.columns.invoice_no} value",
            event,
            doc,
        )
    if invoice_no is not None:
        return Decision(
            Action.IGNORE, f"snapshot row already invoiced ({invoice_no!s})", doc.name
        )
    qual = evaluate(doc.qualifies, event)
    if qual.is_unknown:
        return _undecided(qual, "the snapshot row qualifies", event, doc)
    if qual.truth is Truth.FALSE:
        return Decision(
            Action.IGNORE, f"snapshot row does not qualify ({qual.reason})", doc.name
        )
    return _with_identity(
        Action.ISSUE, f"snapshot row qualifies and carries no invoice ({qual.reason})", event, doc
    )


def route(config: SyncdConfig, table: str) -> DocumentConfig | None:
    """The document type fed by `schema.table`; None for line tables and strangers."""
    return config.route(table)


def decide_event(event: ChangeEvent, config: SyncdConfig) -> Decision:
    """Route and decide in one step, with reasons for tables that feed no document."""
    doc = config.route(event.table)
    if doc is not None:
        return decide(event, doc)
    owner = config.line_tables().get(event.table)
    if owner is not None:
        return Decision(
            Action.IGNORE,
            f"line table of {owner.name}: lines are read from the database at issue time",
            owner.name,
        )
    return Decision(Action.IGNORE, f"table {event.table} is not configured")
