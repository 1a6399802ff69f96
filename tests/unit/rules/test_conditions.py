from decimal import Decimal

import pytest
from pydantic import ValidationError

from syncd.changes import UNAVAILABLE
from syncd.config.conditions import Condition
from syncd.rules.conditions import Truth, evaluate, same_value
from tests.unit.config_helpers import event, order_row, update


def cond(data: object) -> Condition:
    return Condition.model_validate(data)


def truth(data: object, ev) -> Truth:
    return evaluate(cond(data), ev).truth


BECOMES = {"column": "status", "becomes": "CONFIRMED"}


class TestBecomes:
    def test_transition_is_true_with_reason(self):
        out = evaluate(cond(BECOMES), update(order_row(), status="CONFIRMED"))
        assert out.truth is Truth.TRUE
        assert out.reason == "status became CONFIRMED"

    def test_already_in_state_is_false(self):
        ev = update(order_row(status="CONFIRMED"), remark="x")
        out = evaluate(cond(BECOMES), ev)
        assert out.truth is Truth.FALSE
        assert "already CONFIRMED" in out.reason

    def test_other_value_is_false(self):
        assert truth(BECOMES, update(order_row(), status="SHIPPED")) is Truth.FALSE

    @pytest.mark.parametrize("op", ["c", "r"])
    def test_new_row_in_state_is_true(self, op):
        assert truth(BECOMES, event(op, None, order_row(status="CONFIRMED"))) is Truth.TRUE

    def test_update_without_before_image_is_unknown(self):
        out = evaluate(cond(BECOMES), event("u", None, order_row(status="CONFIRMED")))
        assert out.truth is Truth.UNKNOWN
        assert "REPLICA IDENTITY FULL" in out.reason

    def test_unavailable_after_value_is_unknown(self):
        ev = update(order_row(), status=UNAVAILABLE)
        out = evaluate(cond(BECOMES), ev)
        assert out.truth is Truth.UNKNOWN
        assert "TOAST" in out.reason

    def test_unavailable_before_value_is_unknown(self):
        ev = event("u", order_row(status=UNAVAILABLE), order_row(status="CONFIRMED"))
        assert truth(BECOMES, ev) is Truth.UNKNOWN

    def test_missing_column_is_unknown(self):
        ev = update(order_row(), status="CONFIRMED")
        out = evaluate(cond({"column": "state", "becomes": "CONFIRMED"}), ev)
        assert out.truth is Truth.UNKNOWN
        assert "no such column" in out.reason


class TestStateTests:
    def test_equals(self):
        ev = update(order_row(), status="CONFIRMED")
        assert truth({"column": "status", "equals": "CONFIRMED"}, ev) is Truth.TRUE
        assert truth({"column": "status", "equals": "DRAFT"}, ev) is Truth.FALSE

    def test_equals_before_image(self):
        ev = update(order_row(), status="CONFIRMED")
        assert truth({"column": "status", "equals": "DRAFT", "row": "before"}, ev) is Truth.TRUE

    def test_equals_compares_numbers_exactly(self):
        ev = update(order_row(), total_amount=Decimal("0.13"))
        assert truth({"column": "total_amount", "equals": 0.13}, ev) is Truth.TRUE
        assert truth({"column": "total_amount", "equals": "0.130"}, ev) is Truth.TRUE
        assert truth({"column": "total_amount", "equals": 0.12}, ev) is Truth.FALSE

    def test_in(self):
        ev = update(order_row(), status="SHIPPED")
        assert truth({"column": "status", "in": ["CONFIRMED", "SHIPPED"]}, ev) is Truth.TRUE
        out = evaluate(cond({"column": "status", "in": ["CONFIRMED"]}), ev)
        assert out.truth is Truth.FALSE
        assert "not one of CONFIRMED" in out.reason

    def test_is_null(self):
        ev = update(order_row(), status="CONFIRMED")
        assert truth({"column": "invoice_no", "is_null": True}, ev) is Truth.TRUE
        assert truth({"column": "invoice_no", "is_null": False}, ev) is Truth.FALSE
        ev2 = update(order_row(), invoice_no="26312000000000000042")
        assert truth({"column": "invoice_no", "is_null": False}, ev2) is Truth.TRUE

    def test_is_null_of_unavailable_is_unknown(self):
        ev = update(order_row(), invoice_no=UNAVAILABLE)
        assert truth({"column": "invoice_no", "is_null": True}, ev) is Truth.UNKNOWN

    def test_no_after_image_is_unknown(self):
        ev = event("d", order_row(), None)
        assert truth({"column": "status", "equals": "DRAFT"}, ev) is Truth.UNKNOWN

    def test_booleans_and_dates(self):
        ev = update(order_row(), price_includes_tax=True)
        assert truth({"column": "price_includes_tax", "equals": True}, ev) is Truth.TRUE
        assert truth({"column": "price_includes_tax", "equals": 1}, ev) is Truth.FALSE
        assert truth({"column": "order_date", "equals": "2026-11-27"}, ev) is Truth.TRUE


class TestChanged:
    def test_changed_column(self):
        out = evaluate(cond({"changed": ["remark", "status"]}), update(order_row(), status="X"))
        assert out.truth is Truth.TRUE
        assert out.reason == "status changed from DRAFT to X"

    def test_unchanged(self):
        assert truth({"changed": ["remark"]}, update(order_row(), status="X")) is Truth.FALSE

    def test_new_and_deleted_rows_count_as_changed(self):
        assert truth({"changed": ["remark"]}, event("c", None, order_row())) is Truth.TRUE
        assert truth({"changed": ["remark"]}, event("d", order_row(), None)) is Truth.TRUE

    def test_without_before_is_unknown(self):
        assert truth({"changed": ["remark"]}, event("u", None, order_row())) is Truth.UNKNOWN

    def test_unavailable_is_unknown_unless_another_column_changed(self):
        ev = update(order_row(remark="a"), remark=UNAVAILABLE)
        assert truth({"changed": ["remark"]}, ev) is Truth.UNKNOWN
        ev2 = update(order_row(remark="a"), remark=UNAVAILABLE, status="X")
        assert truth({"changed": ["remark", "status"]}, ev2) is Truth.TRUE


REVERSES = {
    "all": [
        {"column": "status", "becomes": "CANCELLED"},
        {"column": "invoice_no", "is_null": False},
    ]
}


class TestCombinators:
    def test_all(self):
        invoiced = order_row(status="CONFIRMED", invoice_no="26312000000000000042")
        out = evaluate(cond(REVERSES), update(invoiced, status="CANCELLED"))
        assert out.truth is Truth.TRUE
        assert out.reason == "status became CANCELLED and invoice_no is not null"
        not_invoiced = order_row(status="CONFIRMED")
        assert truth(REVERSES, update(not_invoiced, status="CANCELLED")) is Truth.FALSE

    def test_all_false_beats_unknown(self):
        ev = update(order_row(status="CONFIRMED"), status="SHIPPED", invoice_no=UNAVAILABLE)
        assert truth(REVERSES, ev) is Truth.FALSE

    def test_all_unknown_when_rest_true(self):
        ev = update(order_row(status="CONFIRMED"), status="CANCELLED", invoice_no=UNAVAILABLE)
        assert truth(REVERSES, ev) is Truth.UNKNOWN

    def test_any(self):
        data = {"any": [{"column": "status", "equals": "A"}, {"column": "status", "equals": "B"}]}
        assert truth(data, update(order_row(), status="B")) is Truth.TRUE
        assert truth(data, update(order_row(), status="C")) is Truth.FALSE

    def test_any_true_beats_unknown_and_unknown_beats_false(self):
        data = {"any": [{"column": "remark", "equals": "x"}, {"column": "status", "equals": "B"}]}
        assert truth(data, update(order_row(), status="B", remark=UNAVAILABLE)) is Truth.TRUE
        assert truth(data, update(order_row(), status="C", remark=UNAVAILABLE)) is Truth.UNKNOWN

    def test_not(self):
        data = {"not": {"column": "status", "equals": "DRAFT"}}
        assert truth(data, update(order_row(), status="B")) is Truth.TRUE
        assert truth(data, update(order_row(), remark="r")) is Truth.FALSE
        assert truth(data, update(order_row(), status=UNAVAILABLE)) is Truth.UNKNOWN


class TestShapes:
    @pytest.mark.parametrize(
        "data",
        [
            {},
            {"column": "status"},
            {"column": "status", "becomes": "A", "equals": "B"},
            {"becomes": "A"},
            {"changed": []},
            {"all": []},
            {"all": [{"column": "a", "equals": 1}], "any": [{"column": "a", "equals": 1}]},
            {"column": "a", "is_null": None},
            {"column": "a", "becomes": "X", "row": "before"},
            {"changed": ["a"], "row": "before"},
        ],
    )
    def test_invalid_shapes_are_refused(self, data):
        with pytest.raises(ValidationError):
            cond(data)

    def test_unknown_key_is_refused(self):
        with pytest.raises(ValidationError) as exc:
            cond({"colum": "status", "becomes": "X"})
        assert exc.value.errors()[0]["type"] == "extra_forbidden"

    def test_columns_and_describe(self):
        c = cond(REVERSES)
        assert c.columns() == {"status", "invoice_no"}
        assert c.describe() == "(status becomes 'CANCELLED' and invoice_no is not null)"
        assert cond({"not": {"changed": ["a", "b"]}}).describe() == "not changed(a, b)"

    def test_dump_keeps_only_written_keys(self):
        assert cond({"column": "s", "in": ["A"]}).model_dump(by_alias=True) == {
            "column": "s",
            "in": ["A"],
        }


def test_same_value_never_equates_text_with_bool():
    assert not same_value("yes", True)
    assert same_value("true", True)
    assert not same_value(1, True)
    assert same_value(None, None)
    assert not same_value(None, "x")
