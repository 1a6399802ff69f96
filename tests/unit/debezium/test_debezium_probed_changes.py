"""New rows decoded for a first look (DecodeOptions.probe_columns), and the classifier
that decides from that look only when it ignores the row."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.changes import ChangeEvent, ProbedChange, RecordPosition
from syncd.debezium import DecodeOptions, decode_record, record_to_json
from syncd.pipeline.classify import Classifier, Kind
from tests.unit.config_helpers import classify_and_decide, demo_config
from tests.unit.debezium_events import (
    POSITION,
    SALES_ORDER_FIELDS,
    envelope_schema,
    key_doc,
    payload,
    sales_order_row,
    source,
    wire,
    with_schema,
)

PROBE = DecodeOptions(probe_columns={"erp.sales_order": ("id", "invoice_no", "status")})


def new_row(after: dict[str, Any], op: str = "c") -> tuple[bytes, bytes]:
    src = source(snapshot="true") if op == "r" else None
    value = wire(with_schema(envelope_schema(SALES_ORDER_FIELDS), payload(op, None, after, src)))
    key = wire(key_doc())
    assert key is not None and value is not None
    return key, value


def invoiced(status: str) -> dict[str, Any]:
    row = sales_order_row(status)
    row.update(invoice_no="26312000000000000004", invoice_status="ISSUED")
    return row


def test_an_insert_of_a_probed_table_holds_only_the_probed_columns():
    record = decode_record(POSITION, *new_row(sales_order_row("DRAFT")), PROBE)
    assert isinstance(record, ProbedChange)
    assert record.position == POSITION
    event = record.event
    assert event.after == {"id": 7, "invoice_no": None, "status": "DRAFT"}
    assert event.before is None and event.key is None  # the key is not decoded
    assert event.table == "erp.sales_order" and event.source_ts_ms == 1767225600000
    assert record_to_json(record)["kind"] == "probed_change"


def test_a_snapshot_read_is_probed_too():
    record = decode_record(POSITION, *new_row(sales_order_row("DRAFT"), op="r"), PROBE)
    assert isinstance(record, ProbedChange) and record.event.snapshot


def test_updates_and_other_tables_decode_in_full():
    before, after = sales_order_row("DRAFT"), sales_order_row("CONFIRMED")
    value = wire(with_schema(envelope_schema(SALES_ORDER_FIELDS), payload("u", before, after)))
    key = wire(key_doc())
    record = decode_record(POSITION, key, value, PROBE)
    assert isinstance(record, ChangeEvent) and len(record.after or {}) == len(after)
    other = DecodeOptions(probe_columns={"erp.other": ("status",)})
    record = decode_record(POSITION, *new_row(sales_order_row("DRAFT")), other)
    assert isinstance(record, ChangeEvent)


def test_columns_outside_the_probe_are_not_checked():
    row = sales_order_row("DRAFT")
    row["total_amount"] = "not base64!"
    record = decode_record(POSITION, *new_row(row), PROBE)
    assert isinstance(record, ProbedChange)
    with pytest.raises(Exception, match=r"after\.total_amount: invalid base64"):
        decode_record(POSITION, *new_row(row), DecodeOptions())


def test_a_bad_probed_column_is_a_decode_error_naming_it():
    row = sales_order_row("DRAFT")
    row["status"] = 17
    with pytest.raises(Exception, match=r"after\.status"):
        decode_record(POSITION, *new_row(row), PROBE)


CASES = {
    "draft insert": ("c", lambda: sales_order_row("DRAFT")),
    "insert already confirmed": ("c", lambda: sales_order_row("CONFIRMED")),
    "insert already cancelled": ("c", lambda: sales_order_row("CANCELLED")),
    "invoiced insert": ("c", lambda: invoiced("CONFIRMED")),
    "snapshot of a draft": ("r", lambda: sales_order_row("DRAFT")),
    "snapshot of an uninvoiced confirmed order": ("r", lambda: sales_order_row("CONFIRMED")),
    "snapshot of an invoiced order": ("r", lambda: invoiced("CONFIRMED")),
    # ignored with the document's identity, which only the record's key holds
    "invoiced insert without its key column": (
        "c",
        lambda: {k: v for k, v in invoiced("CONFIRMED").items() if k != "id"},
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_classifier_says_what_decide_says_on_the_whole_row(name):
    op, row = CASES[name]
    classified, full, decision = classify_and_decide(*new_row(row(), op))
    assert classified.reason == decision.reason
    assert classified.kind.value == decision.action.value
    assert classified.decision is not None
    assert classified.decision.identity == decision.identity
    if classified.event is None:  # ignored from the first look, which is never handed on
        assert classified.kind is Kind.IGNORE
        assert classified.source_ts_ms == full.source_ts_ms
    else:
        assert classified.event == full  # decided on the whole row


def test_a_bad_column_of_an_ignored_insert_is_not_dead_lettered_but_one_acted_on_is():
    classifier = Classifier(demo_config())
    position = RecordPosition("erp.erp.sales_order", 0, 42)
    draft = sales_order_row("DRAFT")
    draft["total_amount"] = "not base64!"
    assert classifier.classify(position, *new_row(draft)).kind is Kind.IGNORE
    confirmed = {**draft, "status": "CONFIRMED"}
    classified = classifier.classify(position, *new_row(confirmed))
    assert classified.kind is Kind.DEAD_LETTER and classified.code == "undecodable"
    assert "after.total_amount: invalid base64" in classified.reason


def test_a_bad_probed_column_is_dead_lettered_with_the_full_decoders_words():
    classifier = Classifier(demo_config())
    position = RecordPosition("erp.erp.sales_order", 0, 42)
    row = sales_order_row("DRAFT")
    row["order_no"] = 5  # the full decode meets this first
    row["status"] = 17
    classified = classifier.classify(position, *new_row(row))
    assert classified.kind is Kind.DEAD_LETTER
    with pytest.raises(Exception) as full:
        decode_record(position, *new_row(row), DecodeOptions())
    assert classified.reason in str(full.value)
