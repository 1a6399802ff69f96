"""Operator re-drive of parked documents (`syncd retry`).

A DEAD or BLOCKED document (or one waiting for its next attempt) is handed back to the
daemon by a conditional move to OUTCOME_UNKNOWN with its attempts reset and its wake-up
time set to now. OUTCOME_UNKNOWN on purpose: the serial may already be known to the
provider, so the daemon's next step *queries by serial* and only re-sends after a clean
"not found" -- an operator retry can never mint a new serial or send twice.

The running daemon's periodic sweep (`syncd.pipeline.loop`) picks the row up; nothing here
talks to the provider or to Kafka.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, select

from syncd.config import SyncdConfig
from syncd.erp.writeback import ResultStatus, WriteBack, WriteBackError, apply_writeback
from syncd.errors import OperatorError
from syncd.identity import DocumentKind
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow, Operator, canonical_json
from syncd.ledger.schema import documents
from syncd.lifecycle import DocumentState

S = DocumentState

#: States an operator may re-drive (RETRY_WAIT/OUTCOME_UNKNOWN: "retry now").
RETRYABLE_STATES: Final = frozenset({S.DEAD, S.BLOCKED, S.RETRY_WAIT, S.OUTCOME_UNKNOWN})
REASON: Final = "operator retry"

_SERIAL = re.compile(r"S[0-9A-Z]{25}")
_TYPED_KEY = re.compile(r"(?P<doc>[a-z][a-z0-9_]{0,62}):(?P<key>\{.*\})", re.DOTALL)


class DocumentRefError(OperatorError, ValueError):
    """The `--document` argument is not an id, a serial or `<type>:<json key>`."""


@dataclass(frozen=True, slots=True)
class ById:
    id: int


@dataclass(frozen=True, slots=True)
class BySerial:
    serial: str


@dataclass(frozen=True, slots=True)
class BySourceKey:
    document_type: str
    #: canonical JSON of the key, exactly as the ledger stores it
    source_key: str


DocumentRef = ById | BySerial | BySourceKey


def parse_document_ref(text: str) -> DocumentRef:
    """`42` (ledger id), `S…` (26-character serial) or `sales_order:{"id":42}`."""
    value = text.strip()
    if value.isdigit():
        return ById(int(value))
    if _SERIAL.fullmatch(value):
        return BySerial(value)
    m = _TYPED_KEY.fullmatch(value)
    if m is None:
        raise DocumentRefError(
            f"{text!r}: expected a ledger id (digits), a serial (S + 25 characters) or "
            '<document_type>:<json key>, e.g. sales_order:{"id":42}'
        )
    try:
        key = json.loads(m.group("key"))
    except ValueError as exc:
        raise DocumentRefError(f"{text!r}: the key is not valid JSON ({exc})") from None
    if not isinstance(key, dict) or not key:
        raise DocumentRefError(f"{text!r}: the key must be a non-empty JSON object")
    return BySourceKey(m.group("doc"), canonical_json(_integral(key)))


def _integral(key: Mapping[str, Any]) -> dict[str, Any]:
    # The ledger stores integral numbers as ints ({"id":42}); accept 42.0 as well.
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in key.items()}


def find(conn: Connection, config: SyncdConfig, ref: DocumentRef) -> list[DocumentRow]:
    """The ledger rows a reference names (a source key may have issue + reversal rows)."""
    if isinstance(ref, ById):
        q = select(documents).where(documents.c.id == ref.id)
    elif isinstance(ref, BySerial):
        q = select(documents).where(documents.c.serial == ref.serial)
    else:
        doc = config.documents.get(ref.document_type)
        if doc is None:
            known = ", ".join(sorted(config.documents))
            raise DocumentRefError(
                f"no document type {ref.document_type!r} in the config (known: {known})"
            )
        q = select(documents).where(
            documents.c.document_type == ref.document_type,
            documents.c.source_table == doc.table,
            documents.c.source_key == ref.source_key,
        )
    q = q.order_by(documents.c.kind, documents.c.revision)
    return [DocumentRow.from_mapping(m) for m in conn.execute(q).mappings()]


@dataclass(frozen=True, slots=True)
class Redriven:
    before: DocumentRow
    after: DocumentRow
    #: None when written back, else why the ERP row was not updated
    writeback_problem: str | None


def redrive(
    conn: Connection,
    config: SyncdConfig,
    row: DocumentRow,
    *,
    actor: str,
    operator: Operator | None = None,
    now: datetime | None = None,
) -> Redriven:
    """Move `row` to OUTCOME_UNKNOWN, due now, attempts reset (in the caller's transaction).

    Raises `ValueError` for a state that cannot be re-driven and `StaleStateError` when the
    daemon moved the row meanwhile (nothing is changed then).
    """
    if row.state not in RETRYABLE_STATES:
        allowed = ", ".join(sorted(s.value for s in RETRYABLE_STATES))
        raise ValueError(f"document {row.id} is {row.state.value}; only {allowed} can be retried")
    after = repo.transition(
        conn,
        row.id,
        row.state,
        S.OUTCOME_UNKNOWN,
        reason=REASON,
        actor=actor,
        operator=operator,
        details={
            "previous_attempts": row.attempts,
            "previous_error_code": row.last_error_code,
            "previous_error": row.last_error,
        },
        attempts=0,
        next_attempt_at=now or datetime.now(UTC),
    )
    problem: str | None = None
    doc = config.documents.get(row.identity.document_type)
    if doc is None:
        problem = f"document type {row.identity.document_type!r} is not in the config"
    else:
        status = (
            ResultStatus.PENDING
            if row.kind is DocumentKind.ISSUE
            else ResultStatus.REVERSAL_PENDING
        )
        key = json.loads(row.identity.source_key)
        try:
            apply_writeback(conn, doc.for_table(row.identity.source_table), key, WriteBack(status))
        except WriteBackError as exc:
            problem = str(exc)
    return Redriven(row, after, problem)
