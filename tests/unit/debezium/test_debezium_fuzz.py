"""Fuzzing: whatever arrives on a topic, the decoder answers a record or a DecodeError.

A poison record must never crash the consumer loop with another exception type,
and the reason must be a precise one (not the last-resort "malformed record" guard).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.changes import DecodedRecord, DecodeError, RecordPosition
from syncd.debezium import DecodeOptions, decode_json, decode_record, record_to_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
OPTIONS = DecodeOptions(decimal_scales={"golden.all_types.amount": 2})
TOPICS = st.sampled_from(
    [
        "golden_x.golden.all_types",
        "erp.erp.sales_order",
        "__debezium-heartbeat.erp",
        "erp.transaction",
        "x",
    ]
)
# SYNCD_FUZZ_EXAMPLES=5000 for a deeper run; the default keeps `pytest tests/unit` lean.
FUZZ = settings(
    max_examples=int(os.environ.get("SYNCD_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "c",
            "u",
            "d",
            "r",
            "t",
            "m",
            "EtaH",
            "__debezium_unavailable_value",
            "true",
            "false",
            "BEGIN",
            "END",
            "struct",
            "int64",
            "bytes",
        ]
    )
)
KEYS = st.sampled_from(
    [
        "schema",
        "payload",
        "op",
        "before",
        "after",
        "source",
        "table",
        "schema",
        "db",
        "ts_ms",
        "snapshot",
        "type",
        "fields",
        "field",
        "name",
        "parameters",
        "scale",
        "value",
        "items",
        "values",
        "keys",
        "id",
        "status",
        "data_collections",
        "event_count",
        "__op",
        "__deleted",
        "__table",
        "__lsn",
        "transaction",
        "message",
        "lsn",
    ]
) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


def check(record: DecodedRecord) -> None:
    json.dumps(record_to_json(record))


def only_decode_errors(call: Any) -> None:
    try:
        record = call()
    except DecodeError as exc:
        assert exc.reason
        assert not exc.reason.startswith("malformed record ("), exc.reason
    else:
        check(record)


@FUZZ
@given(topic=TOPICS, key=st.none() | st.binary(max_size=64), value=st.none() | st.binary())
def test_arbitrary_bytes(topic, key, value):
    position = RecordPosition(topic, 0, 1)
    only_decode_errors(lambda: decode_record(position, key, value, OPTIONS))


@FUZZ
@given(topic=TOPICS, key=json_values, value=json_values)
def test_arbitrary_json_documents(topic, key, value):
    position = RecordPosition(topic, 0, 1)
    only_decode_errors(lambda: decode_json(position, key, value, OPTIONS))
    key_bytes = None if key is None else json.dumps(key).encode()
    value_bytes = None if value is None else json.dumps(value).encode()
    only_decode_errors(lambda: decode_record(position, key_bytes, value_bytes, OPTIONS))


def _fixture_records() -> list[dict[str, Any]]:
    records: list[Any] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


REAL = _fixture_records()


@st.composite
def mutated_real_records(draw: st.DrawFn) -> dict[str, Any]:
    """A real captured record with one subtree replaced by arbitrary JSON."""
    record = copy.deepcopy(draw(st.sampled_from(REAL)))
    target = draw(st.sampled_from(["key", "value"]))
    node = record
    name: Any = target
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        child = node[name]
        if isinstance(child, dict) and child:
            node, name = child, draw(st.sampled_from(sorted(child)))
        elif isinstance(child, list) and child:
            node, name = child, draw(st.integers(min_value=0, max_value=len(child) - 1))
        else:
            break
    node[name] = draw(json_values)
    return record


@FUZZ
@given(record=mutated_real_records())
def test_mutated_real_records(record):
    position = RecordPosition(record["topic"], record["partition"], record["offset"])
    only_decode_errors(lambda: decode_json(position, record["key"], record["value"], OPTIONS))
    key = None if record["key"] is None else json.dumps(record["key"]).encode()
    value = None if record["value"] is None else json.dumps(record["value"]).encode()
    only_decode_errors(lambda: decode_record(position, key, value, OPTIONS))


SCHEMA_TYPES = st.sampled_from(
    [
        "int8",
        "int16",
        "int32",
        "int64",
        "float",
        "double",
        "boolean",
        "string",
        "bytes",
        "array",
        "map",
        "struct",
        "decimal",
        None,
        5,
    ]
)
SCHEMA_NAMES = st.none() | st.sampled_from(
    [
        "org.apache.kafka.connect.data.Decimal",
        "io.debezium.data.VariableScaleDecimal",
        "io.debezium.time.Date",
        "io.debezium.time.Time",
        "io.debezium.time.MicroTime",
        "io.debezium.time.NanoTime",
        "io.debezium.time.Timestamp",
        "io.debezium.time.MicroTimestamp",
        "io.debezium.time.NanoTimestamp",
        "io.debezium.time.ZonedTimestamp",
        "io.debezium.time.ZonedTime",
        "io.debezium.time.IsoDate",
        "io.debezium.time.IsoTimestamp",
        "org.apache.kafka.connect.data.Time",
        "org.apache.kafka.connect.data.Timestamp",
        "io.debezium.data.Json",
        "io.debezium.data.Bits",
        "io.debezium.unknown.Thing",
        "custom.Name",
    ]
)


@st.composite
def field_schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": draw(SCHEMA_TYPES), "optional": True}
    name = draw(SCHEMA_NAMES)
    if name is not None:
        schema["name"] = name
    if draw(st.booleans()):
        schema["parameters"] = {"scale": draw(st.sampled_from(["2", "0", "-1", "x", 3, None]))}
    if depth < 2:
        if schema["type"] == "struct" or draw(st.booleans()):
            schema["fields"] = [
                {**draw(field_schemas(depth + 1)), "field": draw(st.sampled_from("abc"))}
                for _ in range(draw(st.integers(0, 2)))
            ]
        if schema["type"] in ("array", "map"):
            schema["items"] = draw(field_schemas(depth + 1))
            schema["values"] = draw(field_schemas(depth + 1))
    return schema


@FUZZ
@given(column=field_schemas(), value=json_values, schemas_on=st.booleans())
def test_arbitrary_column_schemas_and_values(column, value, schemas_on):
    column = {**column, "field": "v"}
    row_schema = {"type": "struct", "fields": [column], "optional": True, "name": "t.Value"}
    envelope = {
        "type": "struct",
        "fields": [
            {**row_schema, "field": "before"},
            {**row_schema, "field": "after"},
            {
                "type": "struct",
                "fields": [],
                "optional": False,
                "field": "source",
                "name": "io.debezium.connector.postgresql.Source",
            },
            {"type": "string", "optional": False, "field": "op"},
        ],
        "optional": False,
        "name": "t.Envelope",
    }
    body = {
        "before": None,
        "after": {"v": value},
        "op": "c",
        "source": {"schema": "golden", "table": "all_types", "ts_ms": 1},
    }
    doc = {"schema": envelope, "payload": body} if schemas_on else body
    position = RecordPosition("golden_x.golden.all_types", 0, 1)
    only_decode_errors(lambda: decode_json(position, None, doc, OPTIONS))
    only_decode_errors(lambda: decode_record(position, None, json.dumps(doc).encode(), OPTIONS))
