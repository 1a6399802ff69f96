"""The recorded results of `syncd reconcile`: append one run, read the newest.

A reconciliation runs as a short-lived job (a Kubernetes CronJob); its result must reach
Prometheus although the job is gone by the next scrape. The ledger is the one place both
the job and the long-running daemon reach, so the job appends a row here and the daemon
exports the newest row. Rows are only ever inserted: the history of runs is evidence too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, or_, select

from syncd.ledger.schema import documents, reconcile_runs

#: Keys (or serials) per `IN (...)`.
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class ReconcileRun:
    """One finished run: its period, exception counts per class, when it finished."""

    id: int
    started_at: datetime
    finished_at: datetime
    period_from: datetime
    period_to: datetime
    document_type: str | None
    clean: bool
    exceptions: int
    by_class: Mapping[str, int]
    documents: int


def record_run(
    conn: Connection,
    *,
    started_at: datetime,
    period_from: datetime,
    period_to: datetime,
    document_type: str | None,
    by_class: Mapping[str, int],
    documents: int,
    os_user: str | None,
) -> int:
    """Append a finished run (its caller's transaction); returns its id."""
    total = sum(by_class.values())
    q = (
        insert(reconcile_runs)
        .values(
            started_at=started_at,
            period_from=period_from,
            period_to=period_to,
            document_type=document_type,
            clean=total == 0,
            exceptions=total,
            by_class=dict(by_class),
            documents=documents,
            os_user=os_user,
        )
        .returning(reconcile_runs.c.id)
    )
    return int(conn.execute(q).scalar_one())


def latest_run(conn: Connection) -> ReconcileRun | None:
    """The newest finished run, or None when reconcile never ran."""
    t = reconcile_runs
    q = select(t).order_by(t.c.finished_at.desc(), t.c.id.desc()).limit(1)
    m = conn.execute(q).mappings().first()
    if m is None:
        return None
    return ReconcileRun(
        id=int(m["id"]),
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        period_from=m["period_from"],
        period_to=m["period_to"],
        document_type=m["document_type"],
        clean=bool(m["clean"]),
        exceptions=int(m["exceptions"]),
        by_class={str(k): int(v) for k, v in dict(m["by_class"]).items()},
        documents=int(m["documents"]),
    )


def _document_columns() -> list[Any]:
    d = documents.c
    return [
        d.id,
        d.document_type,
        d.source_table,
        d.source_key,
        d.kind,
        d.revision,
        d.state,
        d.serial,
        d.invoice_no,
        d.issued_at,
        d.reverses_id,
        d.created_at,
        # only the totals of the frozen payload: a month of payloads is not read whole
        d.payload["totals"].label("totals"),
    ]


def documents_created_in(
    conn: Connection, types: Collection[str], start: datetime, end: datetime
) -> Iterator[RowMapping]:
    """Every row (issue and reversal) of these document types created in [start, end)."""
    d = documents.c
    q = select(*_document_columns()).where(
        d.document_type.in_(list(types)), d.created_at >= start, d.created_at < end
    )
    yield from conn.execution_options(yield_per=5000).execute(q).mappings()


def documents_with_keys(
    conn: Connection,
    document_type: str,
    source_table: str,
    keys: Sequence[str],
    *,
    outside: tuple[datetime, datetime] | None = None,
) -> Iterator[RowMapping]:
    """Every row (issue and reversal) of one document type and table with these source
    keys (the identity's unique index answers each chunk); with `outside`, only the rows
    created outside that period (the caller has the others)."""
    d = documents.c
    for i in range(0, len(keys), CHUNK):
        chunk = list(keys[i : i + CHUNK])
        q = select(*_document_columns()).where(
            d.document_type == document_type,
            d.source_table == source_table,
            d.source_key.in_(chunk),
        )
        if outside is not None:
            q = q.where(or_(d.created_at < outside[0], d.created_at >= outside[1]))
        yield from conn.execute(q).mappings()


def known_invoices(
    conn: Connection, serials: Collection[str], invoice_nos: Collection[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Which of these serials and invoice numbers the ledger holds, in any state and any
    period: a serial in the ledger is an invoice syncd asked for. Serials are looked up
    by their unique index; pass only the numbers no serial explained (invoice numbers
    have no index: they are few, the invoices typed in by hand)."""
    d = documents.c
    found_serials: set[str] = set()
    found_numbers: set[str] = set()
    wanted_s, wanted_n = sorted(serials), sorted(invoice_nos)
    for i in range(0, len(wanted_s), CHUNK):
        q = select(d.serial).where(d.serial.in_(wanted_s[i : i + CHUNK]))
        found_serials.update(conn.execute(q).scalars())
    for i in range(0, len(wanted_n), CHUNK):
        q = select(d.invoice_no).where(d.invoice_no.in_(wanted_n[i : i + CHUNK]))
        found_numbers.update(n for n in conn.execute(q).scalars() if n)
    return frozenset(found_serials), frozenset(found_numbers)


__all__ = [
    "ReconcileRun",
    "documents_created_in",
    "documents_with_keys",
    "known_invoices",
    "latest_run",
    "record_run",
]
