"""ERP write-back: the result of a document, written into the columns syncd owns.

The values are computed purely from the document config and the outcome
(`writeback_values`), then applied with one UPDATE inside the caller's transaction -- the
same transaction that advances the ledger, so the ERP never shows a result the ledger does
not hold, nor the other way round. The UPDATE only touches rows whose values differ, so
re-applying a result is a no-op and creates no change event.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import Connection

from syncd.config import DocumentConfig
from syncd.erp import quote_table

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


class WriteBackError(RuntimeError):
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
    if result.status is ResultStatus.REVERSED and cols.red_invoice_no:
        values[cols.red_invoice_no] = result.red_invoice_no
    return values


def key_from_ledger(source_key: str) -> dict[str, Any]:
    """The source key as stored in the ledger (canonical JSON) back as a mapping."""
    key = json.loads(source_key)
    if not isinstance(key, dict):
        raise ValueError(f"ledger source key is not an object: {source_key!r}")
    return key


def apply_writeback(
    conn: Connection, doc: DocumentConfig, key: Mapping[str, Any], result: WriteBack
) -> int:
    """Write `result` into the document's row; returns the number of rows changed (0 or 1).

    Raises WriteBackError when no row has this key at all (deleted in the ERP).
    """
    values = writeback_values(doc, result)
    if not values:
        return 0
    q = conn.dialect.identifier_preparer.quote
    table = quote_table(conn, doc.write_back_table)
    params: dict[str, Any] = {}
    sets, differs, where = [], [], []
    for i, (column, value) in enumerate(values.items()):
        params[f"v{i}"] = value
        sets.append(f"{q(column)} = :v{i}")
        differs.append(f"{q(column)} IS DISTINCT FROM :v{i}")
    for i, column in enumerate(doc.write_back_keys):
        if column not in key:
            raise WriteBackError(f"{doc.name}: key column {column!r} missing from {dict(key)}")
        params[f"k{i}"] = key[column]
        where.append(f"{q(column)} = :k{i}")
    sql = (
        f"UPDATE {table} SET {', '.join(sets)} "  # noqa: S608 -- quoted identifiers, bound values
        f"WHERE {' AND '.join(where)} AND ({' OR '.join(differs)})"
    )
    changed = conn.execute(sa.text(sql), params).rowcount
    if changed == 0:
        exists = conn.execute(
            sa.text(f"SELECT 1 FROM {table} WHERE {' AND '.join(where)}"),  # noqa: S608
            {k: v for k, v in params.items() if k.startswith("k")},
        ).first()
        if exists is None:
            raise WriteBackError(
                f"{doc.name}: no row in {doc.write_back_table} with key {dict(key)}"
            )
    return int(changed)
