"""Shared helpers for the config / rules / mapping tests (plain values, no I/O)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.config import SyncdConfig, load_config
from syncd.debezium import DecodeOptions, decode_record
from syncd.pipeline.classify import Classified, Classifier
from syncd.rules.decide import Decision, decide

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"
EXAMPLE = ROOT / "config" / "example.yaml"
DATA = Path(__file__).resolve().parent / "data"
BUYER_TAX_ID = "91110108MA01ABCD2H"


def demo_config(*, reissues: bool = False) -> SyncdConfig:
    """config/demo.yaml; without its `reissues` condition unless asked for, so that the
    rules' tests see the plain issue/reverse decisions (re-issues have their own tests)."""
    config = load_config(DEMO)
    if not reissues:
        for doc in config.documents.values():
            doc.reissues = None
    return config


def classify_and_decide(key: bytes, value: bytes) -> tuple[Classified, ChangeEvent, Decision]:
    """The demo classifier's verdict on one erp.sales_order record, the record decoded in
    full, and `decide` on that: what the classifier's decoding shortcuts must agree with."""
    config = demo_config()
    position = RecordPosition("erp.erp.sales_order", 0, 42)
    classified = Classifier(config).classify(position, key, value)
    full = decode_record(position, key, value, DecodeOptions())
    assert isinstance(full, ChangeEvent)
    return classified, full, decide(full, config.documents["sales_order"])


def order_row(**changes: Any) -> dict[str, Any]:
    """A demo `erp.sales_order` row as the decoder yields it."""
    row: dict[str, Any] = {
        "id": 42,
        "order_no": "SO-2026-000042",
        "customer_id": None,
        "status": "DRAFT",
        "order_date": date(2026, 11, 27),
        "currency": "CNY",
        "invoice_type": "ORDINARY",
        "price_includes_tax": False,
        "buyer_name": "Example Buyer Ltd.",
        "buyer_tax_id": BUYER_TAX_ID,
        "buyer_address": None,
        "buyer_phone": None,
        "buyer_bank_name": None,
        "buyer_bank_account": None,
        "buyer_email": "ap@example.com",
        "total_amount": Decimal("180.00"),
        "remark": None,
        "cancel_reason": None,
        "invoice_no": None,
        "invoice_status": None,
        "invoice_error": None,
        "invoiced_at": None,
        "invoice_url": None,
        "red_invoice_no": None,
    }
    row.update(changes)
    return row


def line_row(**changes: Any) -> dict[str, Any]:
    """A demo `erp.sales_order_line` row as SQLAlchemy/psycopg returns it."""
    row: dict[str, Any] = {
        "id": 1,
        "order_id": 42,
        "line_no": 1,
        "item_name": "Consulting service",
        "tax_code": "3040201000000000000",
        "spec": None,
        "unit": "hour",
        "quantity": Decimal("2.00000000"),
        "unit_price": Decimal("82.57000000"),
        "tax_rate": Decimal("0.0900"),
        "discount_amount": Decimal("0.00"),
        "amount": Decimal("165.14"),
    }
    row.update(changes)
    return row


def event(
    op: Op | str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    table: str = "erp.sales_order",
    snapshot: bool | None = None,
) -> ChangeEvent:
    op = Op(op)
    row = after if after is not None else before
    key = {"id": row["id"]} if row is not None and "id" in row else None
    return ChangeEvent(
        position=RecordPosition("erp." + table, 0, 7),
        op=op,
        table=table,
        key=key,
        before=before,
        after=after,
        source_ts_ms=1_795_821_553_219,
        snapshot=op is Op.READ if snapshot is None else snapshot,
    )


def update(before: dict[str, Any], **after_changes: Any) -> ChangeEvent:
    after = dict(before)
    after.update(after_changes)
    return event("u", before, after)
