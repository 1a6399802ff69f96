"""The stack really captures ERP changes: SQL in, Debezium change events out of Kafka."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

from sqlalchemy import Engine, text

from tests.integration.stack import Stack, payload, read_topic, unique

TOPIC = "erp.erp.sales_order"


def _decimal(encoded: str, scale: int) -> Decimal:
    unscaled = int.from_bytes(base64.b64decode(encoded), "big", signed=True)
    return Decimal(unscaled).scaleb(-scale)


def test_insert_and_update_of_sales_order_arrive_as_change_events(stack: Stack, erp_engine: Engine):
    order_no = unique("SMOKE")
    with erp_engine.begin() as conn:
        order_id = conn.execute(
            text(
                "INSERT INTO erp.sales_order (order_no, buyer_name, total_amount, status) "
                "VALUES (:no, 'Smoke Buyer Ltd.', 12345.67, 'DRAFT') RETURNING id"
            ),
            {"no": order_no},
        ).scalar_one()
    with erp_engine.begin() as conn:
        conn.execute(
            text("UPDATE erp.sales_order SET status = 'CONFIRMED' WHERE id = :id"), {"id": order_id}
        )

    def ours(key: bytes | None, value: bytes | None) -> bool:
        return key is not None and payload(key) == {"id": order_id} and value is not None

    records = read_topic(stack.bootstrap, TOPIC, ours, count=2, timeout=60)
    create, update = (json.loads(v or b"null") for _, v, _ in records)

    key = json.loads(records[0][0] or b"null")
    assert key["payload"] == {"id": order_id}
    assert key["schema"]["name"] == "erp.erp.sales_order.Key"
    # bigserial key: int64, with the sequence default reported as 0 by the connector
    assert [(f["field"], f["type"], f["optional"]) for f in key["schema"]["fields"]] == [
        ("id", "int64", False)
    ]
    assert create["payload"]["op"] == "c"
    assert create["payload"]["before"] is None
    after = create["payload"]["after"]
    assert after["order_no"] == order_no
    assert after["status"] == "DRAFT"
    assert after["invoice_no"] is None
    # numeric(18,2) arrives as a precise Connect Decimal: base64 unscaled bytes + scale in schema
    after_schema = next(f for f in create["schema"]["fields"] if f["field"] == "after")
    total_schema = next(f for f in after_schema["fields"] if f["field"] == "total_amount")
    assert total_schema["name"] == "org.apache.kafka.connect.data.Decimal"
    assert total_schema["parameters"]["scale"] == "2"
    assert _decimal(after["total_amount"], 2) == Decimal("12345.67")

    source = create["payload"]["source"]
    assert source["connector"] == "postgresql"
    assert source["db"] == "erp"
    assert (source["schema"], source["table"]) == ("erp", "sales_order")
    # streaming (not snapshot) events: Debezium 3.6 leaves source.snapshot null here
    assert source["snapshot"] in (None, "false")
    assert isinstance(source["lsn"], int) and isinstance(source["txId"], int)

    assert update["payload"]["op"] == "u"
    # REPLICA IDENTITY FULL: the before image is complete, so a status transition is visible
    assert update["payload"]["before"]["status"] == "DRAFT"
    assert update["payload"]["after"]["status"] == "CONFIRMED"
    assert update["payload"]["source"]["lsn"] > source["lsn"]
    # transaction metadata is on
    assert update["payload"]["transaction"]["id"]


def test_delete_emits_delete_then_tombstone(stack: Stack, erp_engine: Engine):
    with erp_engine.begin() as conn:
        order_id = conn.execute(
            text(
                "INSERT INTO erp.sales_order (order_no, buyer_name) VALUES (:no, 'Gone Ltd.') "
                "RETURNING id"
            ),
            {"no": unique("SMOKE-DEL")},
        ).scalar_one()
    with erp_engine.begin() as conn:
        conn.execute(text("DELETE FROM erp.sales_order WHERE id = :id"), {"id": order_id})

    def ours(key: bytes | None, value: bytes | None) -> bool:
        return key is not None and payload(key) == {"id": order_id}

    records = read_topic(stack.bootstrap, TOPIC, ours, count=3, timeout=60)
    ops = [payload(v)["op"] if v is not None else None for _, v, _ in records]
    assert ops == ["c", "d", None]
    delete = payload(records[1][1])
    assert delete["after"] is None
    assert delete["before"]["id"] == order_id
