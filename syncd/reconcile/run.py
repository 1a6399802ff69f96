"""One reconciliation: snapshot, platform list, late lookup, compare, record.

The order of the reads is the invariant (see `sources`): the ERP and the ledger in one
repeatable-read, read-only transaction first; the platform's list after it; then the
serials the snapshot did not know, looked up again. Only the ledger's own
`reconcile_runs` table is written, in a separate transaction after the report is made,
so reconcile is safe while the daemon runs and never changes the ERP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, text
from sqlalchemy import func as sql_func

from syncd.config import DocumentConfig, SyncdConfig
from syncd.errors import OperatorError
from syncd.ledger import reconcile as ledger_reconcile
from syncd.reconcile.compare import PlatformEntry, Report, compare
from syncd.reconcile.sources import PlatformList, Snapshot, inputs, read_snapshot


class ReconcileUsageError(OperatorError, ValueError):
    """A reconciliation asked for wrongly (an unknown document type)."""


@dataclass(frozen=True, slots=True)
class Request:
    start: datetime
    end: datetime
    document: str | None = None
    time_zone: str = "UTC"


def documents(config: SyncdConfig, name: str | None) -> list[DocumentConfig]:
    docs = list(config.documents.values())
    if name is None:
        return docs
    chosen = [d for d in docs if d.name == name]
    if not chosen:
        known = ", ".join(sorted(d.name for d in docs))
        raise ReconcileUsageError(f"--document {name}: no such document type (known: {known})")
    return chosen


def reconcile(
    engine: Engine, config: SyncdConfig, request: Request, platform: PlatformList | None
) -> Report:
    """Read the three sides and compare them (nothing is written)."""
    docs = documents(config, request.document)
    snapshot_engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with snapshot_engine.begin() as conn:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        # plain dates of a `period_column` are days of the zone the period was given in
        conn.execute(select(sql_func.set_config("TimeZone", request.time_zone, True)))
        snapshot = read_snapshot(
            conn, docs, request.start, request.end, {d.name: d.period_column for d in docs}
        )
    listed: Sequence[PlatformEntry] | None = None
    known: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    if platform is not None:
        listed = list(platform(request.start))
        known = known_listed(engine, snapshot, listed)
    return compare(inputs(snapshot, listed, known, docs, request.start, request.end))


def known_listed(
    engine: Engine, snapshot: Snapshot, listed: Sequence[PlatformEntry]
) -> tuple[frozenset[str], frozenset[str]]:
    """The serials and numbers of the listed invoices the ledger holds: those the snapshot
    has, and those looked up again after the listing (issued while reconcile ran, or of
    another period)."""
    serials = {r.serial for r in snapshot.ledger}
    numbers = {r.invoice_no for r in snapshot.ledger if r.invoice_no}
    ask_serials = {p.serial for p in listed if p.serial and p.serial not in serials}
    with engine.begin() as conn:
        found_serials, _ = ledger_reconcile.known_invoices(conn, ask_serials, ())
        ask_numbers = {
            p.invoice_no
            for p in listed
            if p.invoice_no not in numbers
            and (p.serial is None or p.serial not in found_serials)
            and p.serial not in serials
        }
        _, found_numbers = ledger_reconcile.known_invoices(conn, (), ask_numbers)
    return (
        frozenset(serials | found_serials) & {p.serial for p in listed if p.serial},
        frozenset(numbers | found_numbers) & {p.invoice_no for p in listed},
    )


def record(
    engine: Engine, report: Report, request: Request, started_at: datetime, os_user: str | None
) -> int:
    """Append the run to `reconcile_runs` (the daemon exports the newest)."""
    with engine.begin() as conn:
        return ledger_reconcile.record_run(
            conn,
            started_at=started_at,
            period_from=report.period_start,
            period_to=report.period_end,
            document_type=request.document,
            by_class={c.value: t.count for c, t in report.by_class().items()},
            documents=report.documents,
            os_user=os_user,
        )


def now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "ReconcileUsageError",
    "Request",
    "documents",
    "known_listed",
    "now",
    "reconcile",
    "record",
]
