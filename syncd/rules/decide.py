"""Deciding what a row change means: issue, reverse, or ignore -- and why.

Pure: one ChangeEvent and one DocumentConfig in, one Decision out. Every
decision carries a sentence a DBA can read in `syncd preview`, in logs and in
the ledger ("status became CONFIRMED", "own write-back: only write-back columns
changed"), because "why was this order (not) invoiced?" is the first question
finance asks.

A document type with a `reissues` condition decides it after `reverses` and before
`qualifies`: a change it matches is an ISSUE marked `reissue` (see `Decision`).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from syncd._speedups import quick_init
from syncd.changes import UNAVAILABLE, ChangeEvent, ColumnValue, Op, Row
from syncd.config import DocumentConfig, SnapshotPolicy, SyncdConfig
from syncd.identity import DocumentIdentity, DocumentKind, IdentityError, KeyValue, read_key
from syncd.rules.conditions import Check, Outcome, Truth, compile_condition


class Action(enum.StrEnum):
    ISSUE = "issue"
    REVERSE = "reverse"
    IGNORE = "ignore"
    UNDECIDED = "undecided"  # a condition read a value that is not known
    RETURN = "return"  # a row of a return table: a partial red invoice
    CREDIT = "credit"  # a credit note in the document table: a red invoice of its own


# The hot path compares module constants: enum member access is an attribute lookup through
# the enum's metaclass on Python 3.11, dear at once per record.
_ISSUE: Final = Action.ISSUE
_REVERSE: Final = Action.REVERSE
_IGNORE: Final = Action.IGNORE
_UNDECIDED: Final = Action.UNDECIDED
_CREDIT: Final = Action.CREDIT
_DELETE: Final = Op.DELETE
_TRUNCATE: Final = Op.TRUNCATE
_MESSAGE: Final = Op.MESSAGE
_UPDATE: Final = Op.UPDATE
_READ: Final = Op.READ
_FALSE: Final = Truth.FALSE
_ISSUE_KIND: Final = DocumentKind.ISSUE
_REVERSAL_KIND: Final = DocumentKind.REVERSAL
_SNAPSHOT_IGNORE: Final = SnapshotPolicy.IGNORE


#: Why an update is ignored when it changed nothing, or only syncd's own write-back
#: columns (the intake gives the same reasons for updates the decoder recognised so).
NOTHING_CHANGED: Final = "no column changed"
OWN_WRITE_BACK: Final = "own write-back: only write-back columns changed"


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, why, and for which document.

    `identity` (set for issue and reverse) is the ledger's unique key and the
    input of the deterministic serial; its revision is 0 -- the ledger raises it
    when a corrected document is re-issued.

    `reissue` marks an ISSUE decided by the document's `reissues` condition: the
    intake issues the next revision if (and only if) the current one was fully
    reversed; otherwise it is a plain issue (a second blue invoice never comes of it).
    """

    action: Action
    reason: str
    document: str | None = None
    identity: DocumentIdentity | None = None
    reissue: bool = False

    @property
    def acts(self) -> bool:
        return self.action in (_ISSUE, _REVERSE)


#: Distinct reasons whose "not a qualifying change" decision a DocumentRules keeps.
_REMEMBERED_DECISIONS: Final = 64


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """What `decide` reads from a DocumentConfig, computed once instead of per event.

    The config's pydantic properties (`name`, `own_columns()`, `writes_back_to_source`)
    cost microseconds each; a caller deciding many events for one document (the
    intake's classifier) builds this once with `DocumentRules.of` and passes it along.
    """

    name: str
    table: str
    key_columns: tuple[str, ...]
    own_columns: frozenset[str]
    writes_back_to_source: bool
    invoice_no_column: str
    #: the document's conditions, compiled (`evaluate` of `doc.qualifies`/`doc.reverses`)
    qualifies: Check
    reverses: Check | None
    reissues: Check | None
    #: `doc.credit_notes.qualifies`: the row is a credit note
    credits: Check | None
    #: "not a qualifying change (...)" decisions by reason: most events are ignored for
    #: one of a few reasons, and a Decision is immutable
    _ignored: dict[str, Decision] = field(default_factory=dict, compare=False, repr=False)

    def not_qualifying(self, reason: str) -> Decision:
        decision = self._ignored.get(reason)
        if decision is None:
            decision = Decision(_IGNORE, f"not a qualifying change ({reason})", self.name)
            if len(self._ignored) < _REMEMBERED_DECISIONS:
                self._ignored[reason] = decision
        return decision

    @classmethod
    def of(cls, doc: DocumentConfig) -> DocumentRules:
        return cls(
            name=doc.name,
            table=doc.table,
            key_columns=tuple(doc.key_columns),
            own_columns=frozenset(doc.own_columns()),
            writes_back_to_source=doc.writes_back_to_source,
            invoice_no_column=doc.write_back.columns.invoice_no,
            qualifies=compile_condition(doc.qualifies),
            reverses=None if doc.reverses is None else compile_condition(doc.reverses),
            reissues=None if doc.reissues is None else compile_condition(doc.reissues),
            credits=None
            if doc.credit_notes is None
            else compile_condition(doc.credit_notes.qualifies),
        )


def identity(
    event: ChangeEvent, doc: DocumentConfig, kind: DocumentKind = DocumentKind.ISSUE
) -> DocumentIdentity:
    """The document a change belongs to, from the key columns of the row image."""
    return _identity(event, doc.name, doc.table, doc.key_columns, kind)


def _identity(
    event: ChangeEvent,
    name: str,
    table: str,
    key_columns: Sequence[str],
    kind: DocumentKind,
) -> DocumentIdentity:
    row = event.after if event.after is not None else event.before
    return DocumentIdentity.of(
        name, table, read_key(row, event.key, key_columns, event.table), kind
    )


def _changed_columns(before: Row, after: Row) -> set[str]:
    if before.keys() == after.keys():
        # the usual update: both images have the same columns, so no set union
        return {
            column
            for column, new in after.items()
            if new is not UNAVAILABLE and before[column] != new  # UNAVAILABLE: unchanged TOAST
        }
    changed = set()
    for column in set(before) | set(after):
        new = after.get(column)
        if new is UNAVAILABLE:
            continue  # not sent because unchanged (TOAST)
        if before.get(column) != new:
            changed.add(column)
    return changed


def _with_identity(
    action: Action, reason: str, event: ChangeEvent, rules: DocumentRules, reissue: bool = False
) -> Decision:
    kind = _REVERSAL_KIND if action is _REVERSE or action is _CREDIT else _ISSUE_KIND
    try:
        ident = _identity(event, rules.name, rules.table, rules.key_columns, kind)
    except IdentityError as exc:
        return Decision(_UNDECIDED, str(exc), rules.name)
    return Decision(action, reason, rules.name, ident, reissue)


def _invoice_no(row: Row | None, rules: DocumentRules) -> ColumnValue:
    column = rules.invoice_no_column
    if row is None or column not in row:
        return UNAVAILABLE
    return row[column]


def _undecided(outcome: Outcome, what: str, event: ChangeEvent, rules: DocumentRules) -> Decision:
    reason = f"cannot tell whether {what}: {outcome.reason}"
    return _with_identity(_UNDECIDED, reason, event, rules)


def decide(event: ChangeEvent, doc: DocumentConfig, rules: DocumentRules | None = None) -> Decision:
    """Decide one change of `doc.table` (route it first with `route`).

    `rules` must be `DocumentRules.of(doc)`; pass it when deciding many events.
    """
    if rules is None:
        rules = DocumentRules.of(doc)
    if event.op is _DELETE:
        return Decision(
            _IGNORE,
            "delete: a deleted row neither issues nor reverses (cancel the document instead)",
            rules.name,
        )
    if event.op is _TRUNCATE:
        return Decision(_IGNORE, "truncate: ignored", rules.name)
    if event.op is _MESSAGE:
        return Decision(_IGNORE, "logical decoding message: ignored", rules.name)
    if event.after is None:
        return Decision(_UNDECIDED, f"op {event.op.value} without an after image", rules.name)

    if event.op is _UPDATE and event.before is not None:
        changed = _changed_columns(event.before, event.after)
        if not changed:
            return Decision(_IGNORE, NOTHING_CHANGED, rules.name)
        own = rules.own_columns
        if own and changed <= own:
            return Decision(_IGNORE, OWN_WRITE_BACK, rules.name)

    if event.op is _READ:
        return _decide_snapshot(event, doc, rules)

    if rules.credits is not None:
        # Decided first: a credit note is never a blue invoice nor the reversal of one
        # (the intake finds the document it credits through its lines).
        credit = rules.credits(event)
        if credit.is_true:
            return _with_identity(_CREDIT, f"credit note: {credit.reason}", event, rules)
        if credit.is_unknown:
            return _undecided(credit, "the row is a credit note", event, rules)

    if rules.reverses is not None:
        rev = rules.reverses(event)
        if rev.is_true:
            return _with_identity(_REVERSE, rev.reason, event, rules)
        if rev.is_unknown:
            return _undecided(rev, "the change reverses an invoice", event, rules)

    if rules.reissues is not None:
        # Decided before `qualifies` and without the invoice-number guard: the row of a
        # reversed document still shows the old number. The ledger decides whether the
        # current revision was reversed (next revision) or not (never a second blue).
        again = rules.reissues(event)
        if again.is_true:
            return _with_identity(_ISSUE, f"re-issue: {again.reason}", event, rules, True)
        if again.is_unknown:
            return _undecided(again, "the change re-issues a reversed invoice", event, rules)

    qual = rules.qualifies(event)
    if qual.is_unknown:
        return _undecided(qual, "the change qualifies", event, rules)
    if qual.truth is _FALSE:
        return rules.not_qualifying(qual.reason)
    if rules.writes_back_to_source:
        invoice_no = _invoice_no(event.after, rules)
        if invoice_no is UNAVAILABLE:
            return _with_identity(
                _UNDECIDED,
                f"{qual.reason}, but {rules.invoice_no_column} is not in the row "
                "(unchanged TOAST value or missing column)",
                event,
                rules,
            )
        if invoice_no is not None:
            return _with_identity(
                _IGNORE,
                f"{qual.reason}, but already invoiced ({invoice_no!s})",
                event,
                rules,
            )
    return _with_identity(_ISSUE, qual.reason, event, rules)


def _decide_snapshot(event: ChangeEvent, doc: DocumentConfig, rules: DocumentRules) -> Decision:
    if doc.snapshot is _SNAPSHOT_IGNORE:
        return Decision(_IGNORE, "snapshot row (snapshot policy: ignore)", rules.name)
    invoice_no = _invoice_no(event.after, rules)
    if invoice_no is UNAVAILABLE:
        return _with_identity(
            _UNDECIDED,
            f"snapshot row without a usable {rules.invoice_no_column} value",
            event,
            rules,
        )
    if invoice_no is not None:
        return Decision(_IGNORE, f"snapshot row already invoiced ({invoice_no!s})", rules.name)
    qual = rules.qualifies(event)
    if qual.is_unknown:
        return _undecided(qual, "the snapshot row qualifies", event, rules)
    if qual.truth is _FALSE:
        return Decision(_IGNORE, f"snapshot row does not qualify ({qual.reason})", rules.name)
    return _with_identity(
        _ISSUE,
        f"snapshot row qualifies and carries no invoice ({qual.reason})",
        event,
        rules,
    )


def decide_return(event: ChangeEvent, doc: DocumentConfig) -> Decision:
    """Decide one change of `doc.returns.table`: RETURN when the row satisfies
    `returns.qualifies` and carries no red number yet. Snapshot rows never return (a
    return present before the connector started is confirmed again to be returned)."""
    returns = doc.returns
    if returns is None:
        raise ValueError(f"document type {doc.name} has no returns")
    if event.op in (_DELETE, _TRUNCATE, _MESSAGE):
        return Decision(_IGNORE, f"{event.op.value} of a return row: ignored", doc.name)
    if event.after is None:
        return Decision(_UNDECIDED, f"op {event.op.value} without an after image", doc.name)
    if event.op is _READ:
        return Decision(_IGNORE, "snapshot row of a return table: not returned", doc.name)
    if event.op is _UPDATE and event.before is not None:
        changed = _changed_columns(event.before, event.after)
        if not changed:
            return Decision(_IGNORE, NOTHING_CHANGED, doc.name)
        if changed <= returns.own_columns():
            return Decision(_IGNORE, OWN_WRITE_BACK, doc.name)
    qual = compile_condition(returns.qualifies)(event)
    if qual.is_unknown:
        return Decision(
            _UNDECIDED, f"cannot tell whether the return qualifies: {qual.reason}", doc.name
        )
    if qual.truth is _FALSE:
        return Decision(_IGNORE, f"not a qualifying return ({qual.reason})", doc.name)
    red_no = event.after.get(returns.write_back.red_invoice_no)
    if red_no is not None and red_no is not UNAVAILABLE:
        return Decision(_IGNORE, f"{qual.reason}, but already returned ({red_no!s})", doc.name)
    try:
        key = read_key(event.after, event.key, returns.key_columns, event.table)
    except IdentityError as exc:
        return Decision(_UNDECIDED, str(exc), doc.name)
    ident = DocumentIdentity.of(doc.name, returns.table, key, _REVERSAL_KIND)
    return Decision(Action.RETURN, qual.reason, doc.name, ident)


def route(config: SyncdConfig, table: str) -> DocumentConfig | None:
    """The document type fed by `schema.table`; None for line tables and strangers."""
    return config.route(table)


def decide_event(event: ChangeEvent, config: SyncdConfig) -> Decision:
    """Route and decide in one step, with reasons for tables that feed no document."""
    doc = config.route(event.table)
    if doc is not None:
        return decide(event, doc)
    returned = config.return_tables().get(event.table)
    if returned is not None:
        return decide_return(event, returned)
    owner = config.line_tables().get(event.table)
    if owner is not None:
        return Decision(
            _IGNORE,
            f"line table of {owner.name}: lines are read from the database at issue time",
            owner.name,
        )
    return Decision(_IGNORE, f"table {event.table} is not configured")


def key_of(doc: DocumentConfig, event: ChangeEvent) -> tuple[tuple[str, KeyValue], ...]:
    """The document key of `event` (`syncd.identity.read_key`, the one way to read it)."""
    row = event.after if event.after is not None else event.before
    return read_key(row, event.key, doc.key_columns, event.table)


def identity_of(
    doc: DocumentConfig, event: ChangeEvent, kind: DocumentKind, revision: int
) -> DocumentIdentity:
    return DocumentIdentity.of(doc.name, doc.table, key_of(doc, event), kind, revision)
