"""The daemon end to end on the real stack: ERP rows in, invoices issued once, results back.

Each test is one row of the failure table in shared/notes/exactly-once.md (numbers in the
test names), ending in the same verdict: the sandbox's audit holds exactly one blue invoice
per qualifying order (one red per cancelled invoiced order) and every ERP row carries
exactly its invoice number.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.chart.expected_metrics import EXPORTED
from tests.integration.chart_alerts import evaluate, samples
from tests.integration.daemon_harness import DIALECTS, ORDER_TOPIC, world
from tests.integration.stack import Stack, payload, read_topic


def _is_confirmation_of(key: bytes | None, value: bytes | None, ids: list[int]) -> bool:
    """A DRAFT -> CONFIRMED change of one of `ids` (the topic also holds crafted records)."""
    k, v = payload(key), payload(value)
    if k is None or v is None or k.get("id") not in ids:
        return False
    before, after = v.get("before"), v.get("after")
    return (
        isinstance(before, dict)
        and before.get("status") == "DRAFT"
        and isinstance(after, dict)
        and after.get("status") == "CONFIRMED"
    )


def test_orders_are_issued_and_written_back(it_erp: Stack, tmp_path: Path):
    with world(it_erp, tmp_path) as w:
        d = w.daemon().start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(5)]
        draft = w.create_order(confirm=False)
        rows = w.wait_issued(ids)
        assert all(
            len(r["invoice_no"]) == 20 and r["invoiced_at"] is not None for r in rows.values()
        )
        assert w.orders([draft])[draft]["invoice_no"] is None
        w.verdict(issued=ids)
        metrics = d.metrics()
        assert 'syncd_documents_total{document="sales_order",outcome="issued"} 5.0' in metrics
        assert 'syncd_build_info{version="' in metrics
        # Counted per batch: at least the 6 inserts and 5 confirmations (plus write-back
        # echoes), and the partitions' newest event time is set.
        consumed = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("syncd_events_consumed_total{")
        )
        assert consumed >= 11
        assert "syncd_last_event_timestamp_seconds{" in metrics
        # Every metric the Helm chart's dashboard and alerts query (tests/chart checks them
        # against EXPORTED) is served by the running daemon.
        declared = {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}
        declared |= {n + "_total" for n in declared}  # counters may be declared without it
        missing = sorted(set(EXPORTED) - declared)
        assert missing == [], f"metrics the chart uses but the daemon does not serve: {missing}"


def test_a_partition_at_its_in_flight_limit_pauses_and_resumes(it_erp: Stack, tmp_path: Path):
    """`max_in_flight_per_partition`: a partition holding that many unfinished documents
    is paused, and resumed as they settle -- every order is still issued once."""
    with world(it_erp, tmp_path, issue_delay=0.5) as w:
        d = w.daemon(max_in_flight_per_partition=1).start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(8)]
        w.wait_issued(ids)
        w.verdict(issued=ids)
        assert "partition limit:" in d.output()


def test_1_duplicate_delivery_and_2_repeated_updates_give_one_invoice(
    it_erp: Stack, tmp_path: Path
):
    with world(it_erp, tmp_path) as w:
        d = w.daemon().start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(3)]
        w.wait_issued(ids)
        # 2: the row keeps changing while it qualifies (and syncd's write-back changed it too)
        for n in range(3):
            for order_id in ids:
                w.touch(order_id, f"edit {n}")
        # 1: the connector re-emits the same change events (restart / re-snapshot)
        records = read_topic(
            it_erp.bootstrap,
            ORDER_TOPIC,
            lambda k, v: _is_confirmation_of(k, v, ids),
            count=3,
        )
        producer = Producer({"bootstrap.servers": it_erp.bootstrap})
        for key, value, _ in records:
            for _ in range(2):
                producer.produce(ORDER_TOPIC, key=key, value=value)
        producer.flush(10)
        marker = w.create_order()
        w.wait_issued([marker])
        time.sleep(1)
        w.verdict(issued=[*ids, marker])
        outcomes = d.metrics()
        assert 'outcome="duplicate"' in outcomes


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_13_cancel_after_invoicing_reverses_exactly_once(
    it_erp: Stack, tmp_path: Path, dialect: str
):
    with world(it_erp, tmp_path, **DIALECTS[dialect]) as w:
        d = w.daemon().start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(3)]
        w.wait_issued(ids)
        cancelled = ids[:2]
        for order_id in cancelled:
            w.set_status(order_id, "CANCELLED", cancel_reason="RETURN")
        # a cancellation racing its own issuance is deferred, not lost
        racing = w.create_order()
        w.set_status(racing, "CANCELLED", cancel_reason="ERROR")
        # and a draft cancelled before any invoice reverses nothing
        never = w.create_order(confirm=False)
        w.set_status(never, "CANCELLED")
        rows = w.wait_for(
            [*cancelled, racing],
            lambda r: r["invoice_status"] == "REVERSED" and r["red_invoice_no"] is not None,
        )
        assert all(r["invoice_no"] for r in rows.values())
        # cancelling again (or the event arriving twice) changes nothing
        for order_id in cancelled:
            w.set_status(order_id, "CONFIRMED")
            w.set_status(order_id, "CANCELLED", cancel_reason="RETURN")
        marker = w.create_order()
        w.wait_issued([marker])
        time.sleep(1)
        w.verdict(issued=[ids[2], marker], reversed_=[*cancelled, racing])
        assert w.orders([never])[never]["invoice_no"] is None


def test_invalid_data_is_written_back_and_a_corrected_row_is_issued(it_erp: Stack, tmp_path: Path):
    with world(it_erp, tmp_path) as w:
        d = w.daemon().start()
        d.wait_ready()
        bad = w.create_order(buyer_tax_id="91110108MA01ABCD2X", invoice_type="SPECIAL")
        rows = w.wait_for([bad], lambda r: r["invoice_status"] == "INVALID")
        assert "tax" in rows[bad]["invoice_error"].lower()
        assert w.sandbox.issued() == []
        # the ERP corrects the row and confirms it again
        w.set_status(bad, "DRAFT", buyer_tax_id="91110108MA01ABCD2H")
        w.set_status(bad, "CONFIRMED")
        w.wait_issued([bad])
        assert w.orders([bad])[bad]["invoice_error"] is None
        w.verdict(issued=[bad])


def test_8_poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing(
    it_erp: Stack, tmp_path: Path
):
    with world(it_erp, tmp_path) as w:
        d = w.daemon().start()
        d.wait_ready()
        producer = Producer({"bootstrap.servers": it_erp.bootstrap})
        producer.produce(
            ORDER_TOPIC, key=b'{"id": 1}', value=b"\x00not json at all", headers=[("trace", b"abc")]
        )
        producer.produce(
            ORDER_TOPIC,
            key=b"{}",
            value=json.dumps(
                {
                    "op": "u",
                    "before": None,
                    "after": {"id": 1},
                    "source": {
                        "table": "nope",
                        "schema": "erp_it",
                        "db": "erp",
                        "connector": "postgresql",
                    },
                }
            ).encode(),
        )
        # decodes and qualifies, but the ERP rejects its key while loading the lines: the
        # record is isolated and dead-lettered, the rest of its batch goes through
        row = {"id": "not-a-number", "status": "CONFIRMED", "buyer_name": "X", "invoice_no": None}
        producer.produce(
            ORDER_TOPIC,
            key=b'{"id": "not-a-number"}',
            value=json.dumps(
                {
                    "op": "u",
                    "before": {**row, "status": "DRAFT"},
                    "after": row,
                    "ts_ms": 1,
                    "source": {
                        "table": "sales_order",
                        "schema": "erp_it",
                        "db": "erp",
                        "connector": "postgresql",
                        "ts_ms": 1,
                        "snapshot": "false",
                    },
                }
            ).encode(),
        )
        producer.flush(10)
        ids = [w.create_order() for _ in range(2)]
        w.wait_issued(ids)
        dead = read_topic(
            it_erp.bootstrap, f"it.dead-letter.{w.group}", lambda k, v: True, count=3, timeout=30
        )
        assert d.alive
        # the original bytes, untouched
        assert b"\x00not json at all" in {v for _, v, _ in dead}
        metrics = d.metrics()
        assert "syncd_dead_letters_total" in metrics
        w.verdict(issued=ids)


def _topic_partition(series: str) -> tuple[str, str]:
    labels = dict(
        part.split("=", 1) for part in series.partition("{")[2].rstrip("}").split(",") if part
    )
    return labels["topic"].strip('"'), labels["partition"].strip('"')


def test_an_idle_partition_lags_zero_after_a_transactional_batch(it_erp: Stack, tmp_path: Path):
    """The Connect worker writes exactly-once: every batch ends with a transaction marker that
    is never delivered as a record. Once everything is processed, lag must read 0 (messages
    and seconds), or SyncdNoProgressWhileLagging would page on every quiet table."""
    with world(it_erp, tmp_path) as w:
        d = w.daemon().start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(2)]
        w.wait_issued(ids)
        deadline = time.monotonic() + 45
        lags: dict[str, float] = {}
        while time.monotonic() < deadline:
            lags = {
                line.split(" ")[0]: float(line.split(" ")[1])
                for line in d.metrics().splitlines()
                if line.startswith(("syncd_consumer_lag_messages{", "syncd_consumer_lag_seconds{"))
                and ORDER_TOPIC in line
            }
            if lags and all(v == 0 for v in lags.values()):
                break
            time.sleep(1)
        assert lags, "no lag gauges for the order topic"
        assert all(v == 0 for v in lags.values()), lags
        # The chart's stall alert on this very scrape of the table's topic, the table idle
        # for an hour: silent. (Other topics are not idle: Debezium's heartbeats move.)
        scrape = [
            (series, value)
            for series, value in samples(
                d.metrics(), ("syncd_consumer_lag_messages", "syncd_last_event_timestamp_seconds")
            )
            if f'topic="{ORDER_TOPIC}"' in series
        ]
        assert scrape, "no lag or last-event gauges for the order topic"
        evaluate(scrape, "SyncdNoProgressWhileLagging", [], tmp_path)
        # ... while the lag of one undelivered marker (how lag was once computed) would page.
        marker = [
            (series, "1" if series.startswith("syncd_consumer_lag_messages") else value)
            for series, value in scrape
        ]
        paged = [
            {"severity": "critical", "topic": topic, "partition": partition}
            for topic, partition in (
                _topic_partition(series)
                for series, _ in marker
                if series.startswith("syncd_consumer_lag_messages")
            )
        ]
        evaluate(marker, "SyncdNoProgressWhileLagging", paged, tmp_path)
