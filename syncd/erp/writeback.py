"""ERP write-back: the result of a document, written into the columns syncd owns.

The values are computed purely from the document config and the outcome
(`writeback_values`), then applied with one UPDATE inside the caller's transaction -- the
same transaction that advances the ledger, so the ERP never shows a result the ledger does
not hold, nor the other way round. The UPDATE only touches rows whose values differ, so
re-applying a result is a no-op and creates no change event.

For an ERP whose tables must not be altered, the result goes to a side table of syncd's own
(`write_back.upsert`): INSERT .. ON CONFLICT (key) DO UPDATE, in the same transaction, with
the same rule (a changed value or nothing). The side table is never captured by the
connector, so writing it causes no change event at all.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import Connection

from syncd.config import DocumentConfig, SyncdConfig
from syncd.erp.lines import quote_table
from syncd.errors import SyncdError

#: Longest error text written to the ERP (ERP error columns are often varchar(2000)).
MAX_ERROR_LENGTH: Final = 1000


class ResultStatus(enum.StrEnum):
    """Which of the config's `status_values` to write."""

    PENDING = "pending"
    ISSUED = "issued"
    INVALID = "invalid"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    DEAD = "dead"
    REVERSAL_PENDING = "reversal_pending"
    REVERSED = "reversed"


@dataclass(frozen=True, slots=True)
class WriteBack:
    status: ResultStatus
    invoice_no: str | None = None
    issued_at: datetime | None = None
    url: str | None = None
    error: str | None = None
    red_invoice_no: str | None = None
    #: file links by format (`pdf`, `ofd`, `xml`, ...) for the `*_url` columns
    files: Mapping[str, str] = field(default_factory=dict)
    #: an ISSUED result of a re-issued revision: the red number of the previous revision
    #: no longer describes the row's current invoice, so it is cleared
    clear_red_invoice_no: bool = False


class WriteBackError(SyncdError, RuntimeError):
    """The write-back UPDATE matched no row (the ERP row is gone or the key is wrong)."""


def writeback_values(doc: DocumentConfig, result: WriteBack) -> dict[str, Any]:
    """Column -> value for the mapped write-back columns (unmapped fields are skipped)."""
    cols = doc.write_back.columns
    values: dict[str, Any] = {}
    if cols.status:
        values[cols.status] = getattr(doc.write_back.status_values, result.status.value)
    if cols.error:
        error = result.error
        if error is not None and len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 1] + "…"
        values[cols.error] = error
    if result.status is ResultStatus.ISSUED:
        values[cols.invoice_no] = result.invoice_no
        if cols.issued_at:
            values[cols.issued_at] = result.issued_at
        if cols.url:
            values[cols.url] = result.url
        for fmt, column in (("pdf", cols.pdf_url), ("ofd", cols.ofd_url), ("xml", cols.xml_url)):
            if column:
                values[column] = result.files.get(fmt)
        if result.clear_red_invoice_no and cols.red_invoice_no:
            values[cols.red_invoice_no] = None
    if result.status is ResultStatus.REVERSED and cols.red_invoice_no:
        values[cols.red_invoice_no] = result.red_invoice_no
    return values


def key_from_ledger(source_key: str) -> dict[str, Any]:
    """The source key as stored in the ledger (canonical JSON) back as a mapping."""
    key = json.loads(source_key)
    if not isinstance(key, dict):
        raise ValueError(f"ledger source key is not an object: {source_key!r}")
    return key


@dataclass(frozen=True, slots=True)
class _Statement:
    update: str
    exists: str


def _statements(conn: Connection, doc: DocumentConfig, columns: Sequence[str]) -> _Statement:
    q = conn.dialect.identifier_preparer.quote
    table = quote_table(conn, doc.write_back_table)
    sets = [f"{q(c)} = :v{i}" for i, c in enumerate(columns)]
    differs = [f"{q(c)} IS DISTINCT FROM :v{i}" for i, c in enumerate(columns)]
    where = " AND ".join(f"{q(c)} = :k{i}" for i, c in enumerate(doc.write_back_keys))
    if doc.write_back.upsert:
        # A side table: the row appears with the first result; later results update it,
        # and only when a value differs (re-applying a result changes nothing).
        keys = [q(c) for c in doc.write_back_keys]
        cols = [q(c) for c in columns]
        values = [f":k{i}" for i in range(len(keys))] + [f":v{i}" for i in range(len(cols))]
        changed = " OR ".join(f"{table}.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in cols)
        return _Statement(
            update=f"INSERT INTO {table} ({', '.join(keys + cols)}) "  # noqa: S608
            f"VALUES ({', '.join(values)}) ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
            + f" WHERE {changed}",
            exists=f"SELECT 1 FROM {table} WHERE {where}",  # noqa: S608 -- quoted identifiers
        )
    return _Statement(
        update=f"UPDATE {table} SET {', '.join(sets)} "  # noqa: S608 -- quoted identifiers
        f"WHERE {where} AND ({' OR '.join(differs)})",
        exists=f"SELECT 1 FROM {table} WHERE {where}",  # noqa: S608 -- quoted identifiers
    )


def _params(
    doc: DocumentConfig, key: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    params = {f"v{i}": v for i, v in enumerate(values.values())}
    for i, column in enumerate(doc.write_back_keys):
        if column not in key:
            raise WriteBackError(f"{doc.name}: key column {column!r} missing from {dict(key)}")
        params[f"k{i}"] = key[column]
    return params


def apply_writeback(
    conn: Connection, doc: DocumentConfig, key: Mapping[str, Any], result: WriteBack
) -> int:
    """Write `result` into the document's row; returns the number of rows changed (0 or 1).

    Raises WriteBackError when no row has this key at all (deleted in the ERP).
    """
    values = writeback_values(doc, result)
    if not values:
        return 0
    stmt = _statements(conn, doc, list(values))
    params = _params(doc, key, values)
    changed = conn.execute(sa.text(stmt.update), params).rowcount
    if changed == 0 and not _exists(conn, stmt, params):
        raise WriteBackError(f"{doc.name}: no row in {doc.write_back_table} with key {dict(key)}")
    return int(changed)


def apply_writebacks(
    conn: Connection, items: Sequence[tuple[DocumentConfig, Mapping[str, Any], WriteBack]]
) -> list[WriteBackError]:
    """`apply_writeback` for many documents in the caller's transaction: one executemany
    per (table, columns) shape, which the driver sends as one pipelined round trip.

    Returns the rows it could not write (gone from the ERP, key incomplete) instead of
    raising: the other documents of the batch are written all the same.
    """
    # Grouped by the table written, not only the document type: a return row's result
    # (the returns view of the same type) goes to the return table, never the order table.
    groups: dict[tuple[str, str, tuple[str, ...]], tuple[DocumentConfig, list[dict[str, Any]]]]
    groups = {}
    problems: list[WriteBackError] = []
    for doc, key, result in items:
        values = writeback_values(doc, result)
        if not values:
            continue
        try:
            params = _params(doc, key, values)
        except WriteBackError as exc:
            problems.append(exc)
            continue
        group = (doc.write_back_table, doc.name, tuple(values))
        groups.setdefault(group, (doc, []))[1].append(params)
    for (_table, _name, columns), (doc, rows) in groups.items():
        stmt = _statements(conn, doc, columns)
        # Key order: concurrent batches lock ERP rows in the same order (no deadlock).
        rows.sort(key=lambda p: tuple(str(p[f"k{i}"]) for i in range(len(doc.write_back_keys))))
        changed = conn.execute(sa.text(stmt.update), rows).rowcount
        if changed >= len(rows):
            continue
        # Some rows already held these values (a re-applied result) or are gone: find which.
        problems.extend(
            WriteBackError(
                f"{doc.name}: no row in {doc.write_back_table} with key "
                f"{ {c: p[f'k{i}'] for i, c in enumerate(doc.write_back_keys)} }"
            )
            for p in rows
            if not _exists(conn, stmt, p)
        )
    return problems


def apply_side_table_migrations(conn: Connection, config: SyncdConfig) -> list[str]:
    """Run each document's `write_back.migration` (idempotent SQL creating its side table)
    in the caller's transaction; returns the tables it ran for."""
    done: list[str] = []
    for doc in config.documents.values():
        sql = doc.write_back.migration
        if sql is None:
            continue
        # Straight to the driver without parameters: the SQL is the DBA's, several
        # statements, and a `%` in it is a percent sign, not a placeholder.
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        done.append(doc.write_back_table)
    return done


def _exists(conn: Connection, stmt: _Statement, params: Mapping[str, Any]) -> bool:
    keys = {k: v for k, v in params.items() if k.startswith("k")}
    return conn.execute(sa.text(stmt.exists), keys).first() is not None
