"""Ledger, offsets and partition leases: every function takes the caller's `Connection`.

The caller owns the transaction on purpose: the pipeline puts the ledger change, the
ERP write-back and the offset commit of a batch into ONE transaction, so either all of
it is durable or none of it is. Nothing here commits or rolls back.

Concurrency rules the functions rely on (PostgreSQL, READ COMMITTED):

* Identity: `INSERT ... ON CONFLICT DO NOTHING` on the unique identity. A concurrent
  insert of the same identity waits for the first transaction and then sees its row.
* State: every change is `UPDATE ... WHERE id = :id AND state = :expected`; zero rows
  means someone else moved the row first -> `StaleStateError`, roll back.
* Fencing: a writer takes `FOR SHARE` on its partition lease rows and checks the epoch;
  a replica claiming the partition bumps the epoch with an UPDATE, which waits for those
  share locks. So either the old owner's transaction commits before the claim (and the new
  owner then reads its offsets), or it sees the new epoch -> `FencedError`, roll back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from syncd.changes import RecordPosition
from syncd.identity import DocumentKind
from syncd.ledger.audit import append as _append_audit
from syncd.ledger.bulk import json_insert as _json_insert
from syncd.ledger.bulk import json_rows as _json_rows
from syncd.ledger.bulk import statement as _statement
from syncd.ledger.errors import (
    DocumentNotFoundError,
    FencedError,
    FrozenPayloadError,
    IdentityConflictError,
    NotReversibleError,
    StaleStateError,
)
from syncd.ledger.models import (
    Approval,
    AuditEntry,
    DocumentIdentity,
    DocumentRow,
    Operator,
    TopicPartition,
    payload_hash,
)
from syncd.ledger.schema import approvals, audit, documents, offsets, partition_leases
from syncd.lifecycle import (
    INITIAL_STATES,
    PAYLOAD_FROZEN,
    PAYLOAD_PRUNABLE,
    RESUME_STATES,
    TERMINAL_STATES,
    WAITING_FOR_PEOPLE,
    DocumentState,
    InvalidTransitionError,
    kinds_allowing,
)

#: Columns `transition` may set besides the state.
UPDATABLE_FIELDS: Final = frozenset(
    {
        "payload",
        "payload_hash",
        "attempts",
        "next_attempt_at",
        "last_error_code",
        "last_error",
        "invoice_no",
        "issued_at",
        "invoice_url",
        "check_code",
        "source_topic",
        "source_partition",
        "source_offset",
        "source_ts_ms",
        "lease_owner",
        "lease_epoch",
    }
)
#: The payload may only change while nothing has been sent.
_PAYLOAD_MUTABLE: Final = frozenset({DocumentState.PENDING, DocumentState.INVALID})

_IDENTITY_COLS = (
    documents.c.document_type,
    documents.c.source_table,
    documents.c.source_key,
    documents.c.kind,
    documents.c.revision,
)


def _identity_tuple(i: DocumentIdentity) -> tuple[str, str, str, str, int]:
    return (i.document_type, i.source_table, i.source_key, i.kind.value, i.revision)


# --------------------------------------------------------------------------------------
# documents
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to record; `state` defaults to the kind's first state."""

    identity: DocumentIdentity
    serial: str
    state: DocumentState | None = None
    payload: Mapping[str, Any] | None = None
    payload_hash: str | None = None
    position: RecordPosition | None = None
    source_ts_ms: int | None = None
    reverses_id: int | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    details: Mapping[str, Any] | None = None

    def initial_state(self) -> DocumentState:
        kind = self.identity.kind
        state = self.state or (
            DocumentState.PENDING if kind is DocumentKind.ISSUE else DocumentState.REVERSAL_PENDING
        )
        if state not in INITIAL_STATES[kind]:
            raise InvalidTransitionError(self.identity, state, state, kind)
        return state

    def values(self, *, lease_owner: str | None, lease_epoch: int | None) -> dict[str, Any]:
        state = self.initial_state()
        if state in PAYLOAD_FROZEN and self.payload is None:
            raise ValueError(
                f"document {self.identity}: state {state.value} needs a frozen payload"
            )
        if self.identity.kind is DocumentKind.REVERSAL and self.reverses_id is None:
            raise ValueError(f"document {self.identity}: a reversal needs reverses_id")
        digest = self.payload_hash
        if digest is None and self.payload is not None:
            digest = payload_hash(self.payload)
        pos = self.position
        return {
            "document_type": self.identity.document_type,
            "source_table": self.identity.source_table,
            "source_key": self.identity.source_key,
            "kind": self.identity.kind.value,
            "revision": self.identity.revision,
            "state": state.value,
            "serial": self.serial,
            "payload": None if self.payload is None else dict(self.payload),
            "payload_hash": digest,
            "attempts": 0,
            "next_attempt_at": self.next_attempt_at,
            "last_error_code": self.last_error_code,
            "last_error": self.last_error,
            "reverses_id": self.reverses_id,
            "source_topic": pos.topic if pos else None,
            "source_partition": pos.partition if pos else None,
            # a negative offset: not from a Kafka record (`syncd backfill`)
            "source_offset": pos.offset if pos and pos.offset >= 0 else None,
            "source_ts_ms": self.source_ts_ms,
            "lease_owner": lease_owner,
            "lease_epoch": lease_epoch,
        }


_COLUMNS_BUT_PAYLOAD = [c for c in documents.c if c.name != "payload"]


def ensure_document(
    conn: Connection,
    identity: DocumentIdentity,
    serial: str,
    *,
    actor: str,
    state: DocumentState | None = None,
    payload: Mapping[str, Any] | None = None,
    payload_hash: str | None = None,
    position: RecordPosition | None = None,
    source_ts_ms: int | None = None,
    reverses_id: int | None = None,
    last_error_code: str | None = None,
    last_error: str | None = None,
    lease_owner: str | None = None,
    lease_epoch: int | None = None,
    reason: str = "recorded",
    details: Mapping[str, Any] | None = None,
    operator: Operator | None = None,
) -> tuple[DocumentRow, bool]:
    """Return the ledger row of `identity`, creating it if it does not exist yet.

    `created` is False when the row existed (a redelivered or repeated event): the row is
    returned unchanged, and the caller decides from its state what is left to do.
    """
    doc = NewDocument(
        identity=identity,
        serial=serial,
        state=state,
        payload=payload,
        payload_hash=payload_hash,
        position=position,
        source_ts_ms=source_ts_ms,
        reverses_id=reverses_id,
        last_error_code=last_error_code,
        last_error=last_error,
        details=details,
    )
    return ensure_documents(
        conn,
        [doc],
        actor=actor,
        lease_owner=lease_owner,
        lease_epoch=lease_epoch,
        reason=reason,
        operator=operator,
    )[0]


def ensure_documents(
    conn: Connection,
    docs: Sequence[NewDocument],
    *,
    actor: str,
    lease_owner: str | None = None,
    lease_epoch: int | None = None,
    reason: str = "recorded",
    operator: Operator | None = None,
) -> list[tuple[DocumentRow, bool]]:
    """Batch `ensure_document`: one INSERT, one SELECT, one audit INSERT for the batch.

    Results are in input order; an identity given twice yields the same row twice (the
    second not `created`).
    """
    if not docs:
        return []
    unique: dict[DocumentIdentity, NewDocument] = {}
    for d in docs:
        unique.setdefault(d.identity, d)
    ordered = sorted(unique.values(), key=lambda d: _identity_tuple(d.identity))
    rows = [d.values(lease_owner=lease_owner, lease_epoch=lease_epoch) for d in ordered]
    # One INSERT ... SELECT FROM jsonb_to_recordset for the batch (`_json_insert`), the same
    # statement for every batch size. The payloads are ours already: not returning them
    # saves parsing each one back.
    names = tuple(rows[0])
    stmt = _statement(
        ("ensure_documents", names),
        lambda: (
            _json_insert(documents, names).on_conflict_do_nothing().returning(*_COLUMNS_BUT_PAYLOAD)
        ),
    )
    by_serial = {d.serial: d for d in ordered}
    created: dict[DocumentIdentity, DocumentRow] = {}
    for m in conn.execute(stmt, _json_rows(rows)).mappings():
        payload = by_serial[m["serial"]].payload
        row = DocumentRow.from_mapping({**m, "payload": None if payload is None else dict(payload)})
        created[row.identity] = row
    missing = [d.identity for d in ordered if d.identity not in created]
    existing: dict[DocumentIdentity, DocumentRow] = {}
    if missing:
        q = select(documents).where(
            tuple_(*_IDENTITY_COLS).in_([_identity_tuple(i) for i in missing])
        )
        for m in conn.execute(q).mappings():
            row = DocumentRow.from_mapping(m)
            existing[row.identity] = row
    for d in ordered:
        row_or_none = created.get(d.identity) or existing.get(d.identity)
        if row_or_none is None:
            # The insert did nothing, yet no row has this identity: the serial is taken.
            other = find_by_serial(conn, d.serial)
            raise IdentityConflictError(
                str(d.identity), d.serial, f"document {other.identity}" if other else "?"
            )
        if row_or_none.serial != d.serial:
            raise IdentityConflictError(
                str(d.identity), d.serial, f"its recorded serial {row_or_none.serial}"
            )
    if created:
        _append_audit(
            conn,
            [
                {
                    "document_id": row.id,
                    "from_state": None,
                    "to_state": row.state.value,
                    "reason": reason,
                    "actor": actor,
                    "details": None if unique[i].details is None else dict(unique[i].details or {}),
                }
                for i, row in created.items()
            ],
            operator=operator,
        )
    seen: set[DocumentIdentity] = set()
    out: list[tuple[DocumentRow, bool]] = []
    for d in docs:
        if d.identity in created and d.identity not in seen:
            out.append((created[d.identity], True))
        else:
            out.append((created.get(d.identity) or existing[d.identity], False))
        seen.add(d.identity)
    return out


@dataclass(frozen=True, slots=True)
class Transition:
    """One conditional state change for `transition_many`."""

    document_id: int
    expected: DocumentState
    new: DocumentState
    reason: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] | None = None
    #: also require this row version (from the row the decision was based on)
    expected_version: int | None = None


def transition(
    conn: Connection,
    doc_id: int,
    expected_state: DocumentState,
    new_state: DocumentState,
    *,
    reason: str = "",
    actor: str = "syncd",
    details: Mapping[str, Any] | None = None,
    expected_version: int | None = None,
    operator: Operator | None = None,
    **fields: Any,
) -> DocumentRow:
    """Move a document from `expected_state` to `new_state`, writing the audit row.

    With `expected_version` (the `version` of the row the decision was based on) the
    update also fails if the row went elsewhere and came back in the meantime.

    Raises `InvalidTransitionError` for a move the state machine forbids (checked against
    the row's kind inside the UPDATE), `StaleStateError` when the row is no longer in
    `expected_state`, `DocumentNotFoundError`, or `FrozenPayloadError`.

    `operator`: the person this is done for (OS user, reason given), recorded on the
    audit row besides `actor` and the database roles.
    """
    return transition_many(
        conn,
        [Transition(doc_id, expected_state, new_state, reason, fields, details, expected_version)],
        actor=actor,
        operator=operator,
    )[0]


def transition_many(
    conn: Connection,
    changes: Sequence[Transition],
    *,
    actor: str = "syncd",
    payloads: Mapping[int, Mapping[str, Any] | None] | None = None,
    operator: Operator | None = None,
) -> list[DocumentRow]:
    """Several conditional updates and one audit INSERT; results in input order.

    Any failure raises the same typed error `transition` would (roll back). When every
    change is for a different document, changes with the same (from, to, fields) shape
    are applied by ONE `UPDATE ... FROM unnest(...)` statement each; otherwise (one
    document moved twice in the batch) they are applied one by one, in order.

    `payloads`: document id -> its frozen payload, already held by the caller: those rows
    come back with it instead of the database parsing and sending each one back.
    """
    if not changes:
        return []
    for ch in changes:
        _validate(ch)
    ids = [ch.document_id for ch in changes]
    if len(changes) == 1 or len(set(ids)) != len(ids):
        out = [_transition_one(conn, ch) for ch in changes]
    else:
        by_id: dict[int, DocumentRow] = {}
        groups: dict[tuple[Any, ...], list[Transition]] = {}
        for ch in changes:
            groups.setdefault(_shape(ch), []).append(ch)
        for group in groups.values():
            by_id.update(_transition_group(conn, group, payloads))
        out = [by_id[i] for i in ids]
    _append_audit(
        conn,
        [
            {
                "document_id": ch.document_id,
                "from_state": ch.expected.value,
                "to_state": ch.new.value,
                "reason": ch.reason or f"{ch.expected.value} -> {ch.new.value}",
                "actor": actor,
                "details": None if ch.details is None else dict(ch.details),
            }
            for ch in changes
        ],
        operator=operator,
    )
    return out


def _validate(ch: Transition) -> None:
    if not kinds_allowing(ch.expected, ch.new):
        raise InvalidTransitionError(ch.document_id, ch.expected, ch.new)
    unknown = set(ch.fields) - UPDATABLE_FIELDS
    if unknown:
        raise TypeError(f"document {ch.document_id}: cannot set {sorted(unknown)} in a transition")
    if "payload" in ch.fields and ch.expected not in _PAYLOAD_MUTABLE:
        raise FrozenPayloadError(ch.document_id, ch.expected)


def _shape(ch: Transition) -> tuple[Any, ...]:
    # Payload changes (rare: INVALID -> READY) keep the one-by-one path: jsonb arrays
    # are not worth it.
    if "payload" in ch.fields:
        return ("single", ch.document_id)
    return (ch.expected, ch.new, tuple(sorted(ch.fields)), ch.expected_version is not None)


def _transition_group(
    conn: Connection,
    group: list[Transition],
    payloads: Mapping[int, Mapping[str, Any] | None] | None = None,
) -> dict[int, DocumentRow]:
    first = group[0]
    if len(group) == 1 or "payload" in first.fields:
        return {ch.document_id: _transition_one(conn, ch) for ch in group}
    names = tuple(sorted(first.fields))
    with_version = first.expected_version is not None
    known = payloads is not None and all(ch.document_id in payloads for ch in group)
    stmt = _statement(
        ("transition", first.expected, first.new, names, with_version, known),
        lambda: _transition_statement(first.expected, first.new, names, with_version, known),
    )
    params: dict[str, Any] = {"b_id": [ch.document_id for ch in group]}
    for name in names:
        params[f"b_{name}"] = [ch.fields[name] for ch in group]
    if with_version:
        params["b_version"] = [ch.expected_version for ch in group]
    updated = conn.execute(stmt, params).mappings()
    if known and payloads is not None:
        done = {
            m["id"]: DocumentRow.from_mapping({**m, "payload": payloads[m["id"]]}) for m in updated
        }
    else:
        done = {m["id"]: DocumentRow.from_mapping(m) for m in updated}
    for ch in group:
        if ch.document_id not in done:
            _raise_for(conn, ch)
    return done


def _transition_statement(
    expected: DocumentState,
    new: DocumentState,
    names: tuple[str, ...],
    with_version: bool,
    known_payloads: bool,
) -> Any:
    """`UPDATE documents ... FROM unnest(:b_id, :b_<field>..., [:b_version])`, conditional
    on `expected` (see `_transition_group`); RETURNING all columns but the payload when the
    caller holds the payloads."""
    arrays = [cast(bindparam("b_id"), ARRAY(BigInteger))]
    for name in names:
        arrays.append(cast(bindparam(f"b_{name}"), ARRAY(documents.c[name].type)))
    columns = ["id", *names]
    if with_version:
        arrays.append(cast(bindparam("b_version"), ARRAY(Integer)))
        columns.append("expected_version")
    v = func.unnest(*arrays).table_valued(*columns).render_derived(name="v")
    kinds = [k.value for k in kinds_allowing(expected, new)]
    conds = [
        documents.c.id == v.c.id,
        documents.c.state == expected.value,
        documents.c.kind.in_(kinds),
    ]
    if with_version:
        conds.append(documents.c.version == v.c.expected_version)
    values: dict[str, Any] = {name: v.c[name] for name in names}
    values.update(state=new.value, version=documents.c.version + 1, updated_at=func.now())
    returning = _COLUMNS_BUT_PAYLOAD if known_payloads else tuple(documents.c)
    return update(documents).where(*conds).values(**values).returning(*returning)


def _transition_one(conn: Connection, ch: Transition) -> DocumentRow:
    _validate(ch)
    kinds = kinds_allowing(ch.expected, ch.new)
    values: dict[str, Any] = dict(ch.fields)
    if "payload" in values and values["payload"] is not None:
        values["payload"] = dict(values["payload"])
        values.setdefault("payload_hash", payload_hash(values["payload"]))
    values["state"] = ch.new.value
    values["version"] = documents.c.version + 1
    values["updated_at"] = func.now()
    conds = [
        documents.c.id == ch.document_id,
        documents.c.state == ch.expected.value,
        documents.c.kind.in_([k.value for k in kinds]),
    ]
    if ch.expected_version is not None:
        conds.append(documents.c.version == ch.expected_version)
    stmt = update(documents).where(*conds).values(**values).returning(*documents.c)
    m = conn.execute(stmt).mappings().first()
    if m is not None:
        return DocumentRow.from_mapping(m)
    _raise_for(conn, ch)


def _raise_for(conn: Connection, ch: Transition) -> NoReturn:
    """Explain why a conditional update matched nothing."""
    found = conn.execute(
        select(documents.c.state, documents.c.kind, documents.c.version).where(
            documents.c.id == ch.document_id
        )
    ).first()
    if found is None:
        raise DocumentNotFoundError(ch.document_id)
    actual = DocumentState(found.state)
    if actual is not ch.expected or (
        ch.expected_version is not None and found.version != ch.expected_version
    ):
        raise StaleStateError(
            ch.document_id, ch.expected, actual, ch.expected_version, int(found.version)
        )
    raise InvalidTransitionError(ch.document_id, ch.expected, ch.new, DocumentKind(found.kind))


def ensure_reversal(
    conn: Connection,
    issue_doc_id: int,
    serial: str,
    payload: Mapping[str, Any],
    *,
    actor: str,
    position: RecordPosition | None = None,
    source_ts_ms: int | None = None,
    lease_owner: str | None = None,
    lease_epoch: int | None = None,
    reason: str = "source cancelled",
    operator: Operator | None = None,
) -> tuple[DocumentRow, bool]:
    """Record the intent to reverse an issued document (REVERSAL_PENDING, serial frozen).

    The issue row is locked for the check, so a reversal can only ever be created for a
    document that is ISSUED (or already REVERSED, which returns the existing reversal).
    """
    m = (
        conn.execute(select(documents).where(documents.c.id == issue_doc_id).with_for_update())
        .mappings()
        .first()
    )
    if m is None:
        raise DocumentNotFoundError(issue_doc_id)
    issue = DocumentRow.from_mapping(m)
    if issue.kind is not DocumentKind.ISSUE:
        raise NotReversibleError(issue_doc_id, "it is itself a reversal")
    if issue.state not in (DocumentState.ISSUED, DocumentState.REVERSED):
        raise NotReversibleError(issue_doc_id, f"it is {issue.state.value}, not ISSUED")
    return ensure_document(
        conn,
        issue.identity.for_reversal(),
        serial,
        actor=actor,
        state=DocumentState.REVERSAL_PENDING,
        payload=payload,
        position=position,
        source_ts_ms=source_ts_ms,
        reverses_id=issue.id,
        lease_owner=lease_owner,
        lease_epoch=lease_epoch,
        reason=reason,
        operator=operator,
    )


def mark_reversed(
    conn: Connection,
    reversal_id: int,
    expected_state: DocumentState,
    *,
    actor: str = "syncd",
    reason: str = "reversal issued",
    **fields: Any,
) -> tuple[DocumentRow, DocumentRow]:
    """Reversal row -> REVERSED and its issue row ISSUED -> REVERSED, in the caller's tx."""
    rev = transition(
        conn,
        reversal_id,
        expected_state,
        DocumentState.REVERSED,
        reason=reason,
        actor=actor,
        **fields,
    )
    if rev.reverses_id is None:  # pragma: no cover - guarded at creation
        raise NotReversibleError(reversal_id, "reversal row without reverses_id")
    issue = transition(
        conn,
        rev.reverses_id,
        DocumentState.ISSUED,
        DocumentState.REVERSED,
        reason=reason,
        actor=actor,
        details={"reversal_id": rev.id, "reversal_serial": rev.serial},
    )
    return rev, issue


def get_document(conn: Connection, doc_id: int, *, for_update: bool = False) -> DocumentRow:
    q = select(documents).where(documents.c.id == doc_id)
    if for_update:
        q = q.with_for_update()
    m = conn.execute(q).mappings().first()
    if m is None:
        raise DocumentNotFoundError(doc_id)
    return DocumentRow.from_mapping(m)


def find_document(conn: Connection, identity: DocumentIdentity) -> DocumentRow | None:
    q = select(documents).where(tuple_(*_IDENTITY_COLS) == _identity_tuple(identity))
    m = conn.execute(q).mappings().first()
    return None if m is None else DocumentRow.from_mapping(m)


def find_by_serial(conn: Connection, serial: str) -> DocumentRow | None:
    m = conn.execute(select(documents).where(documents.c.serial == serial)).mappings().first()
    return None if m is None else DocumentRow.from_mapping(m)


def serials_holding(conn: Connection, invoice_nos: Iterable[str]) -> dict[str, str]:
    """Invoice number -> serial of the ledger document that recorded it (for the numbers
    given; documents of either kind, any revision)."""
    numbers = sorted(set(invoice_nos))
    if not numbers:
        return {}
    q = select(documents.c.invoice_no, documents.c.serial).where(
        documents.c.invoice_no.in_(numbers)
    )
    return {str(no): str(serial) for no, serial in conn.execute(q)}


def latest_revision(
    conn: Connection,
    document_type: str,
    source_table: str,
    source_key: str,
    kind: DocumentKind = DocumentKind.ISSUE,
) -> DocumentRow | None:
    """The highest revision of a source document (a rejected one is corrected under +1)."""
    q = (
        select(documents)
        .where(
            documents.c.document_type == document_type,
            documents.c.source_table == source_table,
            documents.c.source_key == source_key,
            documents.c.kind == kind.value,
        )
        .order_by(documents.c.revision.desc())
        .limit(1)
    )
    m = conn.execute(q).mappings().first()
    return None if m is None else DocumentRow.from_mapping(m)


def reversals_of(conn: Connection, issue_id: int) -> list[DocumentRow]:
    """The reversal rows (full and partial) of one issue row, oldest first."""
    q = select(documents).where(documents.c.reverses_id == issue_id).order_by(documents.c.id)
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def count_revisions_since(
    conn: Connection, document_type: str, source_table: str, source_key: str, within: timedelta
) -> int:
    """Issue rows of revision > 0 (re-issues) of one source document created in the last
    `within` (database clock)."""
    q = (
        select(func.count())
        .select_from(documents)
        .where(
            documents.c.document_type == document_type,
            documents.c.source_table == source_table,
            documents.c.source_key == source_key,
            documents.c.kind == DocumentKind.ISSUE.value,
            documents.c.revision > 0,
            documents.c.created_at >= func.now() - within,
        )
    )
    return int(conn.execute(q).scalar_one())


def document_history(
    conn: Connection, document_type: str, source_table: str, source_key: str
) -> list[DocumentRow]:
    """Every ledger row of one source document: each revision's issue row, then its
    reversal, oldest revision first (`syncd status --document`)."""
    q = (
        select(documents)
        .where(
            documents.c.document_type == document_type,
            documents.c.source_table == source_table,
            documents.c.source_key == source_key,
        )
        .order_by(documents.c.revision, documents.c.kind, documents.c.id)
    )
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def _latest_revisions_statement() -> Any:
    cols = (documents.c.document_type, documents.c.source_table, documents.c.source_key)
    return (
        select(documents)
        .where(
            tuple_(*cols).in_(bindparam("keys", expanding=True)),
            documents.c.kind == bindparam("kind"),
        )
        .order_by(*cols, documents.c.revision)
    )


def latest_revisions(
    conn: Connection,
    keys: Sequence[tuple[str, str, str]],
    kind: DocumentKind = DocumentKind.ISSUE,
) -> dict[tuple[str, str, str], DocumentRow]:
    """`latest_revision` for many (document_type, source_table, source_key) in one query;
    keys without a ledger row are absent from the result."""
    if not keys:
        return {}
    q = _statement(("latest_revisions",), _latest_revisions_statement)
    params = {"keys": list(dict.fromkeys(keys)), "kind": kind.value}
    out: dict[tuple[str, str, str], DocumentRow] = {}
    for m in conn.execute(q, params).mappings():  # ascending revisions: the last one wins
        row = DocumentRow.from_mapping(m)
        out[(row.identity.document_type, row.identity.source_table, row.identity.source_key)] = row
    return out


def documents_to_resume(
    conn: Connection,
    *,
    partitions: Iterable[TopicPartition] | None = None,
    due_before: datetime | None = None,
    states: Iterable[DocumentState] = RESUME_STATES,
    after_id: int = 0,
    limit: int = 500,
    lock: bool = False,
) -> list[DocumentRow]:
    """Rows that may have reached the provider and must be settled by a query by serial.

    `partitions` limits to documents whose source event came from those partitions (what
    this replica owns); `due_before` keeps rows whose wake-up time has come; `after_id`
    pages. `lock` takes `FOR UPDATE SKIP LOCKED`, so two workers never pick the same row.
    """
    conds = [documents.c.state.in_([s.value for s in states]), documents.c.id > after_id]
    if partitions is not None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if not tps:
            return []
        conds.append(tuple_(documents.c.source_topic, documents.c.source_partition).in_(tps))
    if due_before is not None:
        conds.append(
            or_(documents.c.next_attempt_at.is_(None), documents.c.next_attempt_at <= due_before)
        )
    q = select(documents).where(and_(*conds)).order_by(documents.c.id).limit(limit)
    if lock:
        q = q.with_for_update(skip_locked=True)
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def count_by_state(conn: Connection) -> dict[DocumentState, int]:
    """Every state with its count (zeros included, so a gauge can drop to 0)."""
    counts = dict.fromkeys(DocumentState, 0)
    q = select(documents.c.state, func.count()).group_by(documents.c.state)
    for state, n in conn.execute(q):
        counts[DocumentState(state)] = int(n)
    return counts


def stuck_documents(
    conn: Connection, older_than: timedelta, *, limit: int = 100
) -> list[DocumentRow]:
    """Non-terminal rows not touched for `older_than` (by the database clock)."""
    q = (
        select(documents)
        .where(
            documents.c.state.not_in([s.value for s in TERMINAL_STATES | WAITING_FOR_PEOPLE]),
            documents.c.updated_at < func.now() - older_than,
        )
        .order_by(documents.c.updated_at)
        .limit(limit)
    )
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def count_stuck_documents(conn: Connection, older_than: timedelta) -> int:
    """How many non-terminal rows had their last transition more than `older_than` ago
    (database clock): the `syncd_ledger_stuck_documents` gauge. A document that keeps
    retrying moves (RETRY_WAIT -> RETRY_WAIT is a transition), so it counts only once its
    wait outlasts `older_than`; a trickle of short retries never does."""
    q = (
        select(func.count())
        .select_from(documents)
        .where(
            documents.c.state.not_in([s.value for s in TERMINAL_STATES | WAITING_FOR_PEOPLE]),
            documents.c.updated_at < func.now() - older_than,
        )
    )
    return int(conn.execute(q).scalar_one())


def documents_in_states(
    conn: Connection, states: Iterable[DocumentState], *, limit: int = 100
) -> list[DocumentRow]:
    """Rows in `states`, least recently updated first (e.g. DEAD/BLOCKED for `status`)."""
    q = (
        select(documents)
        .where(documents.c.state.in_([s.value for s in states]))
        .order_by(documents.c.updated_at, documents.c.id)
        .limit(limit)
    )
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def audit_trail(conn: Connection, doc_id: int) -> list[AuditEntry]:
    """A document's audit rows in the order they were written."""
    q = select(audit).where(audit.c.document_id == doc_id).order_by(audit.c.id)
    return [AuditEntry.from_mapping(m) for m in conn.execute(q).mappings()]


# --------------------------------------------------------------------------------------
# approvals (written by the approver role, read by the daemon) and payload retention
# --------------------------------------------------------------------------------------


def _approval(m: Any) -> Approval:
    return Approval(
        id=int(m["id"]),
        document_id=int(m["document_id"]),
        decision=str(m["decision"]),
        reason=str(m["reason"]),
        os_user=m["os_user"],
        db_session_user=str(m["db_session_user"]),
        db_current_user=str(m["db_current_user"]),
        decided_at=m["decided_at"],
    )


def record_approval(
    conn: Connection, doc_id: int, *, approve: bool, reason: str, os_user: str | None
) -> Approval:
    """The approver's decision on a document in AWAITING_APPROVAL (run as that person's
    database login: only the approver role may INSERT, and the database stamps who did)."""
    stmt = (
        pg_insert(approvals)
        .values(
            document_id=doc_id,
            decision="approve" if approve else "reject",
            reason=reason,
            os_user=os_user,
        )
        .returning(*approvals.c)
    )
    return _approval(conn.execute(stmt).mappings().one())


def approval_of(conn: Connection, doc_id: int) -> Approval | None:
    m = conn.execute(select(approvals).where(approvals.c.document_id == doc_id)).mappings().first()
    return None if m is None else _approval(m)


def decided_awaiting(
    conn: Connection, *, partitions: Iterable[TopicPartition] | None = None, limit: int = 500
) -> list[DocumentRow]:
    """Rows in AWAITING_APPROVAL that have a decision the daemon has yet to carry out."""
    conds = [
        documents.c.state == DocumentState.AWAITING_APPROVAL.value,
        documents.c.id.in_(select(approvals.c.document_id)),
    ]
    if partitions is not None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if not tps:
            return []
        conds.append(tuple_(documents.c.source_topic, documents.c.source_partition).in_(tps))
    q = select(documents).where(*conds).order_by(documents.c.id).limit(limit)
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


def prune_payloads(conn: Connection, older_than: timedelta, *, actor: str, limit: int = 200) -> int:
    """Drop the stored payloads of up to `limit` settled rows (`PAYLOAD_PRUNABLE`) whose
    last transition is older than `older_than` (database clock); the payload hash, the
    row and its audit trail stay, and each pruning is audited. Rows locked by someone
    else are skipped (`SKIP LOCKED`), so replicas can prune side by side. Returns how
    many were pruned."""
    picked = (
        select(documents.c.id)
        .where(
            documents.c.state.in_([s.value for s in PAYLOAD_PRUNABLE]),
            documents.c.payload.is_not(None),
            documents.c.updated_at < func.now() - older_than,
        )
        .order_by(documents.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(documents)
        .where(documents.c.id.in_(picked))
        .values(payload=None)
        .returning(documents.c.id, documents.c.state, documents.c.payload_hash)
    )
    pruned = conn.execute(stmt).all()
    days = older_than.total_seconds() / 86400
    _append_audit(
        conn,
        [
            {
                "document_id": doc_id,
                "from_state": state,
                "to_state": state,
                "reason": f"stored payload pruned ({days:g} days after settling)",
                "actor": actor,
                "details": {"payload_hash": digest, "retention_days": days},
            }
            for doc_id, state, digest in pruned
        ],
    )
    return len(pruned)


# --------------------------------------------------------------------------------------
# partition leases and offsets
# --------------------------------------------------------------------------------------


def claim_partitions(
    conn: Connection,
    group: str,
    owner: str,
    topic_partitions: Iterable[TopicPartition],
    *,
    lock_timeout_ms: int | None = None,
) -> dict[TopicPartition, int]:
    """Take over partitions: bump each lease epoch and return the new epochs.

    Call it (and commit) on assignment, before loading offsets. The UPDATE waits for any
    transaction of the previous owner that holds the lease `FOR SHARE`, so after this
    commits the previous owner can no longer commit anything for these partitions.
    `lock_timeout_ms` bounds that wait (`SET LOCAL`, so it stays for the rest of the
    caller's transaction); on expiry the database raises and the caller retries.
    """
    tps = sorted(set(topic_partitions))
    if not tps:
        return {}
    if lock_timeout_ms is not None:
        conn.execute(select(func.set_config("lock_timeout", f"{int(lock_timeout_ms)}ms", True)))
    ins = pg_insert(partition_leases).values(
        [
            {
                "consumer_group": group,
                "topic": tp.topic,
                "partition": tp.partition,
                "owner": owner,
                "epoch": 1,
            }
            for tp in tps
        ]
    )
    stmt = ins.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "partition"],
        set_={
            "owner": ins.excluded.owner,
            "epoch": partition_leases.c.epoch + 1,
            "claimed_at": func.now(),
        },
    ).returning(partition_leases.c.topic, partition_leases.c.partition, partition_leases.c.epoch)
    return {TopicPartition(t, p): int(e) for t, p, e in conn.execute(stmt)}


def release_partitions(conn: Connection, group: str, epochs: Mapping[TopicPartition, int]) -> None:
    """Clear the owner of leases still held at `epochs` (on revoke / shutdown; cosmetic:
    the epoch is what fences, and the next claim bumps it anyway)."""
    for tp, epoch in sorted(epochs.items()):
        conn.execute(
            update(partition_leases)
            .where(
                partition_leases.c.consumer_group == group,
                partition_leases.c.topic == tp.topic,
                partition_leases.c.partition == tp.partition,
                partition_leases.c.epoch == epoch,
            )
            .values(owner=None)
        )


def _fence_statement() -> Any:
    leases = partition_leases.c
    return (
        select(leases.topic, leases.partition, leases.epoch, leases.owner)
        .where(
            leases.consumer_group == bindparam("group"),
            tuple_(leases.topic, leases.partition).in_(bindparam("tps", expanding=True)),
        )
        .order_by(leases.topic, leases.partition)
        .with_for_update(read=True)
    )


def fence(conn: Connection, group: str, epochs: Mapping[TopicPartition, int]) -> None:
    """Assert this writer still holds each partition at its epoch, and keep it so until
    the transaction ends (`FOR SHARE` blocks a concurrent claim). Raises `FencedError`."""
    if not epochs:
        return
    tps = sorted(epochs)
    q = _statement(("fence",), _fence_statement)
    params = {"group": group, "tps": [(tp.topic, tp.partition) for tp in tps]}
    held = {TopicPartition(t, p): (int(e), o) for t, p, e, o in conn.execute(q, params)}
    for tp in tps:
        current = held.get(tp)
        if current is None or current[0] != epochs[tp]:
            raise FencedError(
                group,
                tp.topic,
                tp.partition,
                epochs[tp],
                None if current is None else current[0],
                None if current is None else current[1],
            )


def store_offsets(
    conn: Connection, group: str, positions: Mapping[TopicPartition, tuple[int, int]]
) -> None:
    """Fenced upsert of `{tp: (next_offset, epoch)}` in the caller's transaction."""
    if not positions:
        return
    fence(conn, group, {tp: epoch for tp, (_, epoch) in positions.items()})
    rows = [
        {
            "consumer_group": group,
            "topic": tp.topic,
            "partition": tp.partition,
            "next_offset": nxt,
            "epoch": epoch,
        }
        for tp, (nxt, epoch) in sorted(positions.items())
    ]
    conn.execute(_statement(("store_offsets",), _store_offsets_statement), _json_rows(rows))


def _store_offsets_statement() -> Any:
    ins = _json_insert(offsets, ("consumer_group", "topic", "partition", "next_offset", "epoch"))
    return ins.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "partition"],
        set_={
            "next_offset": ins.excluded.next_offset,
            "epoch": ins.excluded.epoch,
            "updated_at": func.now(),
        },
    )


def store_offset(
    conn: Connection, group: str, topic: str, partition: int, next_offset: int, epoch: int
) -> None:
    store_offsets(conn, group, {TopicPartition(topic, partition): (next_offset, epoch)})


def load_offsets(
    conn: Connection, group: str, topic_partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """Stored next offsets; partitions never committed are absent (use Kafka's, or the
    reset policy)."""
    tps = [(tp.topic, tp.partition) for tp in set(topic_partitions)]
    if not tps:
        return {}
    q = select(offsets.c.topic, offsets.c.partition, offsets.c.next_offset).where(
        offsets.c.consumer_group == group,
        tuple_(offsets.c.topic, offsets.c.partition).in_(tps),
    )
    return {TopicPartition(t, p): int(o) for t, p, o in conn.execute(q)}


def lease_epochs(
    conn: Connection, group: str, topic_partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, tuple[int, str | None]]:
    """Current (epoch, owner) per partition, for `status` and diagnostics."""
    tps = [(tp.topic, tp.partition) for tp in set(topic_partitions)]
    if not tps:
        return {}
    q = select(
        partition_leases.c.topic,
        partition_leases.c.partition,
        partition_leases.c.epoch,
        partition_leases.c.owner,
    ).where(
        partition_leases.c.consumer_group == group,
        tuple_(partition_leases.c.topic, partition_leases.c.partition).in_(tps),
    )
    return {TopicPartition(t, p): (int(e), o) for t, p, e, o in conn.execute(q)}
