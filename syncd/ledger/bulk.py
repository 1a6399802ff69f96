"""Batch statements of the ledger: built once per shape, one JSON parameter per batch.

Building a large Core statement and computing its cache key costs more than executing it,
while a reused statement object keeps its cache key, so SQLAlchemy only looks up the
compiled form. Shapes are few (a handful of column sets and states). Figures:
docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from syncd.ledger.models import fast_json

_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def statement(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The statement cached under `key`, built by `build` the first time."""
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


def json_insert(table: Table, names: Sequence[str]) -> Any:
    """`INSERT INTO table (...) SELECT ... FROM jsonb_to_recordset(:rows) AS r(col type, ...)`
    (rows from `json_rows`): the whole batch is ONE JSON text (written by orjson in C) and
    the statement text is the same for any batch size. A multi-row VALUES list changes with
    every batch size and is too long for the driver's query cache (re-parsed each time);
    arrays of text escape every frozen payload in Python. Both cost a tenth of the daemon's
    CPU."""
    columns = [column(n, table.c[n].type) for n in names]
    r = (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
        .table_valued(*columns)
        .render_derived(name="r", with_types=True)
    )
    return pg_insert(table).from_select(list(names), select(*[r.c[n] for n in names]))


def json_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The parameters of a `json_insert` statement (every row has the same keys)."""
    return {"rows": fast_json(list(rows))}


__all__ = ["json_insert", "json_rows", "statement"]
