"""Writing the outcome of a buyer's red-letter form into the ERP (`red_forms.write_back`).

One row per form in the DBA's table, keyed by the form id: INSERT .. ON CONFLICT (key)
DO UPDATE, in the caller's transaction -- the one that changes the ledger row -- so the ERP
never shows an outcome the ledger does not hold. The values are computed purely from the
config and the ledger row (`outcome_values`); an update that changes nothing is skipped by
the WHERE clause, so repeating a write-back is a no-op.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from syncd.config.redforms import RedFormWriteBack
from syncd.ledger.redforms import FormRow


def outcome_values(wb: RedFormWriteBack, row: FormRow) -> dict[str, Any]:
    """ERP column -> value for one form (pure)."""
    status_value = getattr(wb.status_values, row.status.lower())
    fields: dict[str, Any] = {
        "status": status_value,
        "original_invoice_no": row.original_invoice_no,
        "document_type": row.document_type,
        "document_key": row.document_key,
        "reason": row.reason,
        "deadline": row.deadline,
        "decided_at": row.decided_at,
        "decided_by": row.decided_by,
        "decision_reason": row.decision_reason,
        "red_invoice_no": row.red_invoice_no,
        "red_issued_at": row.red_issued_at,
    }
    values = {column: fields[name] for name, column in wb.columns.mapped().items()}
    values[wb.key_column] = row.form_id
    return values


def write_outcome(conn: Connection, wb: RedFormWriteBack, row: FormRow) -> None:
    """Upsert the form's outcome row (a changed value or nothing)."""
    values = outcome_values(wb, row)
    prep = conn.dialect.identifier_preparer
    schema, name = wb.table.split(".", 1)
    table = f"{prep.quote(schema)}.{prep.quote(name)}"
    cols = list(values)
    quoted = [prep.quote(c) for c in cols]
    key = prep.quote(wb.key_column)
    others = [c for c in cols if c != wb.key_column]
    updates = ", ".join(f"{prep.quote(c)} = EXCLUDED.{prep.quote(c)}" for c in others)
    differs = " OR ".join(
        f"t.{prep.quote(c)} IS DISTINCT FROM EXCLUDED.{prep.quote(c)}" for c in others
    )
    params = {f"p{i}": values[c] for i, c in enumerate(cols)}
    sql = (
        f"INSERT INTO {table} AS t ({', '.join(quoted)}) "  # noqa: S608 -- quoted identifiers
        f"VALUES ({', '.join(f':p{i}' for i in range(len(cols)))}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE {differs}"
    )
    conn.execute(sa.text(sql), params)


def check_outcome_table(inspector: Any, wb: RedFormWriteBack) -> list[str]:
    """What is wrong with the configured table in the live database (empty: nothing)."""
    schema, name = wb.table.split(".", 1)
    where = "red_forms.write_back"
    if not inspector.has_table(name, schema=schema):
        return [f"{where}: table {wb.table} does not exist"]
    present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
    wanted = {"key_column": wb.key_column} | {
        f"columns.{k}": v for k, v in wb.columns.mapped().items()
    }
    errors = [
        f"{where}.{key}: column {column} does not exist in {wb.table}"
        for key, column in wanted.items()
        if column not in present
    ]
    unique = {
        tuple(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema)
    }
    pk = tuple(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
    unique |= {
        tuple(ix["column_names"])
        for ix in inspector.get_indexes(name, schema=schema)
        if ix.get("unique")
    }
    if wb.key_column in present and (wb.key_column,) not in unique | {pk}:
        errors.append(
            f"{where}.key_column: {wb.table}.{wb.key_column} needs a primary key or unique "
            "constraint (each form's row is upserted by it)"
        )
    return errors


__all__ = ["check_outcome_table", "outcome_values", "write_outcome"]
