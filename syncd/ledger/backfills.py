"""`syncd backfill` runs in the ledger: starting, resuming, moving the cursor, finishing.

Invariant: a run's cursor (`last_key`) and counters move only in the transaction that
records the documents of the page they describe (`advance`), and only from the page count
the caller last saw (`WHERE pages = :expected`), so
* a run killed at any moment resumes exactly after the last committed page, and
* two processes working on one run cannot both move it: the second one's `advance`
  matches no row and it stops (`RunMovedError`) -- its page's documents roll back with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, func, insert, select, update

from syncd.errors import LedgerError
from syncd.ledger.models import Operator
from syncd.ledger.schema import backfill_runs

RUNNING: Final = "running"
FINISHED: Final = "finished"
#: The counters a page adds to.
COUNTERS: Final = ("scanned", "issued", "reversed", "skipped", "invalid")


class RunMovedError(LedgerError):
    """Another process moved this backfill run (it is running twice): stop this one."""


@dataclass(frozen=True, slots=True)
class BackfillRun:
    id: int
    document_type: str
    source_table: str
    condition: str
    state: str
    last_key: list[Any] | None
    pages: int
    counts: dict[str, int]
    actor: str
    os_user: str | None
    why: str
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_mapping(cls, m: Mapping[Any, Any]) -> BackfillRun:
        return cls(
            id=int(m["id"]),
            document_type=m["document_type"],
            source_table=m["source_table"],
            condition=m["condition"],
            state=m["state"],
            last_key=None if m["last_key"] is None else list(m["last_key"]),
            pages=int(m["pages"]),
            counts={c: int(m[c]) for c in COUNTERS},
            actor=m["actor"],
            os_user=m["os_user"],
            why=m["why"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
        )


def find_unfinished(
    conn: Connection, document_type: str, source_table: str, condition: str
) -> BackfillRun | None:
    """The newest unfinished run of this document type and condition (the one to resume),
    locked against a second process starting on it at the same moment."""
    q = (
        select(backfill_runs)
        .where(
            backfill_runs.c.document_type == document_type,
            backfill_runs.c.source_table == source_table,
            backfill_runs.c.condition == condition,
            backfill_runs.c.state == RUNNING,
        )
        .order_by(backfill_runs.c.id.desc())
        .limit(1)
        .with_for_update()
    )
    m = conn.execute(q).mappings().first()
    return None if m is None else BackfillRun.from_mapping(m)


def start(
    conn: Connection,
    *,
    document_type: str,
    source_table: str,
    condition: str,
    actor: str,
    operator: Operator,
) -> BackfillRun:
    """A new run, cursor at the start."""
    m = (
        conn.execute(
            insert(backfill_runs)
            .values(
                document_type=document_type,
                source_table=source_table,
                condition=condition,
                state=RUNNING,
                actor=actor,
                os_user=operator.os_user,
                why=operator.why,
            )
            .returning(*backfill_runs.c)
        )
        .mappings()
        .one()
    )
    return BackfillRun.from_mapping(m)


def advance(
    conn: Connection,
    run_id: int,
    *,
    expected_pages: int,
    last_key: Sequence[Any],
    counts: Mapping[str, int],
) -> None:
    """Move the cursor past one page and add its counts, in the page's transaction."""
    values: dict[str, Any] = {
        "last_key": list(last_key),
        "pages": backfill_runs.c.pages + 1,
        "updated_at": func.now(),
    }
    for name in COUNTERS:
        values[name] = backfill_runs.c[name] + int(counts.get(name, 0))
    done = conn.execute(
        update(backfill_runs)
        .where(
            backfill_runs.c.id == run_id,
            backfill_runs.c.pages == expected_pages,
            backfill_runs.c.state == RUNNING,
        )
        .values(**values)
    )
    if done.rowcount != 1:
        raise RunMovedError(
            f"backfill run {run_id} was moved by another process (expected page "
            f"{expected_pages}); is it running twice?"
        )


def finish(conn: Connection, run_id: int, *, expected_pages: int) -> BackfillRun:
    """Mark the run finished (it will not be resumed again)."""
    m = (
        conn.execute(
            update(backfill_runs)
            .where(
                backfill_runs.c.id == run_id,
                backfill_runs.c.pages == expected_pages,
                backfill_runs.c.state == RUNNING,
            )
            .values(state=FINISHED, finished_at=func.now(), updated_at=func.now())
            .returning(*backfill_runs.c)
        )
        .mappings()
        .first()
    )
    if m is None:
        raise RunMovedError(f"backfill run {run_id} was moved or finished by another process")
    return BackfillRun.from_mapping(m)


def get(conn: Connection, run_id: int) -> BackfillRun | None:
    m = conn.execute(select(backfill_runs).where(backfill_runs.c.id == run_id)).mappings().first()
    return None if m is None else BackfillRun.from_mapping(m)


__all__ = [
    "FINISHED",
    "RUNNING",
    "BackfillRun",
    "RunMovedError",
    "advance",
    "find_unfinished",
    "finish",
    "get",
    "start",
]
