"""The queue and the record of invoice files (`invoice_files`): what to fetch, what is kept.

Invariants:
- One row per (invoice number, format), created PENDING for every document the platform
  gave a number, by `enqueue_issued` (an INSERT ... SELECT that skips existing rows), so
  issuance itself never waits for a file.
- A row is worked on by one replica at a time: `claim` takes PENDING rows whose claim
  has lapsed with `FOR UPDATE SKIP LOCKED`, stamps the claimant and a lease, and counts
  the attempt -- a worker killed mid-download loses its claim when the lease runs out,
  and the row is taken again.
- DONE is written only after the bytes are durably in the archive (`syncd.ledger.archive`
  renames a complete, fsynced file into place first), with their SHA-256 and size, and
  only from PENDING: the record never names a file that is not whole, and a file is
  never recorded twice. Each final state (DONE, FAILED, UNAVAILABLE) is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Text, exists, func, or_, select, true, update, values
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import insert as pg_insert

from syncd.identity import DocumentKind
from syncd.ledger import audit
from syncd.ledger.schema import documents, invoice_files

__all__ = [
    "ArchivedFile",
    "FileJob",
    "claim",
    "complete",
    "counts",
    "enqueue_issued",
    "find",
    "give_up",
    "retry_later",
    "unavailable",
]

PENDING: Final = "PENDING"
DONE: Final = "DONE"
FAILED: Final = "FAILED"
UNAVAILABLE: Final = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class FileJob:
    """One claimed file to fetch."""

    id: int
    document_id: int
    invoice_no: str
    format: str
    attempts: int
    serial: str
    reversal: bool
    issued_at: datetime | None


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """What the ledger knows of one file (`content` only for the database archive)."""

    invoice_no: str
    format: str
    state: str
    sha256: str | None
    size: int | None
    location: str | None
    content: bytes | None
    attempts: int
    last_error: str | None
    keep_until: datetime | None


def enqueue_issued(
    conn: Connection,
    formats: Sequence[str],
    *,
    since: datetime | None = None,
    limit: int = 1000,
) -> int:
    """Queue every format of up to `limit` numbered documents that have no file rows yet
    (only documents changed since `since`, when given). Returns the rows added."""
    fmt = values(sql_column("format", Text), name="wanted").data([(f,) for f in formats])
    has_files = exists().where(invoice_files.c.document_id == documents.c.id)
    picked = select(documents.c.id).where(documents.c.invoice_no.is_not(None), ~has_files)
    if since is not None:
        picked = picked.where(documents.c.updated_at >= since)
    picked_ids = picked.order_by(documents.c.id).limit(limit).scalar_subquery()
    rows = (
        select(documents.c.id, documents.c.invoice_no, fmt.c.format)
        .select_from(documents.join(fmt, true()))
        .where(documents.c.id.in_(picked_ids))
    )
    stmt = (
        pg_insert(invoice_files)
        .from_select(["document_id", "invoice_no", "format"], rows)
        .on_conflict_do_nothing(index_elements=["invoice_no", "format"])
    )
    return int(conn.execute(stmt).rowcount or 0)


def claim(conn: Connection, owner: str, *, lease: timedelta, limit: int) -> list[FileJob]:
    """Claim up to `limit` due PENDING files for `owner` for `lease` (commit to publish)."""
    due = (
        select(invoice_files.c.id)
        .where(
            invoice_files.c.state == PENDING,
            invoice_files.c.next_attempt_at <= func.now(),
            or_(
                invoice_files.c.claimed_until.is_(None),
                invoice_files.c.claimed_until < func.now(),
            ),
        )
        .order_by(invoice_files.c.next_attempt_at, invoice_files.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = conn.execute(
        update(invoice_files)
        .where(invoice_files.c.id.in_(due))
        .values(
            claimed_by=owner,
            claimed_until=func.now() + lease,
            attempts=invoice_files.c.attempts + 1,
            updated_at=func.now(),
        )
        .returning(
            invoice_files.c.id,
            invoice_files.c.document_id,
            invoice_files.c.invoice_no,
            invoice_files.c.format,
            invoice_files.c.attempts,
        )
    ).all()
    if not claimed:
        return []
    docs = {
        m["id"]: m
        for m in conn.execute(
            select(
                documents.c.id, documents.c.serial, documents.c.kind, documents.c.issued_at
            ).where(documents.c.id.in_([c.document_id for c in claimed]))
        ).mappings()
    }
    return [
        FileJob(
            id=c.id,
            document_id=c.document_id,
            invoice_no=c.invoice_no,
            format=c.format,
            attempts=c.attempts,
            serial=docs[c.document_id]["serial"],
            reversal=docs[c.document_id]["kind"] == DocumentKind.REVERSAL.value,
            issued_at=docs[c.document_id]["issued_at"],
        )
        for c in sorted(claimed, key=lambda c: c.id)
    ]


def _finish(
    conn: Connection,
    job: FileJob,
    state: str,
    reason: str,
    *,
    actor: str,
    details: dict[str, Any],
    **fields: Any,
) -> bool:
    done = conn.execute(
        update(invoice_files)
        .where(invoice_files.c.id == job.id, invoice_files.c.state == PENDING)
        .values(state=state, claimed_by=None, claimed_until=None, updated_at=func.now(), **fields)
    ).rowcount
    if not done:
        return False
    audit.append(
        conn,
        [
            {
                "document_id": job.document_id,
                "from_state": None,
                "to_state": None,
                "reason": reason,
                "actor": actor,
                "details": {"invoice_no": job.invoice_no, "format": job.format, **details},
            }
        ],
    )
    return True


def complete(
    conn: Connection,
    job: FileJob,
    *,
    sha256: str,
    size: int,
    location: str | None,
    content: bytes | None,
    retention_years: int,
    actor: str,
) -> bool:
    """Record the file as archived (only from PENDING; False when already recorded)."""
    base = job.issued_at if job.issued_at is not None else func.now()
    keep_until = base + timedelta(days=round(365.25 * retention_years))
    return _finish(
        conn,
        job,
        DONE,
        f"{job.format} file archived",
        actor=actor,
        details={"sha256": sha256, "size": size, "location": location or "database"},
        sha256=sha256,
        size=size,
        location=location,
        content=content,
        keep_until=keep_until,
        archived_at=func.now(),
        last_error=None,
    )


def unavailable(conn: Connection, job: FileJob, *, actor: str) -> bool:
    """The platform offers no such file for this invoice (e.g. no OFD): nothing to fetch."""
    return _finish(
        conn,
        job,
        UNAVAILABLE,
        f"{job.format} file not offered by the platform",
        actor=actor,
        details={},
    )


def give_up(conn: Connection, job: FileJob, error: str, *, actor: str) -> bool:
    return _finish(
        conn,
        job,
        FAILED,
        f"{job.format} file not archived after {job.attempts} attempt(s)",
        actor=actor,
        details={"error": error},
        last_error=error,
    )


def retry_later(conn: Connection, job: FileJob, error: str, delay: timedelta) -> None:
    """Release the claim and try again after `delay`."""
    conn.execute(
        update(invoice_files)
        .where(invoice_files.c.id == job.id, invoice_files.c.state == PENDING)
        .values(
            claimed_by=None,
            claimed_until=None,
            next_attempt_at=func.now() + delay,
            last_error=error,
            updated_at=func.now(),
        )
    )


def counts(conn: Connection) -> dict[str, int]:
    """Rows per state (every state present, zero when none)."""
    found: dict[str, int] = dict(
        conn.execute(
            select(invoice_files.c.state, func.count()).group_by(invoice_files.c.state)
        ).all()
    )
    return {state: int(found.get(state, 0)) for state in (PENDING, DONE, FAILED, UNAVAILABLE)}


def find(conn: Connection, invoice_no: str, fmt: str) -> ArchivedFile | None:
    m = (
        conn.execute(
            select(invoice_files).where(
                invoice_files.c.invoice_no == invoice_no, invoice_files.c.format == fmt
            )
        )
        .mappings()
        .first()
    )
    if m is None:
        return None
    return ArchivedFile(
        invoice_no=m["invoice_no"],
        format=m["format"],
        state=m["state"],
        sha256=m["sha256"],
        size=m["size"],
        location=m["location"],
        content=None if m["content"] is None else bytes(m["content"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        keep_until=m["keep_until"],
    )
