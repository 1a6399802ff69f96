"""Updates recognised from their wire values, and one plan for both row images."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.changes import ChangeEvent, QuietUpdate
from syncd.debezium import DecodeOptions, decode_record, record_to_json
from syncd.debezium.records import compile_plan
from syncd.pipeline.classify import Kind
from tests.unit.config_helpers import classify_and_decide
from tests.unit.debezium_events import (
    POSITION,
    SALES_ORDER_FIELDS,
    envelope_schema,
    key_doc,
    payload,
    sales_order_row,
    wire,
    with_schema,
)

OWN = frozenset(
    {
        "invoice_no",
        "invoice_status",
        "invoice_error",
        "invoiced_at",
        "invoice_url",
        "red_invoice_no",
    }
)
QUIET = DecodeOptions(quiet_update_columns={"erp.sales_order": OWN})


def update(
    before: dict[str, Any] | None, after: dict[str, Any], op: str = "u"
) -> tuple[bytes, bytes]:
    value = wire(with_schema(envelope_schema(SALES_ORDER_FIELDS), payload(op, before, after)))
    key = wire(key_doc())
    assert key is not None and value is not None
    return key, value


def confirmed() -> dict[str, Any]:
    return sales_order_row("CONFIRMED")


def written_back() -> dict[str, Any]:
    row = confirmed()
    row.update(
        invoice_no="26312000000000000004",
        invoice_status="ISSUED",
        invoiced_at="2026-01-01T02:00:01.000000Z",
        invoice_url="http://x/inv.xml",
    )
    return row


def test_before_and_after_images_share_one_plan():
    # the two row structs differ only in their own field names ("before", "after")
    plan = compile_plan(envelope_schema(SALES_ORDER_FIELDS))
    assert plan.before is not None and plan.before is plan.after


def test_images_of_different_structs_keep_their_own_plans():
    schema = envelope_schema(SALES_ORDER_FIELDS)
    schema["fields"][1] = {**schema["fields"][1], "fields": SALES_ORDER_FIELDS[:3]}
    plan = compile_plan(schema)
    assert plan.before is not plan.after


def test_an_update_of_quiet_columns_only_is_a_quiet_update():
    record = decode_record(POSITION, *update(confirmed(), written_back()), QUIET)
    assert isinstance(record, QuietUpdate)
    assert record.changed == {"invoice_no", "invoice_status", "invoiced_at", "invoice_url"}
    assert record.table == "erp.sales_order"
    assert record.source_ts_ms == 1767225600000
    assert record_to_json(record)["kind"] == "quiet_update"


def test_an_update_that_changed_nothing_is_quiet_too():
    record = decode_record(POSITION, *update(confirmed(), confirmed()), QUIET)
    assert isinstance(record, QuietUpdate) and record.changed == frozenset()


@pytest.mark.parametrize("options", [QUIET, DecodeOptions()])
def test_anything_else_is_a_full_change_event(options):
    after = written_back()
    after["status"] = "CANCELLED"  # a column the rules read
    record = decode_record(POSITION, *update(confirmed(), after), options)
    assert isinstance(record, ChangeEvent)
    plain = decode_record(POSITION, *update(confirmed(), written_back()), DecodeOptions())
    assert isinstance(plain, ChangeEvent)  # no quiet columns configured: always in full


def test_only_updates_of_the_named_table_are_quiet():
    other = DecodeOptions(quiet_update_columns={"erp.other": OWN})
    record = decode_record(POSITION, *update(confirmed(), written_back()), other)
    assert isinstance(record, ChangeEvent)
    created = decode_record(POSITION, *update(None, written_back(), op="c"), QUIET)
    assert isinstance(created, ChangeEvent)


def test_images_with_different_columns_are_decoded_in_full():
    before = confirmed()
    del before["remark"]
    key, value = update(before, written_back())
    # the value no longer matches its schema: the full decode says so precisely
    record = decode_record(POSITION, key, value, QUIET)
    assert isinstance(record, ChangeEvent)


CASES = {
    "write-back echo": (confirmed, written_back),
    "nothing changed": (confirmed, confirmed),
    "confirmation": (lambda: sales_order_row("DRAFT"), confirmed),
    "cancellation of an invoiced row": (
        written_back,
        lambda: {**written_back(), "status": "CANCELLED"},
    ),
    "remark edited after invoicing": (written_back, lambda: {**written_back(), "remark": "x"}),
}


@pytest.mark.parametrize("name", CASES)
def test_classifier_says_what_decide_says_on_the_full_event(name):
    before, after = CASES[name]
    classified, _, decision = classify_and_decide(*update(before(), after()))
    assert classified.reason == decision.reason
    assert classified.kind.value == decision.action.value
    if classified.kind is Kind.IGNORE:
        assert classified.source_ts_ms or classified.event is not None
