"""Every metric the dashboard and the alerts query is one syncd exports (expected_metrics.py).

The dashboard check needs no tools; the alert check renders the chart with helm; the list
itself is checked against what syncd's metrics registry serves over HTTP.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.chart.conftest import CHART, DEFAULT_VALUES, Render, find
from tests.chart.expected_metrics import EXPORTED, SCRAPE_SYNTHETIC, base_name, series_names
from tests.chart.promql import dashboard_queries, grafana_to_promql, metric_names, rule_queries

DASHBOARD = CHART / "dashboards" / "syncd.json"


def _unknown(queries: list[tuple[str, str]]) -> dict[str, set[str]]:
    known = series_names() | SCRAPE_SYNTHETIC
    return {
        where: names - known for where, expr in queries if (names := metric_names(expr)) - known
    }


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (topic) (rate(syncd_documents_total{outcome="x",job=~"a|b"}[5m])) '
        "/ on (topic) group_left histogram_quantile(0.9, sum by (le) "
        "(rate(syncd_freshness_seconds_bucket[5m] offset 1h))) and absent(up) "
        "unless time() - syncd_loop_heartbeat_timestamp_seconds > 60"
    )
    assert metric_names(expr) == {
        "syncd_documents_total",
        "syncd_freshness_seconds_bucket",
        "up",
        "syncd_loop_heartbeat_timestamp_seconds",
    }
    assert metric_names(
        grafana_to_promql(
            'sum(rate(syncd_retries_total{namespace=~"$namespace",job=~"${job}"}[$__rate_interval]))'
        )
    ) == {"syncd_retries_total"}
    assert base_name("syncd_freshness_seconds_bucket") == "syncd_freshness_seconds"
    assert base_name("syncd_documents_total") == "syncd_documents_total"


def test_dashboard_queries_only_exported_metrics() -> None:
    queries = [(where, grafana_to_promql(expr)) for where, expr in dashboard_queries(DASHBOARD)]
    assert len(queries) > 20
    assert _unknown(queries) == {}


def test_dashboard_covers_the_required_views() -> None:
    used = {
        base_name(n)
        for _, e in dashboard_queries(DASHBOARD)
        for n in metric_names(grafana_to_promql(e))
    }
    # overview, invoice API, write-back, dead letters, ledger, rebalances
    assert used >= {
        "syncd_documents_total",
        "syncd_freshness_seconds",
        "syncd_consumer_lag_messages",
        "syncd_consumer_lag_seconds",
        "syncd_issuer_requests_total",
        "syncd_issuer_request_duration_seconds",
        "syncd_retries_total",
        "syncd_writeback_duration_seconds",
        "syncd_dead_letters_total",
        "syncd_ledger_documents",
        "syncd_rebalances_total",
        # why a partition is stuck: paused, offsets not committed, documents not moving
        "syncd_partitions_paused",
        "syncd_offset_commit_timestamp_seconds",
        "syncd_ledger_stuck_documents",
    }
    assert used <= set(EXPORTED)


def _panels() -> dict[str, dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for panel in dashboard["panels"]:
        out[panel["title"]] = panel
        for inner in panel.get("panels", []):
            out[inner["title"]] = inner
    return out


def test_max_lag_panel_takes_the_max() -> None:
    """A stat titled "Max lag" must not add the partitions' lags up."""
    for title in ("Max lag (messages)", "Max lag (seconds)"):
        (target,) = _panels()[title]["targets"]
        expr = target["expr"].replace(" ", "")
        assert expr.startswith("max("), (title, expr)
        assert "sum(" not in expr, (title, expr)


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for title, panel in _panels().items():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = title
        assert grid["x"] + grid["w"] <= 24, title
    ids = [panel["id"] for panel in _panels().values()]
    assert len(ids) == len(set(ids))


@pytest.mark.chart
def test_alerts_query_only_exported_metrics(render: Render) -> None:
    rule = find(render(DEFAULT_VALUES, ("prometheusRule.enabled=true",)), "PrometheusRule")
    queries = list(rule_queries(rule["spec"]["groups"]))
    assert len(queries) >= 10
    assert _unknown(queries) == {}


def test_expected_metrics_are_what_the_daemon_serves() -> None:
    """expected_metrics.py against syncd's real metrics, scraped over HTTP from its health
    server (the one serving /metrics, /healthz and /readyz in the pod) after one of each kind
    of event. The probe paths the chart uses must be served there too. Scraping a complete
    daemon on the local stack is the integration suite's job."""
    import httpx
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from syncd.observability.health import HealthServer
    from syncd.observability.metrics import DocumentOutcome, Metrics

    metrics = Metrics(CollectorRegistry())
    metrics.heartbeat()
    metrics.events_consumed.labels(topic="erp.erp.sales_order").inc()
    metrics.document_settled("sales_order", DocumentOutcome.ISSUED)
    metrics.issuer_request("issue", 200, 0.1)
    metrics.retries.labels(operation="issue").inc()
    metrics.credit_remaining("default", Decimal("5000.00"))
    with metrics.time_writeback():
        pass
    metrics.observe_freshness(0, 1.0)
    metrics.set_partition_position(
        "erp.erp.sales_order", 0, lag_messages=1, lag_seconds=1.0, last_event_ts_ms=1000
    )
    metrics.offsets_committed("erp.erp.sales_order", 0)
    metrics.dead_letters.labels(topic="erp.erp.sales_order", reason="undecodable").inc()
    metrics.rebalances.labels(event="assigned").inc()
    metrics.set_reconcile({"missing_in_ledger": 0}, 1.0)
    metrics.invoice_files.labels(state="failed").set(0)

    server = HealthServer(metrics.registry, host="127.0.0.1", port=0)
    server.start()
    try:
        server.beat()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            scrape = client.get("/metrics")
            probes = {path: client.get(path).status_code for path in ("/healthz", "/readyz")}
    finally:
        server.stop()

    assert scrape.status_code == 200
    families = text_string_to_metric_families(scrape.text)
    served = {sample.name for family in families for sample in family.samples}
    missing = series_names() - served
    assert not missing, f"dashboard/alerts rely on metrics syncd does not serve: {sorted(missing)}"
    assert probes["/healthz"] == 200
    assert probes["/readyz"] in (200, 503)  # served; readiness depends on registered checks
