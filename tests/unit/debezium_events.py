"""Hand-written Debezium 3.x Postgres records, shaped like the connector's real output.

The envelope, source block and transaction block schemas mirror what the
3.6.1 connector wrote in tests/fixtures/debezium (see capture.py).
"""

from __future__ import annotations

import json
from typing import Any

from syncd.changes import RecordPosition

TOPIC = "erp.erp.sales_order"
POSITION = RecordPosition(TOPIC, 0, 42)

SOURCE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,"
                "last,false,incremental"
            },
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
        {"type": "string", "optional": True, "field": "origin"},
        {"type": "int64", "optional": True, "field": "origin_lsn"},
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
}

TRANSACTION_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "id"},
        {"type": "int64", "optional": False, "field": "total_order"},
        {"type": "int64", "optional": False, "field": "data_collection_order"},
    ],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}


def source(**overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "version": "3.6.1.Final",
        "connector": "postgresql",
        "name": "erp",
        "ts_ms": 1767225600000,
        "snapshot": "false",
        "db": "erp",
        "sequence": '["24023928","24023984"]',
        "ts_us": 1767225600000123,
        "ts_ns": 1767225600000123000,
        "schema": "erp",
        "table": "sales_order",
        "txId": 771,
        "lsn": 24023984,
        "xmin": None,
        "origin": None,
        "origin_lsn": None,
    }
    block.update(overrides)
    return block


def field(
    name: str, type_: str, semantic: str | None = None, optional: bool = True, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_, "optional": optional}
    if semantic is not None:
        schema["name"] = semantic
        schema["version"] = 1
    schema.update(extra)
    schema["field"] = name
    return schema


def decimal_field(name: str, scale: int, precision: int | None = 18) -> dict[str, Any]:
    parameters = {"scale": str(scale)}
    if precision is not None:
        parameters["connect.decimal.precision"] = str(precision)
    return field(name, "bytes", "org.apache.kafka.connect.data.Decimal", parameters=parameters)


def row_schema(fields: list[dict[str, Any]], name: str, table: str = TOPIC) -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": fields,
        "optional": True,
        "name": f"{table}.Value",
        "field": name,
    }


def envelope_schema(fields: list[dict[str, Any]], table: str = TOPIC) -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": [
            row_schema(fields, "before", table),
            row_schema(fields, "after", table),
            SOURCE_SCHEMA,
            TRANSACTION_SCHEMA,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": f"{table}.Envelope",
        "version": 2,
    }


def payload(
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    src: dict[str, Any] | None = None,
    transaction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": src if src is not None else source(),
        "transaction": transaction,
        "op": op,
        "ts_ms": 1767225600500,
        "ts_us": 1767225600500321,
        "ts_ns": 1767225600500321000,
    }


def with_schema(schema: dict[str, Any], body: Any) -> dict[str, Any]:
    return {"schema": schema, "payload": body}


KEY_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [{"type": "int64", "optional": False, "field": "id"}],
    "optional": False,
    "name": f"{TOPIC}.Key",
}


def key_doc(order_id: int = 7, schemas: bool = True) -> dict[str, Any]:
    return with_schema(KEY_SCHEMA, {"id": order_id}) if schemas else {"id": order_id}


def wire(doc: Any) -> bytes | None:
    if doc is None:
        return None
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- a realistic erp.sales_order update (schemas on, precise decimals) ---------------------

SALES_ORDER_FIELDS: list[dict[str, Any]] = [
    field("id", "int64", optional=False),
    field("order_no", "string", optional=False),
    field("customer_id", "int64"),
    field(
        "status",
        "string",
        "io.debezium.data.Enum",
        optional=False,
        parameters={"allowed": "DRAFT,CONFIRMED,SHIPPED,CANCELLED,CLOSED"},
        default="DRAFT",
    ),
    field("order_date", "int32", "io.debezium.time.Date", optional=False),
    field("currency", "string", optional=False, default="CNY"),
    field("invoice_type", "string", optional=False, default="ORDINARY"),
    field("price_includes_tax", "boolean", optional=False, default=False),
    field("buyer_name", "string", optional=False),
    field("buyer_tax_id", "string"),
    field("buyer_address", "string"),
    field("buyer_phone", "string"),
    field("buyer_bank_name", "string"),
    field("buyer_bank_account", "string"),
    field("buyer_email", "string"),
    decimal_field("total_amount", 2),
    field("remark", "string"),
    field("cancel_reason", "string"),
    field("created_at", "string", "io.debezium.time.ZonedTimestamp", optional=False),
    field("updated_at", "int64", "io.debezium.time.MicroTimestamp", optional=False),
    field("invoice_no", "string"),
    field("invoice_status", "string"),
    field("invoice_error", "string"),
    field("invoiced_at", "string", "io.debezium.time.ZonedTimestamp"),
    field("invoice_url", "string"),
    field("red_invoice_no", "string"),
]


def sales_order_row(status: str) -> dict[str, Any]:
    return {
        "id": 7,
        "order_no": "SO-2026-000007",
        "customer_id": 3,
        "status": status,
        "order_date": 20454,
        "currency": "CNY",
        "invoice_type": "SPECIAL",
        "price_includes_tax": False,
        "buyer_name": "上海示例贸易有限公司",
        "buyer_tax_id": "91310000MA1FL8XQ3C",
        "buyer_address": "上海市浦东新区世纪大道100号",
        "buyer_phone": "021-12345678",
        "buyer_bank_name": "中国工商银行上海分行",
        "buyer_bank_account": "1001234567890123456",
        "buyer_email": "ap@example.cn",
        "total_amount": "EtaH",
        "remark": None,
        "cancel_reason": None,
        "created_at": "2026-01-01T02:00:00.000000Z",
        "updated_at": 1767232800123456,
        "invoice_no": None,
        "invoice_status": None,
        "invoice_error": None,
        "invoiced_at": None,
        "invoice_url": None,
        "red_invoice_no": None,
    }


def sales_order_update() -> tuple[bytes, bytes]:
    """Key and value bytes of a DRAFT -> CONFIRMED update, as JsonConverter writes them."""
    value = with_schema(
        envelope_schema(SALES_ORDER_FIELDS),
        payload(
            "u",
            before=sales_order_row("DRAFT"),
            after=sales_order_row("CONFIRMED"),
            transaction={"id": "771:24023984", "total_order": 1, "data_collection_order": 1},
        ),
    )
    key = wire(key_doc())
    encoded = wire(value)
    assert key is not None and encoded is not None
    return key, encoded
