"""Decode every record captured from the real Debezium 3.6.1 Postgres connector.

The fixtures (tests/fixtures/debezium/*.jsonl) come from `capture.py`: one file per
converter variant, the same DML in each. Expected values below are what the DML
wrote, so these tests pin both our decoding and Debezium's wire format.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.changes import (
    UNAVAILABLE,
    ChangeEvent,
    DecodeError,
    Heartbeat,
    Op,
    RecordPosition,
    Tombstone,
    TransactionMarker,
)
from syncd.debezium import DecodeOptions, decode_json, decode_record, record_to_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
VARIANTS = [
    "schema_precise",
    "schema_string",
    "schema_double",
    "noschema_precise",
    "noschema_string",
    "noschema_double",
    "unwrap",
]
BIG = "0123456789abcdef" * 188
OPTIONS = DecodeOptions()


def load(variant: str) -> list[dict[str, Any]]:
    with (FIXTURES / f"{variant}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def wire(doc: Any) -> bytes | None:
    """The bytes JsonConverter writes: compact, fields in order, UTF-8."""
    if doc is None:
        return None
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_DEFAULT_DECODED: dict[str, list[Any]] = {}


def decode_all(variant: str, options: DecodeOptions = OPTIONS) -> list[Any]:
    if options is OPTIONS and variant in _DEFAULT_DECODED:
        return _DEFAULT_DECODED[variant]
    out = []
    for record in load(variant):
        position = RecordPosition(record["topic"], record["partition"], record["offset"])
        out.append(decode_record(position, wire(record["key"]), wire(record["value"]), options))
    if options is OPTIONS:
        _DEFAULT_DECODED[variant] = out
    return out


def changes(records: list[Any], table: str) -> list[ChangeEvent]:
    return [r for r in records if isinstance(r, ChangeEvent) and r.table == table]


def by_key(events: list[ChangeEvent], op: Op, key_id: int) -> ChangeEvent:
    found = [e for e in events if e.op is op and e.key == {"id": key_id}]
    assert len(found) == 1, (op, key_id, found)
    return found[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_fixture_record_decodes_the_same_from_bytes_and_from_json(variant):
    records = load(variant)
    assert records
    for record in records:
        position = RecordPosition(record["topic"], record["partition"], record["offset"])
        from_bytes = decode_record(position, wire(record["key"]), wire(record["value"]), OPTIONS)
        from_json = decode_json(position, record["key"], record["value"], OPTIONS)
        assert from_bytes == from_json
        # the second pass hits the schema cache and must give the same answer
        again = decode_record(position, wire(record["key"]), wire(record["value"]), OPTIONS)
        assert again == from_bytes
        json.dumps(record_to_json(from_bytes))  # always renderable


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_sees_the_same_row_changes(variant):
    events = changes(decode_all(variant), "golden.all_types")
    ops = [(e.op.value, e.key["id"]) for e in events if e.key is not None]
    streamed = [("c", 2), ("c", 3), ("u", 2), ("d", 3), ("c", 4), ("u", 4), ("c", 99)]
    assert [o for o in ops if o[0] != "r"] == streamed
    toast = changes(decode_all(variant), "golden.toast_default")
    assert [(e.op.value, e.key["id"]) for e in toast if e.key] == [
        ("c", 1),
        ("u", 1),
        ("d", 1),
        ("c", 2),
    ]


TYPED_ROW_2 = {
    "id": 2,
    "amount": Decimal("12345.67"),
    "qty": Decimal("3.14159"),
    "price": Decimal("99.99"),
    "d": date(2024, 3, 1),
    "ts": datetime(2024, 3, 1, 12, 34, 56, 789012),
    "tstz": datetime(2024, 3, 1, 2, 0, tzinfo=UTC),  # '2024-03-01 10:00:00+08'
    "t": time(8, 30, 0, 500000),
    "flag": True,
    "note": 'Zürich 中文 "quoted"',
    "code": "A-1",
    "doc": '{"a": 1, "b": [true, null]}',
    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "mood": "happy",
    "blob": b"\xde\xad\xbe\xef",
    "big": BIG,
}
NULLS = dict.fromkeys(TYPED_ROW_2, None)
TYPED_ROW_3 = {
    **NULLS,
    "id": 3,
    "amount": Decimal("-12345.67"),
    "qty": Decimal("-0.000001"),
    "price": Decimal("-5.00"),
    "d": date(1969, 12, 31),
}


def test_schema_precise_row_values_are_exact():
    events = changes(decode_all("schema_precise"), "golden.all_types")
    created = by_key(events, Op.CREATE, 2)
    assert created.after == TYPED_ROW_2
    assert created.before is None
    assert type(created.after["amount"]) is Decimal
    assert by_key(events, Op.CREATE, 3).after == TYPED_ROW_3
    assert str(by_key(events, Op.CREATE, 3).after["amount"]) == "-12345.67"  # EtaH/7Sl5 sign


def test_schema_precise_update_carries_before_and_after_with_replica_identity_full():
    events = changes(decode_all("schema_precise"), "golden.all_types")
    update = by_key(events, Op.UPDATE, 2)
    assert update.before == TYPED_ROW_2
    assert update.after == {**TYPED_ROW_2, "code": "changed"}
    # Finding: with REPLICA IDENTITY FULL the unchanged TOASTed `big` arrives in full
    # in both images (no placeholder).
    assert update.after["big"] == BIG


def test_schema_precise_delete_tombstone_and_source_fields():
    records = decode_all("schema_precise")
    events = changes(records, "golden.all_types")
    delete = by_key(events, Op.DELETE, 3)
    assert delete.before == TYPED_ROW_3
    assert delete.after is None
    assert delete.snapshot is False
    assert isinstance(delete.lsn, int) and delete.lsn > 0
    assert isinstance(delete.source_ts_ms, int)
    assert delete.source["connector"] == "postgresql"
    tombstones = [r for r in records if isinstance(r, Tombstone)]
    assert {t.position.topic.rsplit(".", 1)[1]: t.key for t in tombstones} == {
        "all_types": {"id": 3},
        "toast_default": {"id": 1},
    }


def test_snapshot_read_is_marked_snapshot():
    events = changes(decode_all("schema_precise"), "golden.all_types")
    read = by_key(events, Op.READ, 1)
    assert read.snapshot is True
    assert read.source["snapshot"] == "last"  # a string, not a boolean
    assert read.after["ts"] == datetime(2000, 2, 29, 23, 59, 59, 999999)
    assert read.after["t"] == time(23, 59, 59, 999999)
    assert read.after["qty"] == Decimal("7")
    assert read.after["big"] == BIG
    assert all(not e.snapshot for e in events if e.op is not Op.READ)


def test_toast_placeholder_under_default_identity_becomes_unavailable():
    for variant in VARIANTS:
        toast = changes(decode_all(variant), "golden.toast_default")
        update = by_key(toast, Op.UPDATE, 1)
        assert update.after == {"id": 1, "n": 2, "big": UNAVAILABLE}, variant
        assert update.before is None, variant  # default identity: no before image
        # Finding: a delete under the default identity carries only the key;
        # the other columns are null, not the placeholder.
        assert by_key(toast, Op.DELETE, 1).before == {"id": 1, "n": None, "big": None}
        rendered = record_to_json(update)
        assert rendered["after"]["big"] == {"unavailable": True}
        assert "__debezium_unavailable_value" not in json.dumps(rendered)


def test_transaction_ids_group_begin_events_and_end():
    records = decode_all("schema_precise")
    markers = [r for r in records if isinstance(r, TransactionMarker)]
    assert [m.status for m in markers[:2]] == ["BEGIN", "END"]
    ends = [m for m in markers if m.status == "END"]
    three = [m for m in ends if m.event_count == 3]
    assert len(three) == 1
    assert dict(three[0].data_collections) == {"golden.all_types": 2, "golden.toast_default": 1}
    tx = three[0].transaction_id
    assert tx.isdigit()  # the stable txId part of Debezium's "<txId>:<lsn>"
    in_tx = [r for r in records if isinstance(r, ChangeEvent) and r.transaction_id == tx]
    assert sorted((e.table, e.op.value) for e in in_tx) == [
        ("golden.all_types", "c"),
        ("golden.all_types", "u"),
        ("golden.toast_default", "c"),
    ]
    begins = {m.transaction_id for m in markers if m.status == "BEGIN"}
    assert {m.transaction_id for m in ends} == begins


def test_heartbeat_records():
    for variant in ("schema_precise", "noschema_precise"):
        beats = [r for r in decode_all(variant) if isinstance(r, Heartbeat)]
        assert len(beats) == 1
        assert beats[0].ts_ms > 1_700_000_000_000


def test_schema_string_mode_keeps_text_unless_the_column_is_declared_decimal():
    plain = by_key(changes(decode_all("schema_string"), "golden.all_types"), Op.CREATE, 2)
    assert plain.after["amount"] == "12345.67"  # a plain string schema: nothing says decimal
    assert plain.after["d"] == date(2024, 3, 1)  # other semantic types still typed
    options = DecodeOptions(
        decimal_columns=frozenset(
            {"golden.all_types.amount", "golden.all_types.qty", "golden.all_types.price"}
        )
    )
    typed = by_key(changes(decode_all("schema_string", options), "golden.all_types"), Op.CREATE, 2)
    assert typed.after == TYPED_ROW_2
    row3 = by_key(changes(decode_all("schema_string", options), "golden.all_types"), Op.CREATE, 3)
    assert row3.after == TYPED_ROW_3


def test_schema_double_mode_gives_exact_decimals_never_floats():
    event = by_key(changes(decode_all("schema_double"), "golden.all_types"), Op.CREATE, 2)
    assert event.after == TYPED_ROW_2
    assert all(not isinstance(v, float) for v in event.after.values())
    row3 = by_key(changes(decode_all("schema_double"), "golden.all_types"), Op.CREATE, 3)
    assert row3.after["qty"] == Decimal("-0.000001")
    assert row3.after["price"] == Decimal("-5.0")


SCHEMALESS_ROW_2 = {
    **TYPED_ROW_2,
    # without a schema nothing says these integers/strings are temporal or binary
    "d": 19783,
    "ts": 1709296496789012,
    "tstz": "2024-03-01T02:00:00.000000Z",
    "t": 30600500000,
    "blob": "3q2+7w==",
}


def test_noschema_precise_needs_the_scale_from_config():
    options = DecodeOptions(
        decimal_scales={"golden.all_types.amount": 2, "golden.all_types.price": 2}
    )
    events = changes(decode_all("noschema_precise", options), "golden.all_types")
    assert by_key(events, Op.CREATE, 2).after == SCHEMALESS_ROW_2
    assert by_key(events, Op.CREATE, 3).after["amount"] == Decimal("-12345.67")
    # unconfigured: the precise value stays the opaque text it is on the wire
    raw = by_key(changes(decode_all("noschema_precise"), "golden.all_types"), Op.CREATE, 2)
    assert raw.after["amount"] == "EtaH"
    # the VariableScaleDecimal struct is recognisable without a schema
    assert raw.after["qty"] == Decimal("3.14159")


def test_noschema_precise_declared_without_scale_fails_with_the_fix():
    options = DecodeOptions(decimal_columns=frozenset({"golden.all_types.amount"}))
    record = next(
        r
        for r in load("noschema_precise")
        if r["topic"].endswith("all_types") and r["value"] and r["value"]["op"] == "c"
    )
    position = RecordPosition(record["topic"], record["partition"], record["offset"])
    with pytest.raises(DecodeError) as caught:
        decode_record(position, wire(record["key"]), wire(record["value"]), options)
    message = str(caught.value)
    assert message.startswith(str(position))
    assert "golden.all_types.amount" in message
    assert "value.converter.schemas.enable=true" in message
    assert "decimal.handling.mode=string" in message
    assert "--decimal-scale golden.all_types.amount=N" in message


def test_noschema_string_and_double_modes():
    declared = DecodeOptions(
        decimal_columns=frozenset({"golden.all_types.amount", "golden.all_types.price"})
    )
    string_mode = changes(decode_all("noschema_string", declared), "golden.all_types")
    row = by_key(string_mode, Op.CREATE, 2).after
    assert row == {**SCHEMALESS_ROW_2, "qty": "3.14159"}  # qty undeclared: text
    double_mode = changes(decode_all("noschema_double"), "golden.all_types")
    assert by_key(double_mode, Op.CREATE, 2).after == SCHEMALESS_ROW_2


def test_unwrap_flattened_records():
    records = decode_all("unwrap")
    assert not any(isinstance(r, Tombstone) for r in records)  # rewrite mode drops them
    events = changes(records, "golden.all_types")
    created = by_key(events, Op.CREATE, 2)
    assert created.after == TYPED_ROW_2  # metadata fields are not columns
    assert created.before is None
    assert isinstance(created.lsn, int) and isinstance(created.source_ts_ms, int)
    assert created.source["__deleted"] == "false"
    delete = by_key(events, Op.DELETE, 3)
    assert delete.before == TYPED_ROW_3
    assert delete.after is None
    assert delete.source["__deleted"] == "true"
    update = by_key(events, Op.UPDATE, 2)
    assert update.before is None  # the flattened form has no before image
    assert update.after == {**TYPED_ROW_2, "code": "changed"}
