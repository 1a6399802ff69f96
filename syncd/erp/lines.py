"""Reading the ERP database: document lines at issue time, and the schema for
`check-config --live`.

This is the I/O edge of the mapping: order header and lines arrive on different
topics with no ordering between them, so the lines are read from the database
(in the pipeline's transaction) when the document is issued. Identifiers come
from the config and are quoted by the dialect; values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.changes import ColumnValue
from syncd.config import DocumentConfig, FieldSource, SyncdConfig
from syncd.config.documents import AccountChoice
from syncd.config.related import Relations, split_reference
from syncd.erp.related import where_sql


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return schema, name


def quote_table(connection: Connection, table: str) -> str:
    q = connection.dialect.identifier_preparer.quote
    schema, name = _split(table)
    return f"{q(schema)}.{q(name)}"


def load_lines(
    connection: Connection, doc: DocumentConfig, key: ColumnValue, limit: int | None = None
) -> list[dict[str, Any]]:
    """The line rows of one document, in `order_by` order, as plain dicts; at most `limit`.

    `key` is the document's value of `lines.references` (e.g. the order id).
    """
    q = connection.dialect.identifier_preparer.quote
    lines = doc.lines
    clauses, params, expanding = where_sql(connection, "", lines.where, "w")
    sql = sa.text(
        f"SELECT * FROM {quote_table(connection, lines.table)} "  # noqa: S608 -- quoted identifiers
        f"WHERE {' AND '.join([f'{q(lines.foreign_key)} = :key', *clauses])} "
        f"ORDER BY {q(lines.order_by)}" + (" LIMIT :limit" if limit is not None else "")
    ).bindparams(*expanding)
    params["key"] = key
    if limit is not None:
        params["limit"] = limit
    result = connection.execute(sql, params)
    return [dict(row) for row in result.mappings()]


def load_lines_many(
    connection: Connection, doc: DocumentConfig, keys: Sequence[ColumnValue]
) -> dict[ColumnValue, list[dict[str, Any]]]:
    """`load_lines` for many documents in one query (the intake's batch path): key -> lines,
    each list in `order_by` order; a key without lines maps to an empty list."""
    out: dict[ColumnValue, list[dict[str, Any]]] = {k: [] for k in keys}
    if not keys:
        return out
    q = connection.dialect.identifier_preparer.quote
    lines = doc.lines
    fk = q(lines.foreign_key)
    clauses, params, expanding = where_sql(connection, "", lines.where, "w")
    sql = sa.text(
        f"SELECT * FROM {quote_table(connection, lines.table)} "  # noqa: S608 -- quoted identifiers
        f"WHERE {' AND '.join([f'{fk} IN :keys', *clauses])} ORDER BY {fk}, {q(lines.order_by)}"
    ).bindparams(sa.bindparam("keys", expanding=True), *expanding)
    params["keys"] = list(out)
    for row in connection.execute(sql, params).mappings():
        found = out.get(row[lines.foreign_key])
        if found is not None:
            found.append(dict(row))
    return out


# --------------------------------------------------------------------------- schema check

_TEXT = "text"
_NUMBER = "number"
_BOOL = "boolean"
_TIMESTAMP = "timestamp"
_DATE = "date"
_ANY = "any"


def type_kind(column_type: sa.types.TypeEngine[Any]) -> str:
    """Coarse family of a reflected column type, enough to tell a misfit mapping."""
    if isinstance(column_type, sa.Boolean):
        return _BOOL
    if isinstance(column_type, sa.String):  # VARCHAR, TEXT, CHAR, ENUM
        return _TEXT
    # Float is not a Numeric subclass in SQLAlchemy 2.1 (DOUBLE PRECISION: Tryton's quantity)
    if isinstance(column_type, sa.Numeric | sa.Float | sa.Integer):
        return _NUMBER
    if isinstance(column_type, sa.DateTime):
        return _TIMESTAMP
    if isinstance(column_type, sa.Date):
        return _DATE
    return "other"


@dataclass
class SchemaReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Need:
    column: str
    kinds: tuple[str, ...]  # acceptable kinds; empty = anything
    what: str  # config key, for the message
    min_length: int | None = None


def _field_needs(src: FieldSource | None, what: str, kinds: tuple[str, ...]) -> list[_Need]:
    if src is None:
        return []
    if src.column is not None:
        # a `map` translates whatever the column holds
        return [_Need(src.column, () if src.map else kinds, what)]
    return [_Need(c, (), what) for c in src.columns()]


def _doc_needs(doc: DocumentConfig) -> dict[str, list[_Need]]:
    """Per table, the columns the document reads or writes and the types that fit."""
    text = (_TEXT,)
    src: list[_Need] = [_Need(c, (), f"documents.{doc.name}.key_columns") for c in doc.key_columns]
    conditions = (
        ("qualifies", doc.qualifies),
        ("reverses", doc.reverses),
        ("reissues", doc.reissues),
        ("approval", doc.approval),
        ("credit_notes.qualifies", doc.credit_notes.qualifies if doc.credit_notes else None),
    )
    for cond_name, cond in conditions:
        if cond is not None:
            what = f"documents.{doc.name}.{cond_name}"
            # invoice.* of `approval` are the built invoice's, not columns
            src += [_Need(c, (), what) for c in sorted(cond.columns()) if "." not in c]
    kinds: dict[str, tuple[str, ...]] = {
        "buyer.natural_person": (_BOOL, _TEXT),
        "issue_date": (_DATE, _TIMESTAMP, _TEXT),
    }
    for name, fs in doc.header.sources().items():
        src += _field_needs(fs, f"documents.{doc.name}.header.{name}", kinds.get(name, text))
    if doc.lines.references:
        src.append(_Need(doc.lines.references, (), f"documents.{doc.name}.lines.references"))
    if doc.period_column is not None:
        src.append(
            _Need(doc.period_column, (_DATE, _TIMESTAMP), f"documents.{doc.name}.period_column")
        )
    if isinstance(doc.account, AccountChoice):
        src.append(_Need(doc.account.column, (), f"documents.{doc.name}.account.column"))

    line_kinds: dict[str, tuple[str, ...]] = {
        "quantity": (_NUMBER,),
        "unit_price": (_NUMBER,),
        "tax_rate": (_NUMBER,),
        "discount_amount": (_NUMBER,),
        "tax_code": (_TEXT, _NUMBER),
    }
    lines: list[_Need] = [
        _Need(doc.lines.foreign_key, (), f"documents.{doc.name}.lines.foreign_key"),
        _Need(doc.lines.order_by, (), f"documents.{doc.name}.lines.order_by"),
    ]
    for name, fs in doc.lines.columns.sources().items():
        lines += _field_needs(
            fs, f"documents.{doc.name}.lines.columns.{name}", line_kinds.get(name, text)
        )

    statuses = doc.write_back.status_values.model_dump().values()
    wb_kinds: dict[str, tuple[tuple[str, ...], int | None]] = {
        "invoice_no": (text, 20),
        "red_invoice_no": (text, 20),
        "status": (text, max(len(v) for v in statuses)),
        "error": (text, None),
        "url": (text, None),
        "issued_at": ((_TIMESTAMP,), None),
    }
    wb: list[_Need] = [
        _Need(c, (), f"documents.{doc.name}.write_back.key_columns") for c in doc.write_back_keys
    ]
    wb += [
        _Need(c, (), f"documents.{doc.name}.write_back.incidental_columns")
        for c in doc.write_back.incidental_columns
    ]
    for name, column in doc.write_back.columns.mapped().items():
        k, length = wb_kinds[name]
        wb.append(_Need(column, k, f"documents.{doc.name}.write_back.columns.{name}", length))

    lines += [_Need(c, (), f"documents.{doc.name}.lines.where") for c in doc.lines.where]
    if doc.credit_notes is not None:
        credit, what = doc.credit_notes, f"documents.{doc.name}.credit_notes"
        src += _field_needs(credit.reversal_reason, f"{what}.reversal_reason", text)
        lines += [
            _Need(credit.original, (), f"{what}.original"),
            _Need(credit.line, (), f"{what}.line"),
            _Need(credit.quantity, (_NUMBER,), f"{what}.quantity"),
        ]
    returns = _returns_needs(doc, wb_kinds)

    out: dict[str, list[_Need]] = {}
    header_related = _relation_needs(doc.related, doc.table, f"documents.{doc.name}.related", src)
    line_related = _relation_needs(
        doc.lines.related, doc.lines.table, f"documents.{doc.name}.lines.related", lines
    )
    for table, needs in (
        *header_related,
        *line_related,
        (doc.write_back_table, wb),
        *returns,
    ):
        out.setdefault(table, []).extend(needs)
    return out


def _returns_needs(
    doc: DocumentConfig, wb_kinds: dict[str, tuple[tuple[str, ...], int | None]]
) -> list[tuple[str, list[_Need]]]:
    """The return table's columns (`returns`): key, the returned document's key, line and
    quantity (numbers), the condition's and the reason's columns, the result columns."""
    r = doc.returns
    if r is None:
        return []
    where = f"documents.{doc.name}.returns"
    needs = [_Need(c, (), f"{where}.key_columns") for c in r.key_columns]
    needs += [
        _Need(r.document_key, (), f"{where}.document_key"),
        _Need(r.line, (_NUMBER,), f"{where}.line"),
        _Need(r.quantity, (_NUMBER,), f"{where}.quantity"),
    ]
    needs += [_Need(c, (), f"{where}.qualifies") for c in sorted(r.qualifies.columns())]
    needs += _field_needs(r.reversal_reason, f"{where}.reversal_reason", (_TEXT,))
    statuses = r.status_values.model_dump().values()
    for name, column in (
        ("red_invoice_no", r.write_back.red_invoice_no),
        ("status", r.write_back.status),
        ("error", r.write_back.error),
    ):
        if column is not None:
            kinds, length = wb_kinds[name]
            if name == "status":
                length = max(len(v) for v in statuses)
            needs.append(_Need(column, kinds, f"{where}.write_back.{name}", length))
    return [(r.table, needs)]


def _relation_needs(
    relations: Relations, base_table: str, where: str, base: list[_Need]
) -> list[tuple[str, list[_Need]]]:
    """Needs of the base table (plain columns) and of each related table: the columns
    fields read as `<relation>.<column>` (moved out of `base`), keys, filters, link tables."""
    per: dict[str, list[_Need]] = {name: [] for name in relations}
    plain: list[_Need] = []
    for need in base:
        alias, dot, column = need.column.partition(".")
        if dot and alias in per:
            per[alias].append(_Need(column, need.kinds, need.what, need.min_length))
        else:
            plain.append(need)
    out: list[tuple[str, list[_Need]]] = [(base_table, plain)]
    for name, relation in relations.items():
        what = f"{where}.{name}"
        needs = per[name]  # later relations add their keys to it (same list)
        needs += [_Need(c, (), f"{what}.where") for c in relation.where]
        for reference in relation.references():
            ref_alias, ref_column = split_reference(reference)
            target = plain if ref_alias is None else per[ref_alias]
            target.append(_Need(ref_column, (), f"{what}.join"))
        if relation.through is not None:
            link = relation.through
            out.append(
                (
                    link.table,
                    [_Need(c, (), f"{what}.through.join") for c in link.join]
                    + [_Need(c, (), f"{what}.through.key") for c in link.key.values()],
                )
            )
            needs += [_Need(c, (), f"{what}.through.key") for c in link.key]
        else:
            assert relation.join is not None
            needs += [_Need(c, (), f"{what}.join") for c in relation.join]
        out.append((relation.table, needs))
    return out


def check_schema(connection: Connection, config: SyncdConfig) -> SchemaReport:
    """Tables and columns named by the config exist and have fitting types."""
    report = SchemaReport()
    inspector = sa.inspect(connection)
    for doc in config.documents.values():
        for table, needs in _doc_needs(doc).items():
            schema, name = _split(table)
            if not inspector.has_table(name, schema=schema):
                hint = (
                    " (write_back.migration creates it: run `syncd migrate -c <config>`)"
                    if table == doc.write_back_table and doc.write_back.migration
                    else ""
                )
                report.errors.append(f"documents.{doc.name}: table {table} does not exist{hint}")
                continue
            columns = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema)}
            for need in needs:
                _check_column(report, table, columns, need)
        if connection.dialect.name == "postgresql":
            _check_replica_identity(connection, report, doc)
    _check_decimal_scales(inspector, report, config)
    if config.red_forms.write_back is not None:
        from syncd.erp.redforms import check_outcome_table

        report.errors += check_outcome_table(inspector, config.red_forms.write_back)
    return report


def _check_decimal_scales(inspector: Any, report: SchemaReport, config: SyncdConfig) -> None:
    """Declared scales must be the columns' real ones: a wrong scale shifts every amount."""
    for table, scales in config.decimal_scales.items():
        schema, name = _split(table)
        if not inspector.has_table(name, schema=schema):
            report.errors.append(f"decimal_scales.{table}: table {table} does not exist")
            continue
        columns = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema)}
        for column, scale in scales.items():
            where = f"decimal_scales.{table}.{column}"
            col_type = columns.get(column)
            if col_type is None:
                report.errors.append(f"{where}: column {table}.{column} does not exist")
            elif not isinstance(col_type, sa.Numeric) or isinstance(col_type, sa.Float):
                report.errors.append(f"{where}: column {table}.{column} is {col_type}, not numeric")
            elif col_type.scale is not None and col_type.scale != scale:
                report.errors.append(
                    f"{where}: declared scale {scale}, but {table}.{column} is {col_type}"
                )


def _check_column(report: SchemaReport, table: str, columns: dict[str, Any], need: _Need) -> None:
    if need.column not in columns:
        import difflib

        close = difflib.get_close_matches(need.column, list(columns), n=1)
        hint = f" -- did you mean '{close[0]}'?" if close else ""
        report.errors.append(f"{need.what}: column {table}.{need.column} does not exist{hint}")
        return
    col_type = columns[need.column]
    kind = type_kind(col_type)
    if need.kinds and kind not in need.kinds:
        report.errors.append(
            f"{need.what}: column {table}.{need.column} is {col_type} ({kind}); "
            f"expected {' or '.join(need.kinds)}"
        )
        return
    if isinstance(col_type, sa.Float) and kind == _NUMBER:
        report.warnings.append(
            f"{need.what}: column {table}.{need.column} is a float type; money and "
            "quantities lose precision (use numeric)"
        )
    length = getattr(col_type, "length", None)
    if need.min_length is not None and isinstance(length, int) and length < need.min_length:
        report.errors.append(
            f"{need.what}: column {table}.{need.column} holds {length} characters; "
            f"needs at least {need.min_length}"
        )


def _check_replica_identity(
    connection: Connection, report: SchemaReport, doc: DocumentConfig
) -> None:
    schema, name = _split(doc.table)
    identity = connection.execute(
        sa.text(
            "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :name"
        ),
        {"schema": schema, "name": name},
    ).scalar()
    if identity is not None and identity != "f":
        report.warnings.append(
            f"documents.{doc.name}: table {doc.table} has no REPLICA IDENTITY FULL; updates "
            "arrive without a before image, so transitions (becomes/changed) and own "
            f"write-backs cannot be recognised (ALTER TABLE {doc.table} REPLICA IDENTITY FULL)"
        )
