"""`syncd decode` and the JSON rendering shared with the daemon and `syncd preview`."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest

from syncd.changes import UNAVAILABLE, ChangeEvent, Op, RecordPosition
from syncd.cli import main
from syncd.debezium import record_to_json, value_to_json
from tests.unit.debezium_events import key_doc, payload, sales_order_update, source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"


def write_event(tmp_path: Path, record: object) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["decode", *argv])
    captured = capsys.readouterr()
    out = json.loads(captured.out) if captured.out.strip() else None
    return code, out, captured.err


def kafka_record(value, key=None, topic="erp.erp.sales_order", offset=42):
    return {"topic": topic, "partition": 0, "offset": offset, "key": key, "value": value}


def test_decodes_a_change_with_schemas(tmp_path, capsys):
    key, value = sales_order_update()
    record = kafka_record(json.loads(value), json.loads(key))
    code, out, err = run_cli(capsys, "--event", write_event(tmp_path, record))
    assert code == 0, err
    assert out["kind"] == "change"
    assert out["op"] == "u"
    assert out["table"] == "erp.sales_order"
    assert out["key"] == {"id": 7}
    assert out["before"]["status"] == "DRAFT"
    assert out["after"]["status"] == "CONFIRMED"
    assert out["after"]["total_amount"] == "12345.67"
    assert out["after"]["order_date"] == "2026-01-01"
    assert out["after"]["created_at"] == "2026-01-01T02:00:00+00:00"
    assert out["after"]["updated_at"] == "2026-01-01T02:00:00.123456"
    assert out["source_ts_ms"] == 1767225600000
    assert out["snapshot"] is False


def test_reads_stdin(monkeypatch, capsys):
    record = kafka_record(None, {"id": 7})
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(record)))
    code, out, _ = run_cli(capsys)
    assert code == 0
    assert out == {
        "kind": "tombstone",
        "topic": "erp.erp.sales_order",
        "partition": 0,
        "offset": 42,
        "key": {"id": 7},
    }


def test_unavailable_values_render_as_an_object(tmp_path, capsys):
    record = kafka_record(payload("u", after={"id": 7, "remark": "__debezium_unavailable_value"}))
    code, out, _ = run_cli(capsys, "--event", write_event(tmp_path, record))
    assert code == 0
    assert out["after"]["remark"] == {"unavailable": True}


def test_decimal_scale_option_for_schemaless_precise_decimals(tmp_path, capsys):
    record = kafka_record(payload("c", after={"id": 7, "total_amount": "7Sl5"}), {"id": 7})
    path = write_event(tmp_path, record)
    code, out, _ = run_cli(
        capsys, "--event", path, "--decimal-scale", "erp.sales_order.total_amount=2"
    )
    assert code == 0
    assert out["after"]["total_amount"] == "-12345.67"
    code, out, err = run_cli(
        capsys, "--event", path, "--decimal-column", "erp.sales_order.total_amount"
    )
    assert code == 2
    assert out is None
    assert err.startswith("syncd decode: erp.erp.sales_order[0]@42: after.total_amount: ")
    assert "--decimal-scale erp.sales_order.total_amount=N" in err


def test_heartbeat_and_transaction_kinds(tmp_path, capsys):
    beat = kafka_record({"ts_ms": 5}, {"serverName": "erp"}, topic="__debezium-heartbeat.erp")
    code, out, _ = run_cli(capsys, "--event", write_event(tmp_path, beat))
    assert (code, out["kind"], out["ts_ms"]) == (0, "heartbeat", 5)
    end = kafka_record(
        {
            "status": "END",
            "id": "771:1",
            "event_count": 1,
            "data_collections": [{"data_collection": "erp.sales_order", "event_count": 1}],
        },
        topic="erp.transaction",
    )
    code, out, _ = run_cli(capsys, "--event", write_event(tmp_path, end))
    assert code == 0
    assert out == {
        "kind": "transaction",
        "topic": "erp.transaction",
        "partition": 0,
        "offset": 42,
        "status": "END",
        "id": "771",
        "event_count": 1,
        "data_collections": [{"data_collection": "erp.sales_order", "event_count": 1}],
    }


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "syncd decode: "),
        ("[]", "expected an object {topic, partition, offset, key, value}"),
        ('{"topic": "t", "partition": 0}', "missing offset, key, value"),
        (
            '{"topic": 1, "partition": 0, "offset": 1, "key": null, "value": {}}',
            "topic must be a string",
        ),
    ],
)
def test_bad_input_files(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    code, out, err = run_cli(capsys, "--event", str(path))
    assert code == 2
    assert out is None
    assert needle in err
    assert err.count("\n") == 1  # one line


def test_undecodable_record_exit_code_and_message(tmp_path, capsys):
    record = kafka_record({"op": "x", "after": {"id": 1}, "source": source()}, key_doc(1), offset=9)
    code, out, err = run_cli(capsys, "--event", write_event(tmp_path, record))
    assert code == 2
    assert out is None
    assert err == (
        "syncd decode: erp.erp.sales_order[0]@9: unknown op 'x' "
        "(expected one of c, u, d, r, t, m)\n"
    )


def test_missing_file_and_bad_option(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--event", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read" in err
    record = write_event(tmp_path, kafka_record(None))
    code, _, err = run_cli(capsys, "--event", record, "--decimal-scale", "x=y")
    assert code == 2 and "--decimal-scale" in err


def test_every_golden_fixture_goes_through_the_cli(tmp_path, capsys):
    for path in sorted(FIXTURES.glob("*.jsonl")):
        line = path.read_text(encoding="utf-8").splitlines()[1]
        code, out, err = run_cli(capsys, "--event", write_event(tmp_path, json.loads(line)))
        assert code == 0, (path.name, err)
        assert out["kind"] in {"change", "tombstone", "heartbeat", "transaction"}


# --- rendering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (Decimal("12345.67"), "12345.67"),
        (Decimal("-12345.67"), "-12345.67"),
        (Decimal("1E+2"), "100"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("100.00"), "100.00"),
        (Decimal("NaN"), "NaN"),
        (date(2024, 3, 1), "2024-03-01"),
        (datetime(2024, 3, 1, 12, 34, 56, 789012), "2024-03-01T12:34:56.789012"),
        (datetime(2024, 3, 1, 2, 0, tzinfo=UTC), "2024-03-01T02:00:00+00:00"),
        (time(8, 30, 0, 500000), "08:30:00.500000"),
        (b"\xde\xad\xbe\xef", {"base64": "3q2+7w=="}),
        (UNAVAILABLE, {"unavailable": True}),
        ([Decimal("1.5"), None], ["1.5", None]),
        ({"a": True}, {"a": True}),
    ],
)
def test_value_rendering(value, rendered):
    assert value_to_json(value) == rendered


def test_record_rendering_has_no_floats_and_no_placeholder():
    event = ChangeEvent(
        position=RecordPosition("t", 1, 2),
        op=Op.UPDATE,
        table="erp.sales_order",
        key={"id": 1},
        before=None,
        after={"amount": Decimal("0.10"), "remark": UNAVAILABLE},
        source_ts_ms=3,
        snapshot=False,
        transaction_id="771",
        lsn=9,
    )
    text = json.dumps(record_to_json(event))
    assert '"amount": "0.10"' in text
    assert "__debezium" not in text
