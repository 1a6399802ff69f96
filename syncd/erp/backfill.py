"""Reading the ERP rows a backfill covers: the `--where` condition as parameterised SQL.

Invariant: nothing an operator types reaches the database as SQL text. The condition is
the config's condition language (`syncd.config.conditions`), parsed from YAML into a
validated `Condition` tree and compiled here into SQLAlchemy expressions over the *reflected*
table: identifiers are columns the database itself reported (quoted by the dialect), values
are bound parameters, coerced to the column's type first so a bad literal is a one-line
error instead of a database error.

The compiled condition means what `syncd.rules.conditions.evaluate` means for a row read as
it is now (a snapshot read, `op=r`): `becomes: X` holds for a row whose value *is* X; a
comparison with NULL is unknown (and so is its `not`); `equals`/`in` with NULL are false.
SQL's three-valued logic for AND/OR/NOT is the evaluator's, and a row is selected only when
the whole condition IS TRUE. `changed` and `row: before` read two images of a change and have
no meaning for a row as it is now: they are refused. Rows are read page by page in key
order (keyset pagination), so a run can resume after the last key it committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoSuchTableError

from syncd.changes import ColumnValue
from syncd.config.conditions import Condition, Scalar
from syncd.errors import OperatorError

#: The longest `--where` text accepted (a condition is a few lines of YAML).
MAX_WHERE_CHARS: Final = 10_000


class WhereError(OperatorError, ValueError):
    """A `--where` condition that cannot be used: not YAML, not the condition language, a
    column the table lacks, a literal that does not fit its column."""


# --------------------------------------------------------------------------- parsing


def parse_where(text: str) -> Condition:
    """The condition written on the command line, e.g. `{column: status, equals: CONFIRMED}`
    (YAML flow or block style, the same keys as `qualifies` in the config)."""
    if len(text) > MAX_WHERE_CHARS:
        raise WhereError(f"--where: longer than {MAX_WHERE_CHARS} characters")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise WhereError(f"--where: {problem}{where}") from None
    if not isinstance(data, dict):
        raise WhereError(
            "--where: expected a condition mapping such as "
            "'{column: status, equals: CONFIRMED}' (the language of `qualifies`)"
        )
    try:
        return Condition.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise WhereError(f"--where: {path + ': ' if path else ''}{message}") from None


def canonical_condition(condition: Condition) -> str:
    """The condition as canonical JSON: what a run is recorded (and resumed) under."""
    return json.dumps(
        condition.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )


# --------------------------------------------------------------------------- the table


def reflect_table(conn: Connection, qualified: str) -> sa.Table:
    """The table `schema.name` as the database describes it."""
    schema, _, name = qualified.partition(".")
    try:
        return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
    except NoSuchTableError:
        raise WhereError(f"table {qualified} does not exist (or is not visible)") from None


def _column(table: sa.Table, name: str) -> sa.Column[Any]:
    column = table.c.get(name)
    if column is None:
        known = ", ".join(sorted(table.c.keys()))
        raise WhereError(
            f"--where: no column {name!r} in {table.schema}.{table.name} (columns: {known})"
        )
    return column


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _literal(column: sa.Column[Any], value: Scalar) -> Any:
    """`value` as the column's Python type, or a WhereError naming both."""
    kind = _python_type(column)
    label = f"column {column.name} ({column.type})"
    if value is None or kind is None:
        return value
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            number = Decimal(str(value))
            if number != number.to_integral_value():
                raise ValueError
            return int(number)
        if kind in (Decimal, float):
            if isinstance(value, bool):
                raise ValueError
            number = Decimal(str(value))
            if not number.is_finite():
                raise ValueError
            return number
        if kind is datetime:
            return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if kind is date:
            if isinstance(value, datetime):
                raise ValueError
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if kind is str:
            if isinstance(value, bool):
                return str(value).lower()
            return value if isinstance(value, str) else str(value)
    except (ValueError, InvalidOperation):
        raise WhereError(f"--where: {value!r} does not fit {label}") from None
    return value


def _numeric(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.Numeric | sa.Float | sa.Integer) and not isinstance(
        column.type, sa.Boolean
    )


# --------------------------------------------------------------------------- compiling


def compile_where(condition: Condition, table: sa.Table) -> sa.ColumnElement[bool]:
    """The condition as a SQL boolean over `table` (select rows where it IS TRUE)."""
    return _compile(condition, table)


def _compile(c: Condition, table: sa.Table) -> sa.ColumnElement[bool]:
    if c.column is not None:
        return _compile_column(c, table)
    if c.changed is not None:
        raise WhereError(
            "--where: `changed` compares a row before and after a change; a backfill reads "
            "rows as they are now (test the columns' values instead)"
        )
    if c.all_ is not None:
        return sa.and_(*(_compile(child, table) for child in c.all_))
    if c.any_ is not None:
        return sa.or_(*(_compile(child, table) for child in c.any_))
    assert c.not_ is not None
    return sa.not_(_compile(c.not_, table))


def _compile_column(c: Condition, table: sa.Table) -> sa.ColumnElement[bool]:
    assert c.column is not None
    fields = c.model_fields_set
    if c.column.startswith("invoice."):
        raise WhereError(f"--where: {c.column} is the built invoice; test ERP columns only")
    if c.row == "before":
        raise WhereError(
            "--where: `row: before` reads the image before a change; a backfill reads rows "
            "as they are now"
        )
    column = _column(table, c.column)
    if "becomes" in fields or "equals" in fields:
        value = c.becomes if "becomes" in fields else c.equals
        if value is None:
            return column.is_(None)
        return sa.func.coalesce(column == _literal(column, value), sa.false())
    if "in_" in fields:
        options = list(c.in_ or [])
        present = [_literal(column, v) for v in options if v is not None]
        tests: list[sa.ColumnElement[bool]] = []
        if present:
            tests.append(sa.func.coalesce(column.in_(present), sa.false()))
        if any(v is None for v in options):
            tests.append(column.is_(None))
        return sa.or_(*tests) if tests else sa.false()
    if (cmp := c.comparison()) is not None:
        if not _numeric(column):
            raise WhereError(
                f"--where: {c.column} is {column.type}, not a number to compare with {cmp[1]}"
            )
        op, bound = cmp
        bound_value = sa.literal(_literal(column, bound), column.type)
        compared: sa.ColumnElement[bool] = column.op(op, is_comparison=True)(bound_value)
        return compared
    return column.is_(None) if c.is_null else column.is_not(None)


# --------------------------------------------------------------------------- reading


def _key_columns(table: sa.Table, key_columns: Sequence[str]) -> list[sa.Column[Any]]:
    return [_column(table, k) for k in key_columns]


def _selection(
    table: sa.Table,
    key_columns: Sequence[str],
    where: sa.ColumnElement[bool],
    after: Sequence[Any] | None,
) -> list[sa.ColumnElement[bool]]:
    # coalesce: only TRUE selects (NULL, "unknown", does not); a function call also keeps
    # `NOT x IS TRUE` from parsing as `NOT (x IS TRUE)`
    conds: list[sa.ColumnElement[bool]] = [sa.func.coalesce(where.self_group(), sa.false())]
    if after is not None:
        keys = _key_columns(table, key_columns)
        typed = [sa.literal(_cursor_value(k, v), k.type) for k, v in zip(keys, after, strict=True)]
        conds.append(keys[0] > typed[0] if len(keys) == 1 else sa.tuple_(*keys) > sa.tuple_(*typed))
    return conds


def count_rows(
    conn: Connection,
    table: sa.Table,
    key_columns: Sequence[str],
    where: sa.ColumnElement[bool],
    *,
    after: Sequence[Any] | None = None,
) -> int:
    """How many rows the condition selects now (after the key `after`)."""
    q = sa.select(sa.func.count()).select_from(table)
    q = q.where(*_selection(table, key_columns, where, after))
    return int(conn.execute(q).scalar_one())


def read_page(
    conn: Connection,
    table: sa.Table,
    key_columns: Sequence[str],
    where: sa.ColumnElement[bool],
    *,
    after: Sequence[Any] | None,
    limit: int,
) -> list[dict[str, ColumnValue]]:
    """The next `limit` rows in key order after the key `after` (None: from the start),
    values as the change-event decoder types them (`row_values`)."""
    keys = _key_columns(table, key_columns)
    conds = _selection(table, key_columns, where, after)
    q = sa.select(table).where(*conds).order_by(*keys).limit(limit)
    return [row_values(m) for m in conn.execute(q).mappings()]


def _cursor_value(column: sa.Column[Any], value: Any) -> Any:
    kind = _python_type(column)
    if kind is Decimal and not isinstance(value, Decimal):
        return Decimal(str(value))
    if kind is int and isinstance(value, str):
        return int(value)
    return value


def cursor_of(row: Mapping[str, ColumnValue], key_columns: Sequence[str]) -> list[Any]:
    """A row's key as JSON-safe values (the run's `last_key`)."""
    out: list[Any] = []
    for k in key_columns:
        value = row[k]
        out.append(str(value) if isinstance(value, Decimal) else value)
    return out


def row_values(row: Mapping[Any, Any]) -> dict[str, ColumnValue]:
    """A database row with values typed as the Debezium decoder types them
    (`syncd.debezium.convert`), so the invoice built from it is the one a change event of
    the same row builds: floats as exact decimals (via their repr), UUIDs as text, JSON as
    its text, bytea as bytes."""
    out: dict[str, ColumnValue] = {}
    for name, value in row.items():
        out[str(name)] = _value(value)
    return out


def _value(value: Any) -> ColumnValue:
    if value is None or isinstance(
        value, bool | int | Decimal | str | bytes | datetime | date | time
    ):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


__all__ = [
    "WhereError",
    "canonical_condition",
    "compile_where",
    "count_rows",
    "cursor_of",
    "parse_where",
    "read_page",
    "reflect_table",
    "row_values",
]
