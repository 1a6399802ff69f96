"""The ledger's record of red-letter forms raised by buyers (`buyer_red_forms`).

Invariants, each kept by one statement so concurrent replicas and operators cannot break
them:
- a form is recorded once: discovery inserts with ON CONFLICT (provider, form_id) DO
  NOTHING, so polling the same form a thousand times leaves one row;
- a form is decided once: the decision is a conditional UPDATE from PENDING, so of two
  operators (or one operator twice) exactly one changes the row and the other learns it was
  decided already;
- a red invoice is recorded once: the UPDATE that stores its number only matches a row
  without one, and `red_invoice_no` is unique across forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert

from syncd.identity import DocumentKind
from syncd.issuers.redforms import BuyerRedForm
from syncd.ledger.schema import buyer_red_forms, documents


@dataclass(frozen=True, slots=True)
class FormRow:
    id: int
    provider: str
    form_id: str
    original_invoice_no: str
    document_id: int | None
    document_type: str | None
    document_key: str | None
    reason: str
    status: str
    gross_amount: Decimal | None
    raised_at: datetime | None
    deadline: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    red_invoice_no: str | None
    red_issued_at: datetime | None
    discovered_at: datetime


def parse_when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _select() -> sa.Select[Any]:
    t, d = buyer_red_forms, documents
    return sa.select(t, d.c.document_type, d.c.source_key).select_from(
        t.outerjoin(d, d.c.id == t.c.document_id)
    )


def _row(r: Any) -> FormRow:
    m = r._mapping
    return FormRow(
        id=m["id"],
        provider=m["provider"],
        form_id=m["form_id"],
        original_invoice_no=m["original_invoice_no"],
        document_id=m["document_id"],
        document_type=m["document_type"],
        document_key=m["source_key"],
        reason=m["reason"],
        status=m["status"],
        gross_amount=m["gross_amount"],
        raised_at=m["raised_at"],
        deadline=m["deadline"],
        decided_at=m["decided_at"],
        decided_by=m["decided_by"],
        decision_reason=m["decision_reason"],
        red_invoice_no=m["red_invoice_no"],
        red_issued_at=m["red_issued_at"],
        discovered_at=m["discovered_at"],
    )


def record_discovered(
    conn: Connection, provider: str, forms: Iterable[BuyerRedForm], *, now: datetime
) -> list[FormRow]:
    """Insert the forms not yet recorded (PENDING); the rows that are new."""
    waiting = [f for f in forms if f.status == "PENDING"]
    if not waiting:
        return []
    t = buyer_red_forms
    known = set(
        conn.execute(
            sa.select(t.c.form_id).where(
                t.c.provider == provider, t.c.form_id.in_([f.form_id for f in waiting])
            )
        ).scalars()
    )
    new_ids: list[int] = []
    for form in waiting:
        if form.form_id in known:
            continue
        deadline = parse_when(form.deadline)
        if deadline is None:
            continue  # a form without a readable deadline is not one we can honour
        original = (
            sa.select(documents.c.id)
            .where(
                documents.c.invoice_no == form.original_invoice_no,
                documents.c.kind == DocumentKind.ISSUE.value,
            )
            .order_by(documents.c.revision.desc())
            .limit(1)
            .scalar_subquery()
        )
        stmt = (
            insert(buyer_red_forms)
            .values(
                provider=provider,
                form_id=form.form_id,
                original_invoice_no=form.original_invoice_no,
                document_id=original,
                reason=form.reason,
                status="PENDING",
                gross_amount=form.gross_amount,
                raised_at=parse_when(form.raised_at),
                deadline=deadline,
                discovered_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(constraint="uq_buyer_red_forms_provider_form_id")
            .returning(buyer_red_forms.c.id)
        )
        new_id = conn.execute(stmt).scalar()
        if new_id is not None:
            new_ids.append(int(new_id))
    return rows_by_id(conn, new_ids)


def rows_by_id(conn: Connection, ids: Sequence[int]) -> list[FormRow]:
    if not ids:
        return []
    rows = conn.execute(_select().where(buyer_red_forms.c.id.in_(ids)).order_by("id"))
    return [_row(r) for r in rows]


def find(conn: Connection, provider: str, form_id: str, *, lock: bool = False) -> FormRow | None:
    stmt = _select().where(
        buyer_red_forms.c.provider == provider, buyer_red_forms.c.form_id == form_id
    )
    if lock:
        stmt = stmt.with_for_update(of=buyer_red_forms)
    r = conn.execute(stmt).first()
    return None if r is None else _row(r)


def listing(
    conn: Connection, *, statuses: Sequence[str] | None = None, provider: str | None = None
) -> list[FormRow]:
    stmt = _select().order_by(buyer_red_forms.c.deadline, buyer_red_forms.c.id)
    if statuses:
        stmt = stmt.where(buyer_red_forms.c.status.in_(list(statuses)))
    if provider is not None:
        stmt = stmt.where(buyer_red_forms.c.provider == provider)
    return [_row(r) for r in conn.execute(stmt)]


def decide(
    conn: Connection,
    row_id: int,
    *,
    confirm: bool,
    decided_by: str,
    why: str,
    now: datetime,
) -> FormRow | None:
    """PENDING -> CONFIRMED / REJECTED; None when the row was not PENDING any more."""
    t = buyer_red_forms
    changed = conn.execute(
        sa.update(t)
        .where(t.c.id == row_id, t.c.status == "PENDING")
        .values(
            status="CONFIRMED" if confirm else "REJECTED",
            decided_at=now,
            decided_by=decided_by,
            decision_reason=why,
            updated_at=now,
        )
        .returning(t.c.id)
    ).scalar()
    return None if changed is None else rows_by_id(conn, [int(changed)])[0]


def record_red_invoice(
    conn: Connection, row_id: int, red_invoice_no: str, issued_at: datetime | None, now: datetime
) -> FormRow | None:
    """CONFIRMED -> ISSUED with the red invoice; None when it was recorded already."""
    t = buyer_red_forms
    changed = conn.execute(
        sa.update(t)
        .where(t.c.id == row_id, t.c.status == "CONFIRMED", t.c.red_invoice_no.is_(None))
        .values(
            status="ISSUED", red_invoice_no=red_invoice_no, red_issued_at=issued_at, updated_at=now
        )
        .returning(t.c.id)
    ).scalar()
    return None if changed is None else rows_by_id(conn, [int(changed)])[0]


def mark(conn: Connection, row_id: int, status: str, *, now: datetime) -> FormRow | None:
    """PENDING -> EXPIRED, or a decision the platform reports made elsewhere (the seller
    decided in the platform's own UI); None when the row was not PENDING."""
    t = buyer_red_forms
    changed = conn.execute(
        sa.update(t)
        .where(t.c.id == row_id, t.c.status == "PENDING")
        .values(status=status, updated_at=now)
        .returning(t.c.id)
    ).scalar()
    return None if changed is None else rows_by_id(conn, [int(changed)])[0]


def pending_summary(conn: Connection) -> tuple[int, datetime | None]:
    """How many forms wait for a decision, and the earliest deadline among them."""
    t = buyer_red_forms
    count, earliest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(t.c.deadline)).where(t.c.status == "PENDING")
    ).one()
    return int(count), earliest


__all__ = [
    "FormRow",
    "decide",
    "find",
    "listing",
    "mark",
    "parse_when",
    "pending_summary",
    "record_discovered",
    "record_red_invoice",
    "rows_by_id",
]
