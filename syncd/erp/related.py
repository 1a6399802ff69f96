"""Reading related rows (`related:` of a document or of its lines) in the caller's transaction.

The intake reads a document's related rows in the same transaction as its lines and the
ledger insert, so the invoice frozen in the ledger payload is built from one consistent view
of the ERP: a buyer renamed a moment later does not change an invoice already decided.

Each relation costs one query for all the rows it is resolved for (the document, or all lines
of a document), keyed by the values the relation's `join` names. The values are added to each
row as `<relation>.<column>`; `syncd.invoice.from_erp` reads them like any other column.
Identifiers come from the config and are quoted by the dialect; values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.config.documents import DocumentConfig
from syncd.config.related import (
    RelatedTable,
    Relations,
    Unresolved,
    WhereValue,
    needed_columns,
    split_reference,
)


def quote_any_table(connection: Connection, table: str) -> str:
    """`schema.table` quoted part by part (the names may hold `-`)."""
    q = connection.dialect.identifier_preparer.quote_identifier
    schema, _, name = table.partition(".")
    return f"{q(schema)}.{q(name)}"


def where_sql(
    connection: Connection, alias: str, where: Mapping[str, WhereValue], prefix: str
) -> tuple[list[str], dict[str, Any], list[sa.BindParameter[Any]]]:
    """SQL conditions for constant filters: `= :p`, `IS NULL`, or `IN :p` for a list."""
    q = connection.dialect.identifier_preparer.quote_identifier
    clauses: list[str] = []
    params: dict[str, Any] = {}
    expanding: list[sa.BindParameter[Any]] = []
    for i, (column, value) in enumerate(where.items()):
        name = f"{prefix}{i}"
        target = f"{alias}.{q(column)}" if alias else q(column)
        if value is None:
            clauses.append(f"{target} IS NULL")
        elif isinstance(value, list):
            clauses.append(f"{target} IN :{name}")
            params[name] = list(value)
            expanding.append(sa.bindparam(name, expanding=True))
        else:
            clauses.append(f"{target} = :{name}")
            params[name] = value
    return clauses, params, expanding


def _row_value(row: Mapping[str, Any], reference: str) -> Any:
    alias, column = split_reference(reference)
    return row.get(column if alias is None else f"{alias}.{column}")


def _fetch(
    connection: Connection,
    relation: RelatedTable,
    columns: Sequence[str],
    keys: list[tuple[Any, ...]],
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Related rows per key tuple, for all `keys` in one query."""
    q = connection.dialect.identifier_preparer.quote_identifier
    target = quote_any_table(connection, relation.table)
    if relation.through is not None:
        link = relation.through
        join = " AND ".join(f"t.{q(rc)} = l.{q(lc)}" for rc, lc in link.key.items())
        source = f"{quote_any_table(connection, link.table)} AS l JOIN {target} AS t ON {join}"
        key_exprs = [f"l.{q(c)}" for c in link.join]
    else:
        assert relation.join is not None
        source = f"{target} AS t"
        key_exprs = [f"t.{q(c)}" for c in relation.join]
    selected = [f"{e} AS {q(f'__k{i}')}" for i, e in enumerate(key_exprs)]
    selected += [f"t.{q(c)} AS {q(c)}" for c in columns]
    clauses, params, expanding = where_sql(connection, "t", relation.where, "w")
    if len(key_exprs) == 1:
        clauses.insert(0, f"{key_exprs[0]} IN :keys")
        params["keys"] = [k[0] for k in keys]
        expanding.append(sa.bindparam("keys", expanding=True))
    else:
        ors = []
        for n, key in enumerate(keys):
            ands = []
            for i, expr in enumerate(key_exprs):
                params[f"k{n}_{i}"] = key[i]
                ands.append(f"{expr} = :k{n}_{i}")
            ors.append("(" + " AND ".join(ands) + ")")
        clauses.insert(0, "(" + " OR ".join(ors) + ")")
    sql = sa.text(
        f"SELECT {', '.join(selected)} FROM {source} "  # noqa: S608 -- quoted identifiers
        f"WHERE {' AND '.join(clauses)}"
    ).bindparams(*expanding)
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for found in connection.execute(sql, params).mappings():
        key = tuple(found[f"__k{i}"] for i in range(len(key_exprs)))
        out.setdefault(key, []).append({c: found[c] for c in columns})
    return out


def resolve_related(
    connection: Connection,
    relations: Relations,
    reads: set[str],
    rows: Sequence[dict[str, Any]],
    describe: str,
) -> None:
    """Add `<relation>.<column>` values to each of `rows` (in place), relation by relation.

    A row whose key values hold NULL has no related row; one whose key holds an
    `Unresolved` passes it on. `describe` names the rows in messages ("line", "invoice").
    """
    if not relations or not rows:
        return
    wanted = needed_columns(relations, reads)
    for name, relation in relations.items():
        columns = wanted[name]
        references = relation.references()
        keyed: list[tuple[dict[str, Any], tuple[Any, ...] | Unresolved | None]] = []
        for row in rows:
            values = tuple(relation.join_value(_row_value(row, r)) for r in references)
            passed = next((v for v in values if isinstance(v, Unresolved)), None)
            if passed is not None:
                keyed.append((row, passed))
            elif any(v is None for v in values):
                keyed.append((row, None))
            else:
                keyed.append((row, values))
        keys = sorted(
            {k for _, k in keyed if isinstance(k, tuple)}, key=lambda k: tuple(map(str, k))
        )
        found = _fetch(connection, relation, columns, keys) if keys else {}
        for row, key in keyed:
            value: dict[str, Any] | Unresolved | None
            if isinstance(key, Unresolved):
                value = key
            elif key is None:
                value = _none(name, relation, describe) if relation.exactly_one else None
            else:
                matches = found.get(key, [])
                if len(matches) == 1:
                    value = matches[0]
                elif not matches:
                    value = _none(name, relation, describe) if relation.exactly_one else None
                else:
                    value = Unresolved(
                        f"related {name}: {len(matches)} rows in {relation.table} for this "
                        f"{describe} ({_key_text(references, key)}); "
                        f"{'exactly' if relation.exactly_one else 'at most'} one expected"
                    )
            for column in columns:
                row[f"{name}.{column}"] = value.get(column) if isinstance(value, dict) else value


def resolve_document(
    connection: Connection,
    doc: DocumentConfig,
    row: Mapping[str, Any],
    lines: Sequence[dict[str, Any]],
) -> Mapping[str, Any]:
    """The document row with its related values (a copy; the event's image stays as it
    came), and the lines with theirs (in place)."""
    header: Mapping[str, Any] = row
    if doc.related:
        copy = dict(row)
        resolve_related(connection, doc.related, doc.header_reads(), [copy], "document")
        header = copy
    if doc.lines.related:
        resolve_related(connection, doc.lines.related, doc.lines.reads(), lines, "line")
    return header


def _none(name: str, relation: RelatedTable, describe: str) -> Unresolved:
    return Unresolved(
        f"related {name}: no row in {relation.table} for this {describe}; exactly one expected"
    )


def _key_text(references: Sequence[str], key: tuple[Any, ...]) -> str:
    return ", ".join(f"{r}={v}" for r, v in zip(references, key, strict=True))


__all__ = ["quote_any_table", "resolve_document", "resolve_related", "where_sql"]
