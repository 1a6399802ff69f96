"""The backfill's `--where` compiled to SQL selects, on real PostgreSQL, exactly the rows the
condition evaluator (`syncd.rules.conditions.evaluate`) holds true for the same rows read as
snapshot rows -- NULLs, three-valued NOT, comparisons and combinators included."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.config.conditions import Condition
from syncd.erp.backfill import compile_where, read_page, reflect_table
from syncd.rules.conditions import evaluate
from tests.integration.stack import Stack

SCHEMA = "backfill_where_it"
ROWS: list[dict[str, Any]] = [
    {"id": 1, "status": "A", "amount": Decimal("1.50"), "flag": True},
    {"id": 2, "status": "B", "amount": Decimal("0.00"), "flag": False},
    {"id": 3, "status": None, "amount": Decimal("2.00"), "flag": None},
    {"id": 4, "status": "A", "amount": None, "flag": True},
    {"id": 5, "status": "C", "amount": Decimal("-1.00"), "flag": None},
    {"id": 6, "status": None, "amount": None, "flag": False},
]


@pytest.fixture(scope="module")
def engine(stack: Stack) -> Iterator[Engine]:
    eng = create_engine(stack.dsn)
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.t (id int PRIMARY KEY, status text, "
                "amount numeric(10,2), flag boolean)"
            )
        )
        conn.execute(text(f"INSERT INTO {SCHEMA}.t VALUES (:id, :status, :amount, :flag)"), ROWS)
    yield eng
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    eng.dispose()


_STATUS = st.sampled_from(["A", "B", "C", None])
_NUMBER = st.sampled_from([Decimal("-1"), Decimal("0"), Decimal("1.5"), Decimal("2")])


def _column_test() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda v: {"column": "status", "equals": v}, _STATUS),
        st.builds(lambda v: {"column": "status", "becomes": v}, _STATUS.filter(bool)),
        st.builds(
            lambda vs: {"column": "status", "in": vs}, st.lists(_STATUS, min_size=1, max_size=3)
        ),
        st.builds(lambda b: {"column": "status", "is_null": b}, st.booleans()),
        st.builds(
            lambda op, v: {"column": "amount", op: v},
            st.sampled_from(["above", "at_least", "below", "at_most", "equals"]),
            _NUMBER,
        ),
        st.builds(lambda b: {"column": "amount", "is_null": b}, st.booleans()),
        st.builds(lambda b: {"column": "flag", "equals": b}, st.booleans()),
        st.builds(lambda b: {"column": "flag", "is_null": b}, st.booleans()),
    )


_CONDITIONS = st.recursive(
    _column_test(),
    lambda inner: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=6,
)


def _event(row: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(RecordPosition("t", 0, -1), Op.READ, f"{SCHEMA}.t", None, None, row, 1, True)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_CONDITIONS)
def test_sql_selects_what_the_evaluator_holds_true(engine: Engine, data: dict[str, Any]) -> None:
    condition = Condition.model_validate(data)
    with engine.connect() as conn:
        table = reflect_table(conn, f"{SCHEMA}.t")
        rows = read_page(
            conn, table, ["id"], compile_where(condition, table), after=None, limit=100
        )
    selected = [r["id"] for r in rows]
    expected = [r["id"] for r in ROWS if evaluate(condition, _event(r)).is_true]
    assert selected == expected, condition.describe()
