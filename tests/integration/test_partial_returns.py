"""Partial red-letter invoices on the real stack: return rows (erp_it.sales_return_line,
captured by a connector of their own) become red invoices for just those units; returns
that add up to the whole line are accepted, one more unit is refused by syncd (written back
to the return row) and, independently, by the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, text

from syncd.config import parse_config
from syncd.debezium.connector import render
from syncd.erp.writeback import ResultStatus, WriteBack, apply_writebacks
from syncd.issuers.base import Rejected, ReturnedLine, ReversalRequest
from syncd.ledger import repository as repo
from syncd.ledger.engine import ledger_engine
from syncd.ledger.models import TopicPartition
from tests.integration.daemon_harness import (
    IT_PREFIX,
    IT_SCHEMA,
    World,
    high_watermarks,
    it_config_data,
    world,
)
from tests.integration.stack import Stack

RETURN_TABLE = f"{IT_SCHEMA}.sales_return_line"
RETURN_TOPIC = f"{IT_PREFIX}.{RETURN_TABLE}"
RETURN_CONNECTOR = "syncd-it-returns"

RETURNS = {
    "table": RETURN_TABLE,
    "key_columns": ["id"],
    "document_key": "order_id",
    "line": "line_no",
    "quantity": "quantity",
    "qualifies": {"column": "status", "becomes": "CONFIRMED"},
    "reversal_reason": {
        "column": "reason",
        "map": {"RETURN": "SALES_RETURN", "ALLOWANCE": "ALLOWANCE"},
        "default": "SALES_RETURN",
    },
    "write_back": {
        "red_invoice_no": "red_invoice_no",
        "status": "invoice_status",
        "error": "invoice_error",
    },
}


def _config_data(stack: Stack) -> dict[str, Any]:
    data = it_config_data(stack)
    data["documents"]["sales_order"]["returns"] = RETURNS
    return data


@pytest.fixture(scope="module")
def returns_connector(it_erp: Stack, erp_engine: Engine) -> Iterator[Stack]:
    """A connector capturing only the return table (the shared one stays as it is)."""
    admin = AdminClient({"bootstrap.servers": it_erp.bootstrap})
    if RETURN_TOPIC not in admin.list_topics(timeout=10).topics:
        for future in admin.create_topics([NewTopic(RETURN_TOPIC, 1, 1)]).values():
            with contextlib.suppress(Exception):
                future.result(30)
    body = dict(render(parse_config(yaml.safe_dump(_config_data(it_erp))))["config"])
    body.update(
        {
            "database.port": str(it_erp.pg_port),
            "slot.name": "syncd_it_returns",
            "publication.name": "syncd_it_returns",
            "table.include.list": RETURN_TABLE,
        }
    )
    url = f"{it_erp.connect_url}/connectors/{RETURN_CONNECTOR}"
    httpx.put(f"{url}/config", json=body, timeout=30).raise_for_status()
    _wait_streaming(it_erp, erp_engine)
    yield it_erp


def _wait_streaming(stack: Stack, engine: Engine, timeout: float = 120) -> None:
    """A marker return row (DRAFT: nothing returns it) seen on the topic."""
    start = high_watermarks(stack.bootstrap, RETURN_TOPIC)
    marker = f"MARKER-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": f"it-rm-{uuid.uuid4().hex[:6]}"}
    )
    try:
        consumer.assign([KafkaTP(RETURN_TOPIC, p, o) for p, o in start.items()])
        deadline = time.monotonic() + timeout
        next_insert = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_insert:  # the slot may not exist yet: insert again
                with engine.begin() as conn:
                    order = conn.execute(
                        text(f"SELECT id FROM {IT_SCHEMA}.sales_order ORDER BY id LIMIT 1")
                    ).scalar_one()
                    conn.execute(
                        text(
                            f"INSERT INTO {RETURN_TABLE} (order_id, line_no, quantity, reason) "
                            "VALUES (:o, 1, 1, :m)"
                        ),
                        {"o": order, "m": marker},
                    )
                next_insert = time.monotonic() + 10
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None and marker.encode() in (msg.value() or b""):
                    return
    finally:
        consumer.close()
    raise RuntimeError(f"connector {RETURN_CONNECTOR} streams no changes")


def _seed_return_offsets(w: World) -> None:
    highs = high_watermarks(w.stack.bootstrap, RETURN_TOPIC)
    engine = ledger_engine(w.stack.dsn, w.schema)
    try:
        with engine.begin() as conn:
            tps = [TopicPartition(RETURN_TOPIC, p) for p in highs]
            epochs = repo.claim_partitions(conn, w.group, "test-seed", tps)
            repo.store_offsets(conn, w.group, {tp: (highs[tp.partition], epochs[tp]) for tp in tps})
    finally:
        engine.dispose()


def _sections(w: World) -> dict[str, Any]:
    return {"documents": _config_data(w.stack)["documents"]}


def _return(w: World, order: int, line_no: int, quantity: str, reason: str = "RETURN") -> int:
    with w.engine.begin() as conn:
        return_id = int(
            conn.execute(
                text(
                    f"INSERT INTO {RETURN_TABLE} (order_id, line_no, quantity, reason) "
                    "VALUES (:o, :n, :q, :r) RETURNING id"
                ),
                {"o": order, "n": line_no, "q": Decimal(quantity), "r": reason},
            ).scalar_one()
        )
        conn.execute(
            text(f"UPDATE {RETURN_TABLE} SET status = 'CONFIRMED' WHERE id = :id"),
            {"id": return_id},
        )
    return return_id


def _returns(w: World, ids: list[int]) -> dict[int, dict[str, Any]]:
    with w.engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT * FROM {RETURN_TABLE} WHERE id = ANY(:ids)"), {"ids": ids}
        ).mappings()
        return {int(r["id"]): dict(r) for r in rows}


def _wait_returns(w: World, ids: list[int], status: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    rows: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = _returns(w, ids)
        if len(rows) == len(ids) and all(r["invoice_status"] == status for r in rows.values()):
            return
        time.sleep(0.3)
    logs = "\n".join(d.output()[-3000:] for d in w.daemons)
    raise AssertionError(f"returns not {status}: {rows}\n--- daemon logs ---\n{logs}")


def _order_line_quantity(w: World, order: int, line_no: int) -> Decimal:
    with w.engine.connect() as conn:
        return Decimal(
            conn.execute(
                text(
                    f"SELECT quantity FROM {IT_SCHEMA}.sales_order_line "
                    "WHERE order_id = :o AND line_no = :n"
                ),
                {"o": order, "n": line_no},
            ).scalar_one()
        )


def test_partial_returns_up_to_the_line_and_not_one_unit_more(
    returns_connector: Stack, tmp_path: Path
) -> None:
    with world(returns_connector, tmp_path) as w:
        _seed_return_offsets(w)
        sections = _sections(w)
        d = w.daemon(sections).start()
        d.wait_ready()
        order = w.create_order(lines=2, confirm=False)
        with w.engine.begin() as conn:  # line 2: 5 units, so that three returns fit
            conn.execute(
                text(
                    f"UPDATE {IT_SCHEMA}.sales_order_line SET quantity = 5, "
                    "amount = round(5 * unit_price, 2) WHERE order_id = :o AND line_no = 2"
                ),
                {"o": order},
            )
        w.set_status(order, "CONFIRMED")
        blue_no = w.wait_issued([order])[order]["invoice_no"]
        units = _order_line_quantity(w, order, 2)
        assert units == 5
        # three returns that add up to the whole of line 2: accepted, one red each
        first = _return(w, order, 2, "1")
        rest = _return(w, order, 2, str(units - 2))
        last = _return(w, order, 2, "1", reason="ALLOWANCE")
        accepted = [first, rest, last]
        _wait_returns(w, accepted, "REVERSED")
        # one more unit: refused by syncd before sending, the reason on the return row
        extra = _return(w, order, 2, "1")
        _wait_returns(w, [extra], "INVALID")
        assert "would make" in (_returns(w, [extra])[extra]["invoice_error"] or "")

        invoices = w.sandbox.issued()
        reds = [i for i in invoices if i["kind"] == "RED"]
        blues = [i for i in invoices if i["kind"] == "BLUE"]
        assert len(blues) == 1 and len(reds) == 3
        assert all(r["original_invoice_no"] == blue_no for r in reds)
        returned_rows = _returns(w, accepted)
        assert {r["red_invoice_no"] for r in returned_rows.values()} == {
            r["invoice_no"] for r in reds
        }
        # the order keeps its blue invoice: partial returns do not reverse it
        row = w.orders([order])[order]
        assert row["invoice_status"] == "ISSUED" and row["invoice_no"] == blue_no
        assert row["red_invoice_no"] is None
        # the reds of line 2 add up to the blue line to the cent
        ledger = {r["serial"]: r for r in w.ledger_rows()}
        blue_payload = next(
            r["payload"] for r in ledger.values() if r["kind"] == "issue" and r["payload"]
        )
        blue_line = next(ln for ln in blue_payload["lines"] if ln["line_no"] == 2)
        red_lines = [
            ln
            for r in ledger.values()
            if r["kind"] == "reversal" and r["state"] == "REVERSED"
            for ln in r["payload"]["lines"]
        ]
        for field in ("quantity", "net_amount", "tax_amount", "gross_amount"):
            total = sum((Decimal(str(ln[field])) for ln in red_lines), Decimal(0))
            assert total == -Decimal(str(blue_line[field])), field
        assert sum(Decimal(r["gross_amount"]) for r in reds) == -Decimal(
            str(blue_line["gross_amount"])
        )

        # the sandbox refuses the extra unit on its own, whoever sends it
        client = w.sandbox.client()
        try:
            refused = client.reverse(
                ReversalRequest(
                    serial=f"SXTRA{uuid.uuid4().hex[:12].upper()}",
                    original_invoice_no=blue_no,
                    reason="SALES_RETURN",
                    lines=(ReturnedLine(2, Decimal(1)),),
                )
            )
            assert isinstance(refused, Rejected), refused
            assert any(r.code == "EXCEEDS_ORIGINAL" for r in refused.reasons)
            # and a full reversal of an invoice with partial reds would exceed it too
            full = client.reverse(
                ReversalRequest(
                    serial=f"SFULL{uuid.uuid4().hex[:12].upper()}",
                    original_invoice_no=blue_no,
                    reason="INVOICING_ERROR",
                )
            )
            assert isinstance(full, Rejected), full
        finally:
            client.close()
        assert len(w.sandbox.issued()) == 4

        # a cancellation of the order is refused by syncd too (the reds would exceed it)
        w.set_status(order, "CANCELLED", cancel_reason="ERROR")
        w.wait_for(
            [order],
            lambda r: "partial return" in (r["invoice_error"] or ""),
            what="the refused full reversal",
        )
        assert json.dumps(w.orders([order])[order]["invoice_status"]) == '"ISSUED"'

        # `syncd status --document` lists the returns under the revision they return against
        out = subprocess.run(
            [sys.executable, "-m", "syncd", "status", "-c", str(w.config_file(sections)),
             "--document", f'sales_order:{{"id":{order}}}', "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        (revision,) = json.loads(out.stdout)["revisions"]
        assert len(revision["returns"]) == 3
        assert {r["state"] for r in revision["returns"]} == {"REVERSED"}


def _five_unit_order(w: World) -> tuple[int, str]:
    """An issued order whose line 2 holds 5 units: (order id, blue invoice number)."""
    order = w.create_order(lines=2, confirm=False)
    with w.engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE {IT_SCHEMA}.sales_order_line SET quantity = 5, "
                "amount = round(5 * unit_price, 2) WHERE order_id = :o AND line_no = 2"
            ),
            {"o": order},
        )
    w.set_status(order, "CONFIRMED")
    return order, str(w.wait_issued([order])[order]["invoice_no"])


def test_partial_returns_survive_kill_9_and_lost_answers(
    returns_connector: Stack, tmp_path: Path
) -> None:
    # Every answer to a committed send is lost (the platform did the work), and the daemon
    # is killed while the reds are in flight: each return still becomes exactly one red
    # invoice, found again by its serial, and the whole line is never exceeded.
    with world(returns_connector, tmp_path, issue_delay=1.5) as w:
        _seed_return_offsets(w)
        sections = _sections(w)
        d = w.daemon(sections).start()
        d.wait_ready()
        order, blue_no = _five_unit_order(w)
        w.sandbox.set_faults(drop_response_after_commit_rate=1.0)
        first, second = _return(w, order, 2, "1"), _return(w, order, 2, "3")
        deadline = time.monotonic() + 90
        while not any(
            r["kind"] == "reversal" and r["state"] in ("OUTCOME_UNKNOWN", "REVERSAL_SUBMITTED")
            for r in w.ledger_rows()
        ):
            assert time.monotonic() < deadline, "no red form reached the platform"
            time.sleep(0.2)
        d.kill()
        w.sandbox.reset_faults()
        d2 = w.daemon(sections).start()
        d2.wait_ready()
        last = _return(w, order, 2, "1")
        _wait_returns(w, [first, second, last], "REVERSED", timeout=120)
        extra = _return(w, order, 2, "1")
        _wait_returns(w, [extra], "INVALID")
        reds = [i for i in w.sandbox.issued() if i["kind"] == "RED"]
        assert len(reds) == 3 and {r["original_invoice_no"] for r in reds} == {blue_no}
        assert len({r["serial"] for r in reds}) == 3
        rows = _returns(w, [first, second, last])
        assert {r["red_invoice_no"] for r in rows.values()} == {r["invoice_no"] for r in reds}
        reversals = [r for r in w.ledger_rows() if r["kind"] == "reversal"]
        assert sorted(r["state"] for r in reversals) == ["REVERSED"] * 3


def test_red_limits_are_refused_by_syncd_and_by_the_sandbox(
    returns_connector: Stack, tmp_path: Path
) -> None:
    with world(returns_connector, tmp_path, extra_args=("--red-max-per-invoice", "2")) as w:
        _seed_return_offsets(w)
        sections = _sections(w)
        sections["documents"]["sales_order"]["red_limits"] = {
            "max_reds_per_invoice": 2,
            "within_days": 30,
        }
        d = w.daemon(sections).start()
        d.wait_ready()
        order, blue_no = _five_unit_order(w)
        accepted = [_return(w, order, 2, "1"), _return(w, order, 2, "1")]
        _wait_returns(w, accepted, "REVERSED")
        # a third red invoice against the same blue one: refused before sending
        third = _return(w, order, 2, "1")
        _wait_returns(w, [third], "REJECTED")
        error = _returns(w, [third])[third]["invoice_error"] or ""
        assert "max_reds_per_invoice: 2" in error and blue_no in error
        parked = [r for r in w.ledger_rows() if r["state"] == "REJECTED"]
        assert [(r["kind"], r["last_error_code"]) for r in parked] == [
            ("reversal", "RED_COUNT_EXCEEDED")
        ]
        assert sum(i["kind"] == "RED" for i in w.sandbox.issued()) == 2
        # the sandbox holds the same limit on its own, whoever sends the form
        client = w.sandbox.client()
        try:
            refused = client.reverse(
                ReversalRequest(
                    serial=f"SLIMIT{uuid.uuid4().hex[:12].upper()}",
                    original_invoice_no=blue_no,
                    reason="SALES_RETURN",
                    lines=(ReturnedLine(2, Decimal(1)),),
                )
            )
        finally:
            client.close()
        assert isinstance(refused, Rejected), refused
        assert any(r.code == "RED_LIMIT_EXCEEDED" for r in refused.reasons)

        # a cancellation after the deadline: the order keeps its invoice and says why
        late, late_no = _five_unit_order(w)
        with w.engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE \"{w.schema}\".documents SET issued_at = now() - interval '40 days'"
                    " WHERE invoice_no = :n"
                ),
                {"n": late_no},
            )
        w.set_status(late, "CANCELLED", cancel_reason="ERROR")
        row = w.wait_for(
            [late],
            lambda r: "reversal refused" in (r["invoice_error"] or ""),
            what="the refused late reversal",
        )[late]
        assert "within_days: 30" in row["invoice_error"]
        assert row["invoice_status"] == "ISSUED" and row["invoice_no"] == late_no
        codes = {r["last_error_code"] for r in w.ledger_rows() if r["state"] == "REJECTED"}
        assert codes == {"RED_COUNT_EXCEEDED", "RED_DEADLINE_PASSED"}
        time.sleep(1.0)  # a red invoice on its way would be there by now
        assert not any(i["original_invoice_no"] == late_no for i in w.sandbox.issued())


def test_one_write_back_batch_keeps_order_and_return_results_apart(
    returns_connector: Stack, tmp_path: Path
) -> None:
    # A full reversal of an order and a return's red invoice, settled in one committer
    # batch, have the same document type and result columns: each must land in its own
    # table (a return row's result once went to the order with the return row's id).
    with world(returns_connector, tmp_path) as w:
        doc = parse_config(yaml.safe_dump(_config_data(w.stack))).documents["sales_order"]
        view = doc.returns_view()
        orders = [w.create_order(confirm=False) for _ in range(2)]
        with w.engine.begin() as conn:
            return_id = int(
                conn.execute(
                    text(
                        f"INSERT INTO {RETURN_TABLE} (order_id, line_no, quantity, reason) "
                        "VALUES (:o, 1, 1, 'RETURN') RETURNING id"
                    ),
                    {"o": orders[0]},
                ).scalar_one()
            )
        before = w.orders(orders)
        with w.engine.begin() as conn:
            skipped = apply_writebacks(
                conn,
                [
                    (doc, {"id": orders[0]}, WriteBack(ResultStatus.REVERSED, red_invoice_no="R0")),
                    (
                        view,
                        {"id": return_id},
                        WriteBack(ResultStatus.REVERSED, red_invoice_no="R1"),
                    ),
                ],
            )
        assert skipped == []
        after = w.orders(orders)
        assert after[orders[0]]["red_invoice_no"] == "R0"
        assert after[orders[1]] == before[orders[1]]
        row = _returns(w, [return_id])[return_id]
        assert (row["red_invoice_no"], row["invoice_status"]) == ("R1", "REVERSED")
