"""The metric names syncd exports -- the one list the dashboard and the alerts are checked against.

tests/chart/test_metric_refs.py scrapes syncd's health server (observability.metrics registry) and
fails if a name here is not served. syncd exports more than this (e.g. process_* and
python_*); add a name here before using it.
"""

from __future__ import annotations

from typing import Final

#: name as exposed (counters with their `_total`) -> Prometheus type.
EXPORTED: Final[dict[str, str]] = {
    "syncd_events_consumed_total": "counter",
    "syncd_documents_total": "counter",
    "syncd_issuer_requests_total": "counter",
    "syncd_issuer_request_duration_seconds": "histogram",
    "syncd_issuer_account_up": "gauge",
    "syncd_issuer_credit_remaining": "gauge",
    "syncd_writeback_duration_seconds": "histogram",
    "syncd_freshness_seconds": "histogram",
    "syncd_consumer_lag_messages": "gauge",
    "syncd_consumer_lag_seconds": "gauge",
    "syncd_last_event_timestamp_seconds": "gauge",
    "syncd_dead_letters_total": "counter",
    "syncd_inflight_documents": "gauge",
    "syncd_ledger_documents": "gauge",
    "syncd_ledger_stuck_documents": "gauge",
    "syncd_reconcile_exceptions": "gauge",
    "syncd_reconcile_last_success_timestamp_seconds": "gauge",
    "syncd_invoice_files": "gauge",
    "syncd_partitions_paused": "gauge",
    "syncd_offset_commit_timestamp_seconds": "gauge",
    "syncd_rebalances_total": "counter",
    "syncd_loop_heartbeat_timestamp_seconds": "gauge",
    "syncd_build_info": "gauge",
    "syncd_retries_total": "counter",
    "syncd_assigned_partitions": "gauge",
    "syncd_red_forms_pending": "gauge",
    "syncd_red_forms_next_deadline_timestamp_seconds": "gauge",
}

#: Series Prometheus itself attaches to every scrape target (not exported by syncd).
SCRAPE_SYNTHETIC: Final[frozenset[str]] = frozenset({"up"})


def series_names() -> frozenset[str]:
    """Every series name a query may use: histograms expand to _bucket/_sum/_count."""
    names: set[str] = set()
    for name, kind in EXPORTED.items():
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        else:
            names.add(name)
    return frozenset(names)


def base_name(series: str) -> str:
    """The exported metric a series name belongs to (histogram suffixes stripped)."""
    for suffix in ("_bucket", "_sum", "_count"):
        stem = series.removesuffix(suffix)
        if stem != series and EXPORTED.get(stem) == "histogram":
            return stem
    return series
