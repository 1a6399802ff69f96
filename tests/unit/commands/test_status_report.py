"""`syncd status` never looks healthy when it could not look (pure rendering), lists
INVALID documents and the partitions the daemon's rules pause; `check-config --live`
problems carry file:line like the static ones."""

from __future__ import annotations

from syncd.commands.check_config import located
from syncd.commands.status import (
    DocumentLine,
    PartitionLine,
    StatusReport,
    mark_paused,
    render_text,
)
from syncd.config.loader import key_lines, line_of
from tests.unit.config_helpers import DEMO

TOPIC = "erp.erp.sales_order"


def _doc(i: int, state: str) -> DocumentLine:
    return DocumentLine(
        i, "sales_order", f'{{"id":{i}}}', "issue", 0, f"S{i:025d}", state, 1,
        "VALIDATION", "buyer tax id invalid", "2026-11-27T10:00:00+00:00", None,
    )  # fmt: skip


def _report(**kwargs: object) -> StatusReport:
    return StatusReport(group="syncd", schema="syncd", stuck_after_seconds=300, **kwargs)  # type: ignore[arg-type]


def test_database_down_is_unknown_not_zero_and_comes_first() -> None:
    line = "database postgresql+psycopg://u@db/erp unreachable: Connection refused"
    report = _report(
        unreachable={"database": line},
        partitions=[PartitionLine(TOPIC, 0, None, 10, 12, 2, None, None)],
    )
    text = render_text(report)
    assert text.index("INCOMPLETE") < text.index("Documents by state")
    assert line in text
    assert "0 total" not in text and ": 0\n" not in text
    assert "Documents by state: UNKNOWN" in text
    assert "Dead / blocked (need an operator; `syncd retry --document ID`): UNKNOWN" in text
    data = report.to_json()
    assert data["total"] is None and data["ok"] is False and data["exit_code"] == 4
    assert data["partitions"][0]["open_documents"] is None


def test_kafka_down_leaves_the_partitions_unknown() -> None:
    report = _report(counts={"ISSUED": 1}, unreachable={"kafka": "Kafka b:9092 unreachable: x"})
    text = render_text(report)
    assert "UNKNOWN (Kafka was not read)" in text and "(none found)" not in text
    assert report.exit_code() == 5


def test_a_ledger_error_is_a_failure_not_a_healthy_report() -> None:
    report = _report(errors=['ledger: relation "syncd.documents" does not exist'])
    assert report.exit_code() == 7
    assert "INCOMPLETE" in render_text(report)


def test_invalid_documents_are_listed() -> None:
    report = _report(counts={"INVALID": 1}, invalid=[_doc(3, "INVALID")])
    text = render_text(report)
    assert "Invalid (the ERP data is wrong" in text and "[VALIDATION] buyer tax id" in text
    assert report.to_json()["invalid"][0]["id"] == 3
    assert report.exit_code() == 0


def test_paused_partitions_follow_the_daemons_rules() -> None:
    parts = [
        PartitionLine(TOPIC, 0, 5, 5, 9, 4, None, None, open_documents=0),  # nobody holds it
        PartitionLine(TOPIC, 1, 5, 5, 5, 0, None, None, open_documents=0),  # idle: fine
        PartitionLine(TOPIC, 2, 5, 5, 9, 4, "a", 1, open_documents=3),  # per-partition limit
        PartitionLine(TOPIC, 3, 5, 5, 5, 0, "a", 1, open_documents=1),
        PartitionLine(TOPIC, 4, 5, 5, 5, 0, "b", 1, open_documents=1),
    ]
    mark_paused(parts, max_in_flight=4, per_partition=3)
    assert "nobody consumes it" in parts[0].paused[0]
    assert parts[1].paused == []
    assert any("max_in_flight_per_partition (3)" in r for r in parts[2].paused)
    # replica a holds 4 open documents = max_in_flight: all its partitions pause
    assert any("replica a holds 4 open documents" in r for r in parts[3].paused)
    assert parts[4].paused == []
    report = _report(counts={"READY": 5}, partitions=parts)
    text = render_text(report)
    assert "Paused partitions: 3" in text
    assert [p["partition"] for p in report.to_json()["paused_partitions"]] == [0, 2, 3]


def _line_of_text(needle: str) -> int:
    for n, line in enumerate(DEMO.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith(needle):
            return n
    raise AssertionError(needle)


def test_live_problems_carry_file_and_line() -> None:
    lines = key_lines(DEMO)
    problem = (
        "documents.sales_order.lines.columns.quantity: column erp.sales_order_line.item_name "
        "is VARCHAR(100) (text); expected number"
    )
    assert located(str(DEMO), problem, lines) == (
        f"{DEMO}:{_line_of_text('quantity: quantity')}: {problem}"
    )
    # table names with dots in decimal_scales keys
    scale = "decimal_scales.erp.sales_order_line.quantity: declared scale 8, but ..."
    assert located("c.yaml", scale, lines) == f"c.yaml:{_line_of_text('quantity: 8')}: {scale}"
    # a key the file does not spell out: the nearest one it does
    topic = "documents.sales_order.topic: topic erp.erp.sales_order does not exist"
    assert located("c.yaml", topic, lines) == (f"c.yaml:{_line_of_text('sales_order:')}: {topic}")
    assert located("c.yaml", "no path here: x", lines) == "c.yaml: no path here: x"


def test_line_of_needs_a_key_boundary() -> None:
    assert line_of("kafka.group_id_x", {"kafka.group_id": 3, "kafka": 1}) == 1
    assert line_of("documents.a[2].b", {"documents.a": 7}) == 7
    assert line_of("nothing", {}) is None


def _history_row(i: int, kind: str, revision: int, state: str, number: str | None):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from syncd.identity import DocumentIdentity, DocumentKind
    from syncd.ledger.models import DocumentRow
    from syncd.lifecycle import DocumentState

    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    ident = DocumentIdentity.stored(
        "sales_order", "erp.sales_order", '{"id":42}', DocumentKind(kind), revision
    )
    return DocumentRow(
        i, ident, DocumentState(state), f"S{i:025d}", None, None, 0, 1, None, None, None,
        number, now if number else None, None, None, None, None, None, None, None, None, None,
        now, now,
    )  # fmt: skip


def test_document_history_groups_revisions_with_their_invoices() -> None:
    from syncd.commands.status import history_of, render_history

    rows = [
        _history_row(1, "issue", 0, "REVERSED", "26310000000000000001"),
        _history_row(2, "reversal", 0, "REVERSED", "26310000000000000002"),
        _history_row(3, "issue", 1, "ISSUED", "26310000000000000003"),
    ]
    history = history_of(rows)
    assert [r.revision for r in history.revisions] == [0, 1]
    assert history.revisions[0].blue is not None and history.revisions[0].blue.id == 1
    assert history.revisions[0].red is not None and history.revisions[0].red.id == 2
    assert history.revisions[1].red is None
    assert history.current_invoice_no == "26310000000000000003"
    data = history.to_json()
    assert data["revisions"][1]["blue"]["invoice_no"] == "26310000000000000003"
    text = render_history(history)
    assert "2 revision(s), current invoice 26310000000000000003" in text
    assert text.count("blue") == 2 and text.count("red") == 1
    with_return = history_of(rows, {3: [_history_row(9, "reversal", 0, "REVERSED", "2631")]})
    assert [r.id for r in with_return.revisions[1].returns] == [9]
    assert "return" in render_history(with_return)
    pending = history_of([_history_row(4, "issue", 0, "READY", None)])
    assert "no invoice yet" in render_history(pending)
