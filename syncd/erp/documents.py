"""Reading document rows as they are now, for reconciliation: never writing.

The reader builds its statements from the config's identifiers (SQLAlchemy quotes them)
and binds every value, so no SQL text from a command line or a config reaches the
database. It streams in batches so a month of a busy ERP is not one list in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, RowMapping

#: Rows fetched per round trip when streaming a period.
BATCH = 5000
#: Keys per `IN (...)` when reading rows by key.
KEYS_PER_QUERY = 5000


def _table(name: str, columns: Sequence[str]) -> sa.TableClause:
    schema, _, table = name.partition(".")
    return sa.table(table, *(sa.column(c) for c in columns), schema=schema)


def rows_in_period(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    period_column: str | None,
    start: datetime,
    end: datetime,
) -> Iterator[RowMapping]:
    """`columns` of every row whose `period_column` lies in [start, end) (every row of the
    table when there is no period column)."""
    cols = sorted({*columns, *([period_column] if period_column else [])})
    t = _table(table, cols)
    q = sa.select(*(t.c[c] for c in cols))
    if period_column is not None:
        q = q.where(t.c[period_column] >= start, t.c[period_column] < end)
    result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(q)
    yield from result.mappings()


def rows_by_key(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    keys: Sequence[Sequence[Any]],
) -> Iterator[RowMapping]:
    """`columns` of the rows with these keys (each a value per key column, in order)."""
    cols = sorted({*columns, *key_columns})
    t = _table(table, cols)
    for i in range(0, len(keys), KEYS_PER_QUERY):
        chunk = [tuple(k) for k in keys[i : i + KEYS_PER_QUERY]]
        if len(key_columns) == 1:
            cond = t.c[key_columns[0]].in_([k[0] for k in chunk])
        else:
            cond = sa.tuple_(*(t.c[c] for c in key_columns)).in_(chunk)
        yield from conn.execute(sa.select(*(t.c[c] for c in cols)).where(cond)).mappings()


__all__ = ["rows_by_key", "rows_in_period"]
