import re
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from syncd import __version__
from syncd.lifecycle import DocumentState
from syncd.observability.metrics import DocumentOutcome, Metrics, status_class


@pytest.fixture
def m() -> Metrics:
    return Metrics(CollectorRegistry())


def families(m: Metrics) -> dict[str, set[str]]:
    """metric family name -> label names used by its samples"""
    out: dict[str, set[str]] = {}
    for fam in m.registry.collect():
        labels: set[str] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
        out[fam.name] = labels
    return out


REQUIRED = {
    "syncd_events_consumed": {"topic"},
    "syncd_documents": {"document", "outcome"},
    "syncd_issuer_requests": {"operation", "status_class", "account"},
    "syncd_issuer_request_duration_seconds": {"operation", "account"},
    "syncd_issuer_credit_remaining": {"account"},
    "syncd_writeback_duration_seconds": set(),
    "syncd_freshness_seconds": set(),
    "syncd_consumer_lag_messages": {"topic", "partition"},
    "syncd_last_event_timestamp_seconds": {"topic", "partition"},
    "syncd_dead_letters": {"topic", "reason"},
    "syncd_inflight_documents": set(),
    "syncd_ledger_documents": {"state"},
    "syncd_rebalances": {"event"},
    "syncd_loop_heartbeat_timestamp_seconds": set(),
    "syncd_build": {"version"},
    "syncd_assigned_partitions": set(),
    "syncd_retries": {"operation"},
    "syncd_offset_commit_timestamp_seconds": {"topic", "partition"},
    "syncd_consumer_lag_seconds": {"topic", "partition"},
    "syncd_partitions_paused": set(),
}


def exercise(m: Metrics) -> None:
    m.events_consumed.labels(topic="erp.public.sales_order").inc()
    m.document_settled("sales_invoice", DocumentOutcome.ISSUED)
    m.issuer_request("submit", 201, 0.12)
    m.credit_remaining("default", Decimal("5000.00"))
    with m.time_writeback():
        pass
    m.observe_freshness(1_700_000_000_000, 1_700_000_002.5)
    m.set_partition_position(
        "erp.public.sales_order",
        0,
        lag_messages=5,
        lag_seconds=1.5,
        last_event_ts_ms=1_700_000_000_000,
    )
    m.offsets_committed("erp.public.sales_order", 0, now=1_700_000_003.0)
    m.dead_letters.labels(topic="erp.public.sales_order", reason="undecodable").inc()
    m.inflight_documents.set(3)
    m.rebalances.labels(event="assign").inc()
    m.heartbeat(now=1_700_000_004.0)
    m.assigned_partitions.set(2)
    m.retries.labels(operation="submit").inc()
    m.partitions_paused.set(0)


def test_required_names_and_label_sets(m: Metrics) -> None:
    exercise(m)
    got = families(m)
    for name, labels in REQUIRED.items():
        assert name in got, name
        assert got[name] == labels, name


def test_exposition_names(m: Metrics) -> None:
    exercise(m)
    text = m.exposition()[0].decode()
    for line in (
        'syncd_events_consumed_total{topic="erp.public.sales_order"} 1.0',
        'syncd_documents_total{document="sales_invoice",outcome="issued"} 1.0',
        'syncd_issuer_requests_total{account="default",operation="submit",status_class="2xx"} 1.0',
        f'syncd_build_info{{version="{__version__}"}} 1.0',
        'syncd_consumer_lag_messages{partition="0",topic="erp.public.sales_order"} 5.0',
        "syncd_loop_heartbeat_timestamp_seconds 1.700000004e+09",
        'syncd_freshness_seconds_bucket{le="2.5"} 1.0',
    ):
        assert line in text, line
    assert 'syncd_freshness_seconds_bucket{le="3600.0"}' in text
    assert (
        'syncd_issuer_request_duration_seconds_bucket{account="default",le="120.0",operation="submit"}'
        in text
    )


def test_all_names_are_prefixed_and_units_are_base(m: Metrics) -> None:
    exercise(m)
    for name in families(m):
        if name.startswith(("process_", "python_")):
            continue  # the client library's collectors (test_process_and_python_metrics)
        assert name.startswith("syncd_")
        assert not re.search(r"_(ms|milliseconds|minutes)$", name)


def test_process_and_python_metrics(m: Metrics) -> None:
    """A custom registry starts empty: Metrics adds the process, platform and GC collectors."""
    text = m.exposition()[0].decode()
    for name in (
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "python_info",
        "python_gc_collections_total",
    ):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name


def test_no_created_series(m: Metrics) -> None:
    exercise(m)
    text = m.exposition()[0].decode()
    assert "syncd_documents_total{" in text
    assert "_created" not in text


def test_stuck_documents_gauge(m: Metrics) -> None:
    m.set_stuck_documents(3)
    assert "syncd_ledger_stuck_documents 3.0" in m.exposition()[0].decode()
    m.set_stuck_documents(0)
    assert "syncd_ledger_stuck_documents 0.0" in m.exposition()[0].decode()


def test_ledger_states_start_at_zero_and_update(m: Metrics) -> None:
    text = m.exposition()[0].decode()
    for state in DocumentState:
        assert f'syncd_ledger_documents{{state="{state.value}"}} 0.0' in text
    m.set_ledger_counts({DocumentState.READY: 4})
    assert 'syncd_ledger_documents{state="READY"} 4.0' in m.exposition()[0].decode()


def test_forget_partition_drops_its_series(m: Metrics) -> None:
    exercise(m)
    m.forget_partition("erp.public.sales_order", 0)
    m.forget_partition("erp.public.sales_order", 9)  # never seen: no error
    text = m.exposition()[0].decode()
    assert "syncd_consumer_lag_messages{" not in text


def test_fresh_registries_are_independent() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.events_consumed.labels(topic="t").inc()
    assert 'syncd_events_consumed_total{topic="t"}' not in b.exposition()[0].decode()


def test_freshness_clamps_clock_skew(m: Metrics) -> None:
    m.observe_freshness(2_000_000_000_000, 1_000.0)
    m.observe_freshness(None, 1_000.0)
    text = m.exposition()[0].decode()
    assert "syncd_freshness_seconds_count 1.0" in text
    assert 'syncd_freshness_seconds_bucket{le="0.05"} 1.0' in text


@pytest.mark.parametrize(
    ("status", "cls"), [(200, "2xx"), (429, "4xx"), (503, "5xx"), (None, "error"), (42, "error")]
)
def test_status_class(status: int | None, cls: str) -> None:
    assert status_class(status) == cls


def test_outcome_label_values_are_a_closed_set() -> None:
    assert {o.value for o in DocumentOutcome} == {
        "issued",
        "reversed",
        "rejected",
        "invalid",
        "ignored",
        "duplicate",
        "dead",
    }


def test_issuer_account_up_starts_up_and_follows_the_gate(m: Metrics) -> None:
    def value() -> float | None:
        return m.registry.get_sample_value("syncd_issuer_account_up", {"account": "default"})

    assert value() == 1.0
    m.account_up(False)
    assert value() == 0.0
    m.account_up(True)
    assert value() == 1.0


def test_named_accounts_replace_the_default_and_are_up_until_refused(m: Metrics) -> None:
    m.declare_accounts(["sh", "bj"])

    def value(account: str) -> float | None:
        return m.registry.get_sample_value("syncd_issuer_account_up", {"account": account})

    assert (value("default"), value("sh"), value("bj")) == (None, 1.0, 1.0)
    m.account_up(False, "bj")
    assert (value("sh"), value("bj")) == (1.0, 0.0)
    m.issuer_request("issue", 200, 0.1, "bj")
    labels = {"account": "bj", "operation": "issue", "status_class": "2xx"}
    assert m.registry.get_sample_value("syncd_issuer_requests_total", labels) == 1.0


def test_credit_remaining_is_exported_only_where_reported(m: Metrics) -> None:
    def value() -> float | None:
        return m.registry.get_sample_value("syncd_issuer_credit_remaining", {"account": "sh"})

    m.credit_remaining("sh", None)
    assert value() is None
    m.credit_remaining("sh", Decimal("1234.50"))
    assert value() == 1234.5
