"""Plain values the repository takes and returns (no SQLAlchemy objects leak out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from syncd.identity import (
    DocumentIdentity,
    DocumentKind,
    canonical_json,
    json_default,
    payload_hash,
)
from syncd.lifecycle import DocumentState

__all__ = [
    "Approval",
    "AuditEntry",
    "DocumentIdentity",
    "DocumentRow",
    "Operator",
    "TopicPartition",
    "canonical_json",
    "fast_json",
    "payload_hash",
]


class TopicPartition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


def fast_json(value: object) -> str:
    """JSON for jsonb columns (PostgreSQL normalises it, so key order does not matter):
    orjson with the same value rules as `canonical_json`, several times faster on the
    frozen payloads the daemon writes for every document."""
    try:
        return orjson.dumps(
            value,
            default=json_default,
            option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
        ).decode()
    except (orjson.JSONEncodeError, TypeError):
        return canonical_json(value)  # e.g. integers beyond 64 bits: the slow path copes


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """One ledger row as read back from the database."""

    id: int
    identity: DocumentIdentity
    state: DocumentState
    serial: str
    payload: Mapping[str, Any] | None
    payload_hash: str | None
    attempts: int
    #: bumped by every transition (optimistic concurrency beyond the state alone)
    version: int
    next_attempt_at: datetime | None
    last_error_code: str | None
    last_error: str | None
    invoice_no: str | None
    issued_at: datetime | None
    invoice_url: str | None
    check_code: str | None
    reverses_id: int | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    source_ts_ms: int | None
    lease_owner: str | None
    lease_epoch: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def kind(self) -> DocumentKind:
        return self.identity.kind

    @classmethod
    def from_mapping(cls, m: Mapping[Any, Any]) -> DocumentRow:
        return cls(
            id=m["id"],
            identity=DocumentIdentity.stored(
                m["document_type"],
                m["source_table"],
                m["source_key"],
                DocumentKind(m["kind"]),
                m["revision"],
            ),
            state=DocumentState(m["state"]),
            serial=m["serial"],
            payload=m["payload"],
            payload_hash=m["payload_hash"],
            attempts=m["attempts"],
            version=m["version"],
            next_attempt_at=m["next_attempt_at"],
            last_error_code=m["last_error_code"],
            last_error=m["last_error"],
            invoice_no=m["invoice_no"],
            issued_at=m["issued_at"],
            invoice_url=m["invoice_url"],
            check_code=m["check_code"],
            reverses_id=m["reverses_id"],
            source_topic=m["source_topic"],
            source_partition=m["source_partition"],
            source_offset=m["source_offset"],
            source_ts_ms=m["source_ts_ms"],
            lease_owner=m["lease_owner"],
            lease_epoch=m["lease_epoch"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class Operator:
    """A person acting through a command: their OS user and the reason they gave.

    Passed (as `operator=`) to the repository functions that write audit rows; the rows
    then carry `os_user` and `why` besides the database roles every row records."""

    os_user: str
    why: str

    def __post_init__(self) -> None:
        if not self.why.strip():
            raise ValueError("an operator action needs a reason")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row: what happened to which document, who did it, when and why."""

    id: int
    document_id: int | None
    from_state: DocumentState | None
    to_state: DocumentState | None
    reason: str
    actor: str
    at: datetime
    details: Mapping[str, Any] | None
    db_user: str | None = None
    db_session_user: str | None = None
    os_user: str | None = None
    why: str | None = None
    chain: int = 0
    seq: int = 0
    hash: str = ""

    @classmethod
    def from_mapping(cls, m: Mapping[Any, Any]) -> AuditEntry:
        return cls(
            id=m["id"],
            document_id=m["document_id"],
            from_state=None if m["from_state"] is None else DocumentState(m["from_state"]),
            to_state=None if m["to_state"] is None else DocumentState(m["to_state"]),
            reason=m["reason"],
            actor=m["actor"],
            at=m["at"],
            details=m["details"],
            db_user=m["db_user"],
            db_session_user=m["db_session_user"],
            os_user=m["os_user"],
            why=m["why"],
            chain=m["chain"],
            seq=m["seq"],
            hash=m["hash"],
        )


@dataclass(frozen=True, slots=True)
class Approval:
    """A decision of the approver role on a document waiting in AWAITING_APPROVAL.

    `db_session_user` / `db_current_user` are set by the database (a trigger), so they
    name the login that made the decision; `os_user` is what the client reported.
    """

    id: int
    document_id: int
    decision: str  # "approve" | "reject"
    reason: str
    os_user: str | None
    db_session_user: str
    db_current_user: str
    decided_at: datetime

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    @property
    def who(self) -> str:
        """`role` (or `login as role` when the two differ), for reasons and logs."""
        if self.db_session_user == self.db_current_user:
            return self.db_session_user
        return f"{self.db_session_user} as {self.db_current_user}"

    def details(self) -> dict[str, Any]:
        """What the audit row keeps of the decision."""
        return {
            "approval_id": self.id,
            "decision": self.decision,
            "reason": self.reason,
            "db_session_user": self.db_session_user,
            "db_current_user": self.db_current_user,
            "os_user": self.os_user,
            "decided_at": self.decided_at.isoformat(),
        }
