"""A compiled condition gives exactly what `evaluate` gives, on any condition and change."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.changes import UNAVAILABLE, ChangeEvent, Op, RecordPosition
from syncd.config.conditions import Condition
from syncd.rules.conditions import compile_condition, evaluate

COLUMNS = ["status", "total", "note"]
VALUES: list[Any] = [
    "CONFIRMED",
    "DRAFT",
    "",
    0,
    7,
    Decimal("7.00"),
    Decimal("0"),
    True,
    False,
    None,
    "7",
    "true",
]

scalars = st.sampled_from(VALUES)
columns = st.sampled_from(COLUMNS)

column_tests = st.one_of(
    st.builds(lambda c, v: {"column": c, "becomes": v}, columns, scalars),
    st.builds(
        lambda c, v, r: {"column": c, "equals": v, "row": r},
        columns,
        scalars,
        st.sampled_from(["after", "before"]),
    ),
    st.builds(lambda c, vs: {"column": c, "in": vs}, columns, st.lists(scalars, max_size=3)),
    st.builds(lambda c, n: {"column": c, "is_null": n}, columns, st.booleans()),
    st.builds(lambda cs: {"changed": cs}, st.lists(columns, min_size=1, max_size=3)),
)
conditions = st.recursive(
    column_tests,
    lambda inner: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=6,
)
cells = st.one_of(scalars, st.just(UNAVAILABLE))
rows = st.one_of(st.none(), st.dictionaries(columns, cells, max_size=3))


@settings(max_examples=800, deadline=None)
@given(conditions, st.sampled_from(list(Op)), rows, rows)
def test_compiled_equals_evaluate(data, op, before, after):
    condition = Condition.model_validate(data)
    event = ChangeEvent(RecordPosition("t", 0, 1), op, "erp.t", None, before, after, 1, False)
    assert compile_condition(condition)(event) == evaluate(condition, event)


def test_a_becomes_check_builds_its_constant_outcomes_once():
    check = compile_condition(
        Condition.model_validate({"column": "status", "becomes": "CONFIRMED"})
    )

    def change(before: str) -> ChangeEvent:
        return ChangeEvent(
            RecordPosition("t", 0, 1),
            Op.UPDATE,
            "erp.t",
            None,
            {"status": before},
            {"status": "CONFIRMED"},
            1,
            False,
        )

    assert check(change("DRAFT")) is check(change("SHIPPED"))
    assert check(change("DRAFT")).reason == "status became CONFIRMED"
