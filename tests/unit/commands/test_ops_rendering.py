"""Human output of `syncd status` and the demo summary's verdict (pure)."""

from __future__ import annotations

from syncd.commands.status import (
    DeadLetterTopic,
    DocumentLine,
    PartitionLine,
    StatusReport,
    render_text,
)
from syncd.demo.generate import Progress, Summary


def _doc(i: int, state: str) -> DocumentLine:
    return DocumentLine(
        i,
        "sales_order",
        f'{{"id":{i}}}',
        "issue",
        0,
        f"S{i:025d}",
        state,
        3,
        "HTTP_503",
        "platform unavailable\nretry later",
        "2026-11-27T10:00:00+00:00",
        None,
    )


def test_status_text_shows_every_section() -> None:
    report = StatusReport(
        group="syncd",
        schema="syncd",
        stuck_after_seconds=300,
        counts={"ISSUED": 5, "DEAD": 1, "READY": 0},
        stuck=[_doc(7, "RETRY_WAIT")],
        parked=[_doc(9, "DEAD")],
        partitions=[PartitionLine("erp.erp.sales_order", 0, 10, 10, 12, 2, "replica-a", 4)],
        dead_letter=DeadLetterTopic("syncd.dead-letter", True, 3),
        warnings=["kafka: topic x does not exist (yet)"],
    )
    text = render_text(report)
    assert "Documents by state (6 total)" in text and "READY" not in text  # zero rows hidden
    assert "Stuck (not terminal, untouched for 300 s): 1" in text
    assert "[HTTP_503] platform unavailable retry later" in text  # one line per document
    assert "replica-a" in text and "syncd.dead-letter: 3 record(s)" in text
    assert "Notes:" in text and "Problems:" not in text
    assert report.to_json()["total"] == 6


def test_summary_fails_on_anything_missing_duplicated_or_unexpected() -> None:
    ok = Summary(orders=3, prefix="DEMO-1-", issued=3)
    assert ok.ok and "result: OK" in ok.render()
    for broken in (
        Summary(orders=1, prefix="p", missing={"DEMO-1-00001": "no invoice"}),
        Summary(orders=1, prefix="p", duplicates=["serial S1 issued 2 times"]),
        Summary(orders=1, prefix="p", unexpected={"DEMO-1-00001": "issued"}),
    ):
        assert not broken.ok
        assert "result: FAILED" in broken.render()
        assert broken.to_json()["ok"] is False


def test_progress_line_counts() -> None:
    p = Progress(created=4, issued=3, reversed=1, invalid=1, rejected=0, cancelled=2)
    line = p.line(10, 2.0)
    assert "created 4/10" in line and "reversed 1/2 cancelled" in line and "invalid 1" in line


def test_summary_without_the_platform_audit_cannot_pass() -> None:
    s = Summary(orders=1, prefix="p", issued=1, audit_error="GET http://x: ConnectError")
    assert not s.ok and "platform audit unavailable" in s.render()
