"""Plain-JSON rendering of decoded records (`syncd decode`, `syncd preview`, logs, the DLQ).

Choices, so the output is exact and unambiguous:
- decimals are strings in plain notation, never floats: `"12345.67"`, `"0.00000001"`;
- dates, times and timestamps are ISO 8601 (`date.isoformat()` etc.; zoned values keep
  their offset, naive Debezium timestamps stay naive);
- bytes are `{"base64": "..."}` so they cannot be mistaken for text;
- a value Debezium did not send (unchanged TOASTed column) is `{"unavailable": true}`,
  never the `__debezium_unavailable_value` placeholder text.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from syncd.changes import (
    ChangeEvent,
    ColumnValue,
    DecodedRecord,
    Heartbeat,
    ProbedChange,
    QuietUpdate,
    Row,
    Tombstone,
    TransactionMarker,
    _Unavailable,
)

UNAVAILABLE_JSON = {"unavailable": True}


def value_to_json(value: ColumnValue) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, _Unavailable):
        return dict(UNAVAILABLE_JSON)
    if isinstance(value, list):
        return [value_to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: value_to_json(item) for key, item in value.items()}
    raise TypeError(f"not a column value: {type(value).__name__}")


def row_to_json(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: value_to_json(value) for name, value in row.items()}


def record_to_json(record: DecodedRecord) -> dict[str, Any]:
    """One decoded record as a JSON-serialisable dict with a `kind` discriminator."""
    where = {
        "topic": record.position.topic,
        "partition": record.position.partition,
        "offset": record.position.offset,
    }
    if isinstance(record, ChangeEvent):
        return {
            "kind": "change",
            **where,
            "op": record.op.value,
            "table": record.table,
            "key": row_to_json(record.key),
            "before": row_to_json(record.before),
            "after": row_to_json(record.after),
            "source_ts_ms": record.source_ts_ms,
            "snapshot": record.snapshot,
            "transaction_id": record.transaction_id,
            "lsn": record.lsn,
        }
    if isinstance(record, ProbedChange):
        return {**record_to_json(record.event), "kind": "probed_change"}
    if isinstance(record, QuietUpdate):
        return {
            "kind": "quiet_update",
            **where,
            "table": record.table,
            "changed": sorted(record.changed),
            "source_ts_ms": record.source_ts_ms,
        }
    if isinstance(record, Tombstone):
        return {"kind": "tombstone", **where, "key": row_to_json(record.key)}
    if isinstance(record, Heartbeat):
        return {"kind": "heartbeat", **where, "ts_ms": record.ts_ms}
    if isinstance(record, TransactionMarker):
        return {
            "kind": "transaction",
            **where,
            "status": record.status,
            "id": record.transaction_id,
            "event_count": record.event_count,
            "data_collections": [
                {"data_collection": name, "event_count": count}
                for name, count in record.data_collections
            ],
        }
    raise TypeError(f"not a decoded record: {type(record).__name__}")
