"""Decoder rules, one by one, on hand-written Debezium 3.x Postgres records."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
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
from syncd.debezium import DecodeOptions, decode_json, decode_record
from tests.unit.debezium_events import (
    POSITION,
    SOURCE_SCHEMA,
    decimal_field,
    envelope_schema,
    field,
    key_doc,
    payload,
    sales_order_update,
    source,
    wire,
    with_schema,
)

OPTIONS = DecodeOptions()
PLACEHOLDER = "__debezium_unavailable_value"


def decode(
    value: Any,
    key: Any = None,
    options: DecodeOptions = OPTIONS,
    position: RecordPosition = POSITION,
) -> Any:
    """Decode through both entry points and insist they agree."""
    from_bytes = decode_record(position, wire(key), wire(value), options)
    from_json = decode_json(position, key, value, options)
    assert from_bytes == from_json
    return from_bytes


def one_column(schema_field: dict[str, Any], wire_value: Any, **kw: Any) -> Any:
    """Decode a create event whose only column (besides id) is `schema_field`."""
    fields = [field("id", "int64", optional=False), schema_field]
    doc = with_schema(
        envelope_schema(fields),
        payload("c", after={"id": 1, schema_field["field"]: wire_value}),
    )
    event = decode(doc, **kw)
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    return event.after[schema_field["field"]]


def fails(
    value: Any,
    key: Any = None,
    options: DecodeOptions = OPTIONS,
    position: RecordPosition = POSITION,
) -> str:
    """Both entry points raise DecodeError; returns the reason."""
    with pytest.raises(DecodeError) as from_json:
        decode_json(position, key, value, options)
    assert from_json.value.position == position
    return from_json.value.reason


def fails_bytes(
    value: bytes | None, key: bytes | None = None, position: RecordPosition = POSITION
) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_record(position, key, value, OPTIONS)
    assert caught.value.position == position
    assert str(caught.value).startswith(f"{position}: ")
    return caught.value.reason


# --- decimals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "scale", "expected"),
    [
        ("EtaH", 2, "12345.67"),
        ("7Sl5", 2, "-12345.67"),
        ("AA==", 2, "0.00"),
        ("AQ==", 2, "0.01"),
        ("/w==", 0, "-1"),
        ("AIAAAAAAAAAA", 4, "922337203685477.5808"),  # 2**63: needs the 0x00 sign byte
        ("JxA=", 2, "100.00"),
        ("BMsv", 5, "3.14159"),
    ],
)
def test_precise_decimal_is_base64_two_complement_at_schema_scale(encoded, scale, expected):
    value = one_column(decimal_field("amount", scale), encoded)
    assert value == Decimal(expected)
    assert str(value) == expected
    assert value.as_tuple().exponent == -scale


def test_precise_decimal_in_numeric_json_format():
    # value.converter.decimal.format=NUMERIC writes the number itself
    fields = [field("id", "int64", optional=False), decimal_field("amount", 2)]
    doc = with_schema(envelope_schema(fields), payload("c", after={"id": 1, "amount": "N"}))
    raw = wire(doc)
    assert raw is not None
    raw = raw.replace(b'"amount":"N"', b'"amount":12345.67')
    event = decode_record(POSITION, None, raw, OPTIONS)
    assert event.after["amount"] == Decimal("12345.67")
    assert type(event.after["amount"]) is Decimal
    assert one_column(decimal_field("amount", 2), 12345.67) == Decimal("12345.67")


def test_numbers_beyond_float_precision_stay_exact_from_bytes():
    # more digits than a double holds: the fast parser's float must not be used
    fields = [field("id", "int64", optional=False), decimal_field("amount", 2)]
    doc = with_schema(envelope_schema(fields), payload("c", after={"id": 1, "amount": "N"}))
    raw = wire(doc)
    assert raw is not None
    raw = raw.replace(b'"amount":"N"', b'"amount":1234567890123456789.12')
    event = decode_record(POSITION, None, raw, OPTIONS)
    assert event.after["amount"] == Decimal("1234567890123456789.12")
    # a declared schemaless decimal sent as a number (decimal.format=NUMERIC)
    body = wire(payload("c", after={"id": 1, "total_amount": "N"}))
    assert body is not None
    body = body.replace(b'"total_amount":"N"', b'"total_amount":98765432109876543.21')
    options = DecodeOptions(decimal_columns=frozenset({"erp.sales_order.total_amount"}))
    event = decode_record(POSITION, None, body, options)
    assert event.after["total_amount"] == Decimal("98765432109876543.21")


def test_values_the_fast_parser_refuses_still_decode():
    body = wire(payload("c", after={"id": 1, "big": "N", "ratio": "R"}))
    assert body is not None
    body = body.replace(b'"big":"N"', b'"big":123456789012345678901234567890')
    body = body.replace(b'"ratio":"R"', b'"ratio":NaN')
    event = decode_record(POSITION, None, body, OPTIONS)
    assert event.after["big"] == 123456789012345678901234567890
    assert event.after["ratio"].is_nan()


def test_variable_scale_decimal():
    vsd = field(
        "qty",
        "struct",
        "io.debezium.data.VariableScaleDecimal",
        fields=[
            {"type": "int32", "optional": False, "field": "scale"},
            {"type": "bytes", "optional": False, "field": "value"},
        ],
        doc="Variable scaled decimal",
    )
    assert one_column(vsd, {"scale": 2, "value": "EtaH"}) == Decimal("12345.67")
    assert one_column(vsd, {"scale": 0, "value": "Bw=="}) == Decimal(7)
    reason = fails(with_schema(envelope_schema([vsd]), payload("c", after={"qty": {"scale": 2}})))
    assert "after.qty" in reason


def test_decimal_string_and_double_modes_give_decimals():
    assert one_column(field("amount", "double"), 12345.67) == Decimal("12345.67")
    assert one_column(field("amount", "double"), 0.1) == Decimal("0.1")
    declared = DecodeOptions(decimal_columns=frozenset({"erp.sales_order.amount"}))
    assert one_column(field("amount", "string"), "12345.67", options=declared) == Decimal(
        "12345.67"
    )


def test_doubles_are_never_kept_as_floats():
    value = one_column(field("ratio", "float"), 1.1)
    assert type(value) is Decimal and value == Decimal("1.1")


# --- temporal types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "type_", "wire_value", "expected"),
    [
        ("io.debezium.time.Date", "int32", 19783, date(2024, 3, 1)),
        ("io.debezium.time.Date", "int32", -1, date(1969, 12, 31)),
        ("org.apache.kafka.connect.data.Date", "int32", 0, date(1970, 1, 1)),
        ("io.debezium.time.Time", "int32", 30600500, time(8, 30, 0, 500000)),
        ("org.apache.kafka.connect.data.Time", "int32", 30600500, time(8, 30, 0, 500000)),
        ("io.debezium.time.MicroTime", "int64", 86399999999, time(23, 59, 59, 999999)),
        ("io.debezium.time.NanoTime", "int64", 30600500000001, time(8, 30, 0, 500000)),
        (
            "io.debezium.time.Timestamp",
            "int64",
            1709296496789,
            datetime(2024, 3, 1, 12, 34, 56, 789000),
        ),
        (
            "org.apache.kafka.connect.data.Timestamp",
            "int64",
            -1,
            datetime(1969, 12, 31, 23, 59, 59, 999000),
        ),
        (
            "io.debezium.time.MicroTimestamp",
            "int64",
            1709296496789012,
            datetime(2024, 3, 1, 12, 34, 56, 789012),
        ),
        (
            "io.debezium.time.NanoTimestamp",
            "int64",
            1709296496789012345,
            datetime(2024, 3, 1, 12, 34, 56, 789012),
        ),
        (
            "io.debezium.time.ZonedTimestamp",
            "string",
            "2024-03-01T02:00:00.000000Z",
            datetime(2024, 3, 1, 2, 0, tzinfo=UTC),
        ),
        (
            "io.debezium.time.ZonedTimestamp",
            "string",
            "2024-03-01T10:00:00+08:00",
            datetime(2024, 3, 1, 2, 0, tzinfo=UTC),
        ),
        (
            "io.debezium.time.ZonedTime",
            "string",
            "08:30:00.5+02:00",
            time(8, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("io.debezium.time.ZonedTime", "string", "08:30:00Z", time(8, 30, tzinfo=UTC)),
        ("io.debezium.time.Year", "int32", 2024, 2024),
        ("io.debezium.time.Interval", "string", "P1Y2M3DT4H5M6.78S", "P1Y2M3DT4H5M6.78S"),
        ("io.debezium.time.MicroDuration", "int64", 3_600_000_000, 3_600_000_000),
    ],
)
def test_temporal_types(name, type_, wire_value, expected):
    value = one_column(field("v", type_, name), wire_value)
    assert value == expected
    if isinstance(expected, datetime):
        assert (value.tzinfo is None) == (expected.tzinfo is None)


@pytest.mark.parametrize(
    ("name", "type_", "wire_value", "needle"),
    [
        ("io.debezium.time.MicroTime", "int64", 86_400_000_000, "time of day out of range"),
        ("io.debezium.time.Date", "int32", 10**9, "date out of range"),
        ("io.debezium.time.ZonedTimestamp", "string", "yesterday", "not an ISO-8601"),
        ("io.debezium.time.ZonedTimestamp", "string", "2024-03-01T02:00:00", "not an ISO-8601"),
        ("io.debezium.time.Date", "int32", "2024-03-01", "expected an integer"),
        ("io.debezium.time.MicroTimestamp", "int64", 1.5, "expected an integer"),
    ],
)
def test_bad_temporal_values(name, type_, wire_value, needle):
    fields = [field("v", type_, name)]
    reason = fails(with_schema(envelope_schema(fields), payload("c", after={"v": wire_value})))
    assert reason.startswith("after.v: ")
    assert needle in reason


# --- other semantic types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_field", "wire_value", "expected"),
    [
        (field("doc", "string", "io.debezium.data.Json"), '{"a": 1}', '{"a": 1}'),
        (
            field("uid", "string", "io.debezium.data.Uuid"),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        (field("mood", "string", "io.debezium.data.Enum", parameters={"allowed": "a,b"}), "a", "a"),
        (
            field("tags", "string", "io.debezium.data.EnumSet", parameters={"allowed": "x,y"}),
            "x,y",
            "x,y",
        ),
        (
            field("bits", "bytes", "io.debezium.data.Bits", parameters={"length": "8"}),
            "Bw==",
            b"\x07",
        ),
        (field("blob", "bytes"), "3q2+7w==", b"\xde\xad\xbe\xef"),
        (field("flag", "boolean"), False, False),
        (field("n", "int16"), -3, -3),
        (
            field("names", "array", items={"type": "string", "optional": True}),
            ["a", None],
            ["a", None],
        ),
        (
            field(
                "attrs",
                "map",
                keys={"type": "string", "optional": False},
                values={"type": "string", "optional": True},
            ),
            {"k": "v"},
            {"k": "v"},
        ),
        (
            field(
                "ints",
                "map",
                keys={"type": "int32", "optional": False},
                values={"type": "double", "optional": True},
            ),
            [[1, 0.5]],
            {"1": Decimal("0.5")},
        ),
    ],
)
def test_other_types(schema_field, wire_value, expected):
    assert one_column(schema_field, wire_value) == expected


def test_unknown_names_on_plain_primitives_fall_back_to_the_primitive():
    assert one_column(field("v", "int64", "com.example.Custom"), 5) == 5
    assert one_column(field("v", "string", "io.debezium.data.SomeFutureText"), "x") == "x"


def test_unknown_debezium_type_needing_conversion_is_a_decode_error_naming_it():
    fields = [field("v", "int64", "io.debezium.time.SomeFutureTime")]
    reason = fails(with_schema(envelope_schema(fields), payload("c", after={"v": 5})))
    assert "io.debezium.time.SomeFutureTime" in reason
    assert "before.v" in reason or "after.v" in reason


# --- TOAST placeholder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_field", "wire_value"),
    [
        (field("big", "string"), PLACEHOLDER),
        (field("doc", "string", "io.debezium.data.Json"), PLACEHOLDER),
        (field("blob", "bytes"), base64.b64encode(PLACEHOLDER.encode()).decode()),
        (field("tags", "array", items={"type": "string", "optional": True}), [PLACEHOLDER]),
        (
            field("nums", "array", items={"type": "int32", "optional": True}),
            list(PLACEHOLDER.encode()),
        ),
        (
            field(
                "ids",
                "array",
                items={"type": "string", "optional": True, "name": "io.debezium.data.Uuid"},
            ),
            ["7ab1d8ac-fd5e-3ea9-9c3e-0d2b5e6b9e5d"],
        ),
        (
            field(
                "attrs",
                "map",
                keys={"type": "string", "optional": False},
                values={"type": "string", "optional": True},
            ),
            {PLACEHOLDER: PLACEHOLDER},
        ),
    ],
)
def test_toast_placeholder_becomes_unavailable_never_the_string(schema_field, wire_value):
    if schema_field["field"] == "ids":
        # Java's UUID.nameUUIDFromBytes of the placeholder bytes
        import hashlib
        import uuid

        digest = hashlib.md5(PLACEHOLDER.encode()).digest()
        wire_value = [str(uuid.UUID(bytes=digest, version=3))]
    assert one_column(schema_field, wire_value) is UNAVAILABLE


def test_toast_placeholder_without_schema():
    event = decode(payload("u", after={"id": 1, "big": PLACEHOLDER, "tags": [PLACEHOLDER]}))
    assert event.after == {"id": 1, "big": UNAVAILABLE, "tags": UNAVAILABLE}


# --- ops, envelopes, sources ---------------------------------------------------------------

ROW_FIELDS = [field("id", "int64", optional=False), field("status", "string")]


@pytest.mark.parametrize(
    ("op", "before", "after"),
    [
        ("c", None, {"id": 1, "status": "DRAFT"}),
        ("r", None, {"id": 1, "status": "DRAFT"}),
        ("u", {"id": 1, "status": "DRAFT"}, {"id": 1, "status": "CONFIRMED"}),
        ("d", {"id": 1, "status": "CONFIRMED"}, None),
        ("t", None, None),
    ],
)
@pytest.mark.parametrize("schemas", [True, False])
def test_row_ops(op, before, after, schemas):
    body = payload(op, before=before, after=after)
    doc = with_schema(envelope_schema(ROW_FIELDS), body) if schemas else body
    event = decode(doc, key=None if op == "t" else key_doc(1, schemas))
    assert isinstance(event, ChangeEvent)
    assert event.op is Op(op)
    assert event.table == "erp.sales_order"
    assert event.before == before
    assert event.after == after
    assert event.key == (None if op == "t" else {"id": 1})
    assert event.source_ts_ms == 1767225600000
    assert event.lsn == 24023984
    assert event.transaction_id == "771"  # txId when there is no transaction block
    assert event.snapshot is False


def test_message_op():
    body = {
        "op": "m",
        "ts_ms": 1767225600500,
        "source": source(schema="", table="", snapshot="false"),
        "message": {"prefix": "syncd", "content": base64.b64encode(b"hello").decode()},
    }
    event = decode(body)
    assert event.op is Op.MESSAGE
    assert event.table == ""
    assert event.after == {"prefix": "syncd", "content": b"hello"}


def test_transaction_block_id_is_reduced_to_the_stable_txid():
    body = payload(
        "c",
        after={"id": 1, "status": "DRAFT"},
        transaction={"id": "771:24023984", "total_order": 2, "data_collection_order": 1},
    )
    assert decode(body).transaction_id == "771"


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        ("true", True),
        ("first", True),
        ("last", True),
        ("first_in_data_collection", True),
        ("last_in_data_collection", True),
        ("incremental", True),
        ("false", False),
        (None, False),
    ],
)
def test_source_snapshot_is_a_string(snapshot, expected):
    event = decode(payload("r", after={"id": 1}, src=source(snapshot=snapshot)))
    assert event.snapshot is expected


def test_mysql_source_names_db_table():
    mysql = {
        "version": "3.6.1.Final",
        "connector": "mysql",
        "name": "erp",
        "ts_ms": 1,
        "snapshot": "false",
        "db": "shop",
        "sequence": None,
        "table": "orders",
        "server_id": 223344,
        "gtid": None,
        "file": "mysql-bin.000003",
        "pos": 154,
        "row": 0,
        "thread": 7,
        "query": None,
    }
    event = decode(payload("c", after={"id": 1}, src=mysql))
    assert event.table == "shop.orders"
    assert event.lsn is None
    assert event.source["file"] == "mysql-bin.000003"


def test_sales_order_update_with_schemas():
    key, value = sales_order_update()
    event = decode_record(POSITION, key, value, OPTIONS)
    assert isinstance(event, ChangeEvent)
    assert event.op is Op.UPDATE
    assert event.key == {"id": 7}
    assert event.before["status"] == "DRAFT"
    assert event.after["status"] == "CONFIRMED"
    assert event.after["total_amount"] == Decimal("12345.67")
    assert event.after["order_date"] == date(2026, 1, 1)
    assert event.after["created_at"] == datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    assert event.after["updated_at"] == datetime(2026, 1, 1, 2, 0, 0, 123456)
    assert event.after["invoice_no"] is None
    assert event.transaction_id == "771"


# --- tombstones, heartbeats, transaction records ------------------------------------------


def test_tombstone():
    record = decode_record(POSITION, wire(key_doc(7)), None, OPTIONS)
    assert record == Tombstone(POSITION, {"id": 7})
    assert decode_json(POSITION, {"id": 7}, None, OPTIONS) == Tombstone(POSITION, {"id": 7})
    assert decode_record(POSITION, None, None, OPTIONS) == Tombstone(POSITION, None)


def test_schema_envelope_with_null_payload_is_a_tombstone():
    assert decode({"schema": None, "payload": None}, key={"id": 7}) == Tombstone(
        POSITION, {"id": 7}
    )


HEARTBEAT = RecordPosition("__debezium-heartbeat.erp", 0, 3)


def test_heartbeat():
    beat = decode({"ts_ms": 1767225600000}, key={"serverName": "erp"}, position=HEARTBEAT)
    assert beat == Heartbeat(HEARTBEAT, 1767225600000)
    with_schemas = with_schema(
        {
            "type": "struct",
            "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}],
            "optional": False,
            "name": "io.debezium.connector.common.Heartbeat",
            "version": 1,
        },
        {"ts_ms": 1767225600000},
    )
    assert decode(with_schemas, position=HEARTBEAT) == beat
    custom = DecodeOptions(heartbeat_topic_prefix="hb")
    position = RecordPosition("hb.erp", 0, 0)
    assert decode({"ts_ms": 5}, options=custom, position=position) == Heartbeat(position, 5)
    assert "ts_ms" in fails({"ts": 5}, position=HEARTBEAT)


TX = RecordPosition("erp.transaction", 0, 9)


def test_transaction_markers():
    begin = decode(
        {
            "status": "BEGIN",
            "id": "771:24023984",
            "event_count": None,
            "data_collections": None,
            "ts_ms": 1,
        },
        key={"id": "771:24023984"},
        position=TX,
    )
    assert begin == TransactionMarker(TX, "BEGIN", "771", None, ())
    end = decode(
        {
            "status": "END",
            "id": "771:24024400",
            "event_count": 3,
            "data_collections": [
                {"data_collection": "erp.sales_order", "event_count": 1},
                {"data_collection": "erp.sales_order_line", "event_count": 2},
            ],
            "ts_ms": 1,
        },
        position=TX,
    )
    assert end == TransactionMarker(
        TX, "END", "771", 3, (("erp.sales_order", 1), ("erp.sales_order_line", 2))
    )
    mysql_gtid = decode(
        {"status": "BEGIN", "id": "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"}, position=TX
    )
    assert mysql_gtid.transaction_id == "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
    assert "status" in fails({"status": "COMMIT", "id": "1"}, position=TX)
    assert "data_collections" in fails(
        {"status": "END", "id": "1", "data_collections": [{"data_collection": 1}]}, position=TX
    )


# --- ExtractNewRecordState -----------------------------------------------------------------


def flat(row: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {**row, **{f"__{k}": v for k, v in meta.items()}}


def test_flattened_create_update_delete():
    create = decode(
        flat(
            {"id": 1, "status": "DRAFT"},
            op="c",
            table="sales_order",
            lsn=24023984,
            source_ts_ms=1767225600000,
            deleted="false",
        )
    )
    assert create.op is Op.CREATE
    assert create.table == "erp.sales_order"  # schema from the topic name
    assert create.after == {"id": 1, "status": "DRAFT"}
    assert create.before is None
    assert create.lsn == 24023984 and create.source_ts_ms == 1767225600000
    delete = decode(flat({"id": 1, "status": "DRAFT"}, op="d", table="sales_order", deleted="true"))
    assert delete.op is Op.DELETE
    assert delete.before == {"id": 1, "status": "DRAFT"}
    assert delete.after is None


def test_flattened_rewrite_delete_without_op_field():
    delete = decode(flat({"id": 1}, deleted="true"))
    assert delete.op is Op.DELETE and delete.table == "erp.sales_order"


def test_flattened_schema_and_db_fields():
    elsewhere = RecordPosition("routed-topic", 0, 1)
    event = decode(flat({"id": 1}, op="u", table="orders", schema="sales"), position=elsewhere)
    assert event.table == "sales.orders"
    mysql = decode(flat({"id": 1}, op="u", table="orders", db="shop"), position=elsewhere)
    assert mysql.table == "shop.orders"
    assert "add.fields" in fails(flat({"id": 1}, op="u"), position=elsewhere)


def test_flattened_with_schema():
    fields = [
        field("id", "int64", optional=False),
        decimal_field("total_amount", 2),
        field("__deleted", "string"),
        field("__op", "string"),
        field("__table", "string"),
        field("__lsn", "int64"),
        field("__source_ts_ms", "int64"),
    ]
    schema = {
        "type": "struct",
        "fields": fields,
        "optional": False,
        "name": "erp.erp.sales_order.Value",
    }
    event = decode(
        with_schema(
            schema,
            flat(
                {"id": 1, "total_amount": "EtaH"},
                deleted="false",
                op="u",
                table="sales_order",
                lsn=5,
                source_ts_ms=6,
            ),
        )
    )
    assert event.after == {"id": 1, "total_amount": Decimal("12345.67")}
    assert event.op is Op.UPDATE


def test_flattened_without_op_is_refused():
    reason = fails(flat({"id": 1}, table="sales_order", deleted="false"))
    assert "add.fields=op" in reason
    assert "__deleted" in fails(flat({"id": 1}, op="u", deleted="maybe"))


# --- schemaless decimals ----------------------------------------------------------------


def test_schemaless_precise_decimal_takes_the_scale_from_options():
    body = payload("c", after={"id": 1, "total_amount": "EtaH", "tax": "7Sl5"})
    options = DecodeOptions(
        decimal_scales={"erp.sales_order.total_amount": 2, "erp.sales_order.tax": 2}
    )
    event = decode(body, options=options)
    assert event.after["total_amount"] == Decimal("12345.67")
    assert event.after["tax"] == Decimal("-12345.67")


def test_schemaless_declared_decimal_without_scale_explains_the_fix():
    body = payload("c", after={"id": 1, "total_amount": "EtaH"})
    options = DecodeOptions(decimal_columns=frozenset({"erp.sales_order.total_amount"}))
    reason = fails(body, options=options)
    assert "erp.sales_order.total_amount" in reason
    assert "schemas.enable=true" in reason
    assert "decimal.handling.mode=string" in reason
    assert "scale" in reason
    # the same column in string mode is fine
    ok = decode(payload("c", after={"id": 1, "total_amount": "12345.67"}), options=options)
    assert ok.after["total_amount"] == Decimal("12345.67")


def test_decode_options_validate_column_names():
    with pytest.raises(ValueError, match=r"schema\.table\.column"):
        DecodeOptions(decimal_scales={"amount": 2})


# --- malformed input -------------------------------------------------------------------------


def test_not_json_and_not_utf8():
    assert "value is not JSON" in fails_bytes(b"{nope")
    assert "value is not UTF-8" in fails_bytes(b'{"op":"c\xff"}')
    assert "key is not JSON" in fails_bytes(wire(payload("c", after={"id": 1})), b"[")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([1, 2], "expected a change-event object"),
        ("text", "expected a change-event object"),
        ({"before": None, "after": {"id": 1}, "source": source()}, "without 'op'"),
        ({"op": "c", "after": {"id": 1}}, "without a 'source'"),
        ({"op": "c", "after": {"id": 1}, "source": "pg"}, "'source' is a JSON string"),
        ({"op": "x", "after": {"id": 1}, "source": source()}, "unknown op 'x'"),
        ({"op": 1, "after": {"id": 1}, "source": source()}, "unknown op 1"),
        ({"op": "c", "after": None, "source": source()}, "without an 'after' row"),
        ({"op": "c", "after": [1], "source": source()}, "after: row is a JSON array"),
        ({"op": "c", "after": {"id": 1}, "source": source(table=None)}, "'table'"),
        ({"op": "c", "after": {"id": 1}, "source": source(snapshot=1)}, "source.snapshot"),
        ({"op": "c", "after": {"id": 1}, "source": source(ts_ms="x")}, "source.ts_ms"),
        ({"schema": {"type": "string"}, "payload": {"op": "c"}}, "expected a struct"),
    ],
)
def test_wrong_envelopes(value, needle):
    assert needle in fails(value)


def test_bad_values_against_the_schema():
    fields = [
        field("id", "int64", optional=False),
        decimal_field("amount", 2),
        field("flag", "boolean"),
    ]
    schema = envelope_schema(fields)
    assert "after.amount: invalid base64" in fails(
        with_schema(schema, payload("c", after={"id": 1, "amount": "not base64!"}))
    )
    assert "after.id: expected an integer, got string" in fails(
        with_schema(schema, payload("c", after={"id": "1"}))
    )
    assert "after.flag: expected a boolean" in fails(
        with_schema(schema, payload("c", after={"id": 1, "flag": "yes"}))
    )
    assert "after.surprise: field not in the schema" in fails(
        with_schema(schema, payload("c", after={"id": 1, "surprise": 1}))
    )
    assert "scale" in fails(
        with_schema(
            envelope_schema([field("a", "bytes", "org.apache.kafka.connect.data.Decimal")]),
            payload("c", after={"a": "AQ=="}),
        )
    )


def test_deeply_nested_values_fail_cleanly():
    deep: Any = "x"
    for _ in range(900):
        deep = [deep]
    body = payload("c", after={"id": 1, "v": deep})
    reason = fails(body)
    assert reason.startswith("after.v.[0].[0]")
    assert reason.endswith(": value nested more than 32 levels deep (limits.max_nesting_depth)")
    assert len(reason) < 250  # the path is abbreviated, the rule broken kept
    raw = b'{"op":"c","source":{},"after":{"v":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert "JSON" in fails_bytes(raw)


def test_key_must_be_an_object():
    body = payload("c", after={"id": 1})
    assert "key is a JSON array" in fails(body, key=[1])
    assert "key is a JSON number" in fails(body, key=7)
    assert "key is a JSON string" in fails_bytes(None, b'"7"')


def test_cached_schema_with_broken_payload_still_fails_precisely():
    key, value = sales_order_update()
    decode_record(POSITION, key, value, OPTIONS)  # warms the schema cache
    broken = value.replace(b'"op":"u"', b'"op":"z"')
    assert "unknown op 'z'" in fails_bytes(broken, key)
    truncated = value[:-2]
    assert "value is not JSON" in fails_bytes(truncated, key)
    extra = value[:-1] + b',"extra":1}'
    assert "unexpected keys ['extra']" in fails_bytes(extra, key)


def test_source_schema_constant_is_shaped_like_debezium():
    assert SOURCE_SCHEMA["name"] == "io.debezium.connector.postgresql.Source"


def test_a_known_schema_is_compiled_once_and_not_parsed_again(monkeypatch):
    from syncd.debezium import records

    for cache in (records._bytes_plans, records._identity_plans, records._text_plans):
        cache.clear()
    compiled: list[int] = []
    real_compile = records.compile_plan

    def counting_compile(schema: Any) -> Any:
        compiled.append(1)
        return real_compile(schema)

    parsed: list[int] = []
    real_parse = records._parse_fast

    def counting_parse(data: bytes, what: str) -> Any:
        parsed.append(len(data))
        return real_parse(data, what)

    monkeypatch.setattr(records, "compile_plan", counting_compile)
    monkeypatch.setattr(records, "_parse_fast", counting_parse)
    key, value = sales_order_update()
    first = decode_record(POSITION, key, value, OPTIONS)
    assert len(compiled) == 2  # the key schema and the value schema
    parsed.clear()
    for offset in range(5):
        position = RecordPosition(POSITION.topic, 0, offset)
        assert decode_record(position, key, value, OPTIONS).after == first.after
    assert len(compiled) == 2
    assert len(parsed) == 10  # key and value payloads only
    assert max(parsed) < len(value) // 3  # the schema text was skipped, not parsed
