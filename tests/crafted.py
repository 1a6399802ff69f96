"""Crafted change records: what a buggy upstream, or anyone with write access to a captured
topic, can put there. Each starts from a valid DRAFT -> CONFIRMED update of a sales order
(which syncd would invoice) and breaks exactly one thing, so that a record which is not
dead-lettered is caught by the tests instead of silently issuing or ignoring.

`corpus(schema)` returns them by kind for the table `<schema>.sales_order`; the key id of
each is far above any real order, so even a record that slipped through could not touch a
real one.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

from tests.unit.debezium_events import (
    KEY_SCHEMA,
    SALES_ORDER_FIELDS,
    decimal_field,
    envelope_schema,
    field,
    payload,
    sales_order_row,
    source,
    with_schema,
)

CRAFTED_ID = 9_000_000_000_000
Record = tuple[bytes | None, bytes | None]


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


class _Template:
    """The valid confirmation, as mutable JSON documents."""

    def __init__(self, schema: str, order_id: int) -> None:
        topic = f"x.{schema}.sales_order"
        self.fields = copy.deepcopy(SALES_ORDER_FIELDS)
        before, after = sales_order_row("DRAFT"), sales_order_row("CONFIRMED")
        before["id"] = after["id"] = order_id
        self.key_schema = copy.deepcopy(KEY_SCHEMA)
        self.key_payload: Any = {"id": order_id}
        self.payload = payload(
            "u", before=before, after=after, src=source(schema=schema, table="sales_order")
        )
        self.topic = topic

    def schema(self) -> dict[str, Any]:
        return envelope_schema(self.fields, table=self.topic)

    def set_field(self, name: str, schema: dict[str, Any]) -> None:
        self.fields = [schema if f["field"] == name else f for f in self.fields]

    def rows(self) -> list[dict[str, Any]]:
        return [self.payload["before"], self.payload["after"]]

    def record(self) -> Record:
        key = _dumps(with_schema(self.key_schema, self.key_payload))
        return key, _dumps(with_schema(self.schema(), self.payload))


def _key_decimal(scale: int, value: str = "AQ==") -> Callable[[_Template], Record]:
    def make(t: _Template) -> Record:
        t.key_schema["fields"] = [decimal_field("id", scale) | {"optional": False}]
        t.set_field("id", decimal_field("id", scale) | {"optional": False})
        t.key_payload = {"id": value}
        for row in t.rows():
            row["id"] = value
        return t.record()

    return make


def _amount(schema: dict[str, Any], value: Any) -> Callable[[_Template], Record]:
    def make(t: _Template) -> Record:
        t.set_field("total_amount", schema)
        for row in t.rows():
            row["total_amount"] = value
        return t.record()

    return make


def _after(column: str, value: Any) -> Callable[[_Template], Record]:
    def make(t: _Template) -> Record:
        t.payload["after"][column] = value
        return t.record()

    return make


def _payload(name: str, value: Any) -> Callable[[_Template], Record]:
    def make(t: _Template) -> Record:
        t.payload[name] = value
        return t.record()

    return make


def _raw_value(replace: Callable[[bytes], bytes]) -> Callable[[_Template], Record]:
    def make(t: _Template) -> Record:
        key, value = t.record()
        assert value is not None
        return key, replace(value)

    return make


def _schemaless(key: str, value: str | None = None) -> Callable[[_Template], Record]:
    """Key (and value) documents without schemas, written as raw JSON text."""

    def make(t: _Template) -> Record:
        body = value if value is not None else _dumps(t.payload).decode()
        return key.encode(), body.encode()

    return make


def _no_row_ids(t: _Template) -> _Template:
    for row in t.rows():
        row["id"] = None
    return t


def _deep_schema(t: _Template) -> Record:
    nested: dict[str, Any] = {"type": "string", "optional": True}
    for _ in range(600):
        nested = {"type": "array", "items": nested, "optional": True}
    t.fields = [*t.fields, {**nested, "field": "deep"}]
    return t.record()


def _wide_schema(t: _Template) -> Record:
    t.fields = [*t.fields, *(field(f"c{i}", "string") for i in range(3000))]
    return t.record()


def _many_unknown_fields(t: _Template) -> Record:
    for i in range(20000):
        t.payload["after"][f"x{i}"] = i
    return t.record()


def _huge_remark(t: _Template) -> Record:
    t.payload["after"]["remark"] = "x" * 600_000  # over the tests' 512 KiB record limit
    return t.record()


def _schema_type(t: _Template) -> Record:
    t.set_field("status", {"type": 42, "optional": False, "field": "status"})
    return t.record()


def _key_missing(t: _Template) -> Record:
    for row in t.rows():
        row["id"] = None
    t.key_payload = None
    _, value = t.record()
    return None, value


def _variable_scale(scale: int, raw: bytes = b"\x01") -> Callable[[_Template], Record]:
    return _amount(
        field(
            "total_amount",
            "struct",
            "io.debezium.data.VariableScaleDecimal",
            fields=[
                field("scale", "int32", optional=False),
                field("value", "bytes", optional=False),
            ],
        ),
        {"scale": scale, "value": base64.b64encode(raw).decode()},
    )


def _numeric_amount(text: str) -> Callable[[_Template], Record]:
    """decimal.format=NUMERIC: the amount as a bare JSON number (written as raw text)."""

    def make(t: _Template) -> Record:
        for row in t.rows():
            row["total_amount"] = "@@AMOUNT@@"
        key, value = t.record()
        assert value is not None
        return key, value.replace(b'"@@AMOUNT@@"', text.encode())

    return make


#: kind -> how to make it from the template
MAKERS: dict[str, Callable[[_Template], Record]] = {
    "key_decimal_scale_negative": _key_decimal(-999_999_999),
    "key_decimal_scale_positive": _key_decimal(999_999_999),
    "key_decimal_many_digits": _key_decimal(0, base64.b64encode(b"\x7f" * 5000).decode()),
    "amount_decimal_scale_negative": _amount(decimal_field("total_amount", -999_999_999), "AQ=="),
    "amount_variable_scale_huge": _variable_scale(10**9),
    "amount_variable_scale_many_digits": _variable_scale(2, b"\x7f" * 4000),
    "amount_number_huge_exponent": _numeric_amount("1e999999999"),
    "amount_number_many_digits": _numeric_amount("1" * 3000 + ".5"),
    "key_schemaless_huge_exponent": _schemaless('{"id": 1e999999999}'),
    "key_schemaless_nan": lambda t: _schemaless('{"id": NaN}')(_no_row_ids(t)),
    "key_schemaless_deep": _schemaless('{"id": ' + _deep(5000) + "}"),
    "key_schemaless_int_too_long": _schemaless('{"id": ' + "7" * 5000 + "}"),
    "value_deep_nesting": lambda t: _schemaless(
        '{"id": 1}', _dumps(t.payload).decode().replace('"remark":null', '"remark":' + _deep(900))
    )(t),
    "value_deeper_than_json": lambda t: _schemaless(
        '{"id": 1}', _dumps(t.payload).decode().replace('"remark":null', '"remark":' + _deep(5000))
    )(t),
    "schema_deep_nesting": _deep_schema,
    "schema_too_many_fields": _wide_schema,
    "value_too_many_fields": _many_unknown_fields,
    "value_too_large": _huge_remark,
    "text_lone_surrogate": _raw_value(lambda v: v.replace("上海示例".encode(), b"\\ud800", 1)),
    "text_invalid_utf8": _raw_value(lambda v: v.replace("上海示例".encode(), b"\xff\xfe", 1)),
    "not_json": _raw_value(lambda v: b"\x00\x01not json" + v[:50]),
    "value_is_array": _raw_value(lambda v: b"[" + v + b"]"),
    "op_wrong_type": _payload("op", 42),
    "source_wrong_type": _payload("source", "erp"),
    "after_wrong_type": _payload("after", [1, 2, 3]),
    "schema_field_type_wrong": _schema_type,
    "status_wrong_type": _after("status", {"nested": "CONFIRMED"}),
    "date_out_of_range": _after("order_date", 10**12),
    "source_ts_huge": lambda t: (t.payload["source"].update(ts_ms=10**30), t.record())[1],
    "key_missing": _key_missing,
}


#: kinds the decoder accepts (a well-formed record) but no document can be made of
DECIDED_POISON = frozenset({"key_missing", "key_schemaless_nan"})


#: kinds refused only because the tests lower `limits.max_record_bytes` to 512 KiB
ONLY_OVER_TEST_LIMITS = frozenset({"value_too_large"})


def corpus(schema: str, order_id: int = CRAFTED_ID) -> dict[str, Record]:
    """Every crafted record for `<schema>.sales_order`, by kind."""
    return {
        kind: make(_Template(schema, order_id + n)) for n, (kind, make) in enumerate(MAKERS.items())
    }


def valid(schema: str, order_id: int = CRAFTED_ID) -> tuple[bytes, bytes]:
    """The template itself: a confirmation syncd would act on."""
    key, value = _Template(schema, order_id).record()
    assert key is not None and value is not None
    return key, value
