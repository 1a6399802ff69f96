"""The periodic ledger report sets the ledger gauges, incl. syncd_ledger_stuck_documents.

The query itself (`count_stuck_documents`: non-terminal rows whose updated_at is older than
the threshold, by the database clock) needs PostgreSQL; this checks the wiring: the
threshold comes from `pipeline.stuck_after_seconds`, and a database outage leaves the gauges
alone and reports the outage.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from syncd.config.settings import PipelineSettings
from syncd.ledger import reconcile as ledger_reconcile
from syncd.ledger import repository
from syncd.lifecycle import DocumentState
from syncd.observability.metrics import Metrics
from syncd.pipeline import loop


def _pipeline(metrics: Metrics, stuck_after: float, engine: Any) -> Any:
    outages: list[str] = []
    return SimpleNamespace(
        _engine=engine,
        _metrics=metrics,
        _config=SimpleNamespace(pipeline=PipelineSettings(stuck_after_seconds=stuck_after)),
        _partitions=SimpleNamespace(database_unreachable=lambda: outages.append("db")),
        outages=outages,
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_report_sets_counts_and_stuck_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[timedelta] = []

    def count_stuck(conn: object, older_than: timedelta) -> int:
        asked.append(older_than)
        return 4

    monkeypatch.setattr(repository, "count_by_state", lambda conn: {DocumentState.RETRY_WAIT: 7})
    monkeypatch.setattr(repository, "count_stuck_documents", count_stuck)
    monkeypatch.setattr(ledger_reconcile, "latest_run", lambda conn: None)
    metrics = Metrics(CollectorRegistry())
    engine = SimpleNamespace(connect=lambda: nullcontext(object()))
    pipeline = _pipeline(metrics, 600.0, engine)

    loop.Pipeline._report_ledger(pipeline)

    assert asked == [timedelta(seconds=600)]
    assert _value(metrics, "syncd_ledger_stuck_documents") == 4
    assert _value(metrics, "syncd_ledger_documents", state="RETRY_WAIT") == 7
    assert pipeline.outages == []
    # reconcile never ran: no timestamp, so an alert on its absence fires
    assert _value(metrics, "syncd_reconcile_last_success_timestamp_seconds") == 0


def test_report_exports_the_newest_reconcile_run(monkeypatch: pytest.MonkeyPatch) -> None:
    finished = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    run = ledger_reconcile.ReconcileRun(
        id=3,
        started_at=finished,
        finished_at=finished,
        period_from=finished,
        period_to=finished,
        document_type=None,
        clean=False,
        exceptions=2,
        by_class={"missing_in_ledger": 2, "duplicate_blue": 0},
        documents=10,
    )
    monkeypatch.setattr(repository, "count_by_state", lambda conn: {})
    monkeypatch.setattr(repository, "count_stuck_documents", lambda conn, older_than: 0)
    monkeypatch.setattr(ledger_reconcile, "latest_run", lambda conn: run)
    metrics = Metrics(CollectorRegistry())
    pipeline = _pipeline(metrics, 600.0, SimpleNamespace(connect=lambda: nullcontext(object())))

    loop.Pipeline._report_ledger(pipeline)

    assert _value(metrics, "syncd_reconcile_exceptions", **{"class": "missing_in_ledger"}) == 2
    assert _value(metrics, "syncd_reconcile_exceptions", **{"class": "duplicate_blue"}) == 0
    assert _value(metrics, "syncd_reconcile_last_success_timestamp_seconds") == finished.timestamp()


def test_report_keeps_gauges_while_the_database_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    metrics = Metrics(CollectorRegistry())
    metrics.set_stuck_documents(2)
    pipeline = _pipeline(metrics, 900.0, SimpleNamespace(connect=down))

    loop.Pipeline._report_ledger(pipeline)

    assert pipeline.outages == ["db"]
    assert _value(metrics, "syncd_ledger_stuck_documents") == 2


def test_stuck_after_defaults_above_the_backoff_cap() -> None:
    settings = PipelineSettings()
    assert settings.stuck_after_seconds == 900
    assert settings.stuck_after_seconds > settings.retry.backoff_max_seconds
    with pytest.raises(ValueError, match="greater than 0"):
        PipelineSettings(stuck_after_seconds=0)
