"""Red + re-issue on the real stack: cancel -> re-confirm yields exactly one red invoice and
one second blue invoice per order, also with kill -9 of the daemon mid-way; a re-confirmation
without a reversal never yields a second blue invoice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.daemon_harness import World, it_config_data, world
from tests.integration.stack import Stack

REISSUES = {"column": "status", "becomes": "CONFIRMED"}


def _sections(w: World) -> dict[str, Any]:
    documents = it_config_data(w.stack)["documents"]
    documents["sales_order"]["reissues"] = REISSUES
    return {"documents": documents}


def _wait(cond, timeout: float = 90, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ledger_by_key(w: World, order_id: int) -> list[dict[str, Any]]:
    key = json.dumps({"id": order_id}, separators=(",", ":"))
    return [r for r in w.ledger_rows() if r["source_key"] == key]


def _reissued(w: World, order_id: int) -> bool:
    row = w.orders([order_id])[order_id]
    rows = _ledger_by_key(w, order_id)
    current = [r for r in rows if r["kind"] == "issue" and r["revision"] == 1]
    return (
        bool(current)
        and current[0]["state"] == "ISSUED"
        and row["invoice_status"] == "ISSUED"
        and row["invoice_no"] == current[0]["invoice_no"]
    )


def _verdict(w: World, reissued: list[int], plain: list[int] = ()) -> None:  # type: ignore[assignment]
    """Per re-issued order: blue r0, red of r0, blue r1 -- each exactly once at the sandbox;
    the ERP row shows the r1 number and no red number. Per plain order: one blue, no red."""
    invoices = w.sandbox.issued()
    serials = [i["serial"] for i in invoices]
    assert len(serials) == len(set(serials)), "a serial was issued twice"
    by_serial = {i["serial"]: i for i in invoices}
    rows = w.orders(list(reissued) + list(plain))
    counted = 0
    for order_id in reissued:
        ledger = _ledger_by_key(w, order_id)
        shape = sorted((r["kind"], r["revision"], r["state"]) for r in ledger)
        assert shape == [
            ("issue", 0, "REVERSED"),
            ("issue", 1, "ISSUED"),
            ("reversal", 0, "REVERSED"),
        ], f"order {order_id}: {shape}"
        blue0, blue1, red0 = (
            next(r for r in ledger if (r["kind"], r["revision"]) == k)
            for k in (("issue", 0), ("issue", 1), ("reversal", 0))
        )
        assert len({blue0["serial"], blue1["serial"], red0["serial"]}) == 3
        for r, kind in ((blue0, "BLUE"), (blue1, "BLUE"), (red0, "RED")):
            assert by_serial[r["serial"]]["kind"] == kind
            assert by_serial[r["serial"]]["invoice_no"] == r["invoice_no"]
        assert by_serial[red0["serial"]]["original_invoice_no"] == blue0["invoice_no"]
        assert rows[order_id]["invoice_no"] == blue1["invoice_no"] != blue0["invoice_no"]
        assert rows[order_id]["invoice_status"] == "ISSUED"
        assert rows[order_id]["red_invoice_no"] is None
        counted += 3
    for order_id in plain:
        ledger = _ledger_by_key(w, order_id)
        assert [(r["kind"], r["revision"], r["state"]) for r in ledger] == [("issue", 0, "ISSUED")]
        assert rows[order_id]["invoice_no"] == ledger[0]["invoice_no"]
        counted += 1
    assert len(invoices) == counted, f"sandbox holds {len(invoices)} invoices, expected {counted}"


def test_cancel_then_reconfirm_issues_one_red_and_one_second_blue(it_erp: Stack, tmp_path: Path):
    # The sandbox issues 2 s after accepting: the re-issued revision sits SUBMITTED when the
    # daemon is killed, and the new daemon finds it by its serial instead of minting one.
    with world(it_erp, tmp_path, issue_delay=2.0) as w:
        sections = _sections(w)
        d = w.daemon(sections).start()
        d.wait_ready()
        order, plain = w.create_order(), w.create_order()
        first = w.wait_issued([order, plain])
        w.set_status(order, "CANCELLED", cancel_reason="ERROR")
        w.wait_for([order], lambda r: r["invoice_status"] == "REVERSED", what="reversal")
        assert w.orders([order])[order]["invoice_no"] == first[order]["invoice_no"]
        # a re-confirmation without a reversal: never a second blue invoice
        w.set_status(plain, "SHIPPED")
        w.set_status(plain, "CONFIRMED")
        w.set_status(order, "CONFIRMED", remark="corrected")
        _wait(
            lambda: any(
                r["kind"] == "issue" and r["revision"] == 1 and r["state"] == "SUBMITTED"
                for r in _ledger_by_key(w, order)
            ),
            what="the re-issued revision accepted by the provider",
        )
        d.kill()
        d2 = w.daemon(sections).start()
        d2.wait_ready()
        _wait(lambda: _reissued(w, order), what="the re-issued invoice written back")
        time.sleep(1.0)  # a second blue invoice for `plain` would be on its way by now
        _verdict(w, reissued=[order], plain=[plain])

        # `syncd status --document` shows both revisions with their invoices
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncd",
                "status",
                "-c",
                str(w.config_file(sections)),
                "--document",
                f'sales_order:{{"id":{order}}}',
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        history = json.loads(out.stdout)
        assert [r["revision"] for r in history["revisions"]] == [0, 1]
        assert history["revisions"][0]["red"]["state"] == "REVERSED"
        assert history["revisions"][1]["red"] is None
        assert history["current_invoice_no"] == w.orders([order])[order]["invoice_no"]


def test_fast_cancel_and_reconfirm_wait_for_each_other_across_kill_9(it_erp: Stack, tmp_path: Path):
    # Confirm, cancel and re-confirm follow each other before the first invoice exists: the
    # cancellation waits for the invoice, the re-confirmation for the red invoice. A kill -9
    # while they wait loses neither (their offsets were not stored).
    with world(it_erp, tmp_path, issue_delay=1.5) as w:
        sections = _sections(w)
        d = w.daemon(sections).start()
        d.wait_ready()
        orders = [w.create_order() for _ in range(4)]
        for order in orders:
            w.set_status(order, "CANCELLED", cancel_reason="RETURN")
            w.set_status(order, "CONFIRMED")
        # Past READY = the provider accepted it. (Waiting for SUBMITTED itself depended on
        # timing: a first status poll later than the sandbox's issue delay goes straight
        # from READY to ISSUED, and the row is never SUBMITTED.)
        _wait(
            lambda: (
                sum(
                    r["kind"] == "issue" and r["revision"] == 0 and r["state"] != "READY"
                    for r in w.ledger_rows()
                )
                >= 2
            ),
            what="invoices accepted by the provider",
        )
        d.kill()
        d2 = w.daemon(sections).start()
        d2.wait_ready()
        _wait(lambda: all(_reissued(w, o) for o in orders), timeout=120, what="re-issues")
        time.sleep(1.0)
        _verdict(w, reissued=orders)


def test_cancel_and_reconfirm_under_platform_faults_and_kill_9(it_erp: Stack, tmp_path: Path):
    # The sandbox loses every answer to a committed send and fails the next issue calls
    # with 500s while the red and the second blue invoice are on their way; the daemon is
    # killed mid-way. Still: one red, one second blue per order, each found by its serial.
    with world(it_erp, tmp_path, issue_delay=1.0) as w:
        sections = _sections(w)
        d = w.daemon(sections).start()
        d.wait_ready()
        orders = [w.create_order() for _ in range(3)]
        w.wait_issued(orders)
        w.sandbox.set_faults(drop_response_after_commit_rate=1.0, fail_next_issue_calls=2)
        for order in orders:
            w.set_status(order, "CANCELLED", cancel_reason="ERROR")
        w.wait_for(
            orders, lambda r: r["invoice_status"] == "REVERSED", timeout=120, what="reversals"
        )
        for order in orders:
            w.set_status(order, "CONFIRMED", remark="corrected")
        _wait(
            lambda: any(
                r["kind"] == "issue" and r["revision"] == 1 and r["state"] != "READY"
                for r in w.ledger_rows()
            ),
            what="a re-issued revision sent to the platform",
        )
        d.kill()
        w.sandbox.reset_faults()
        d2 = w.daemon(sections).start()
        d2.wait_ready()
        _wait(lambda: all(_reissued(w, o) for o in orders), timeout=120, what="re-issues")
        time.sleep(1.0)
        _verdict(w, reissued=orders)


def test_reissues_beyond_the_daily_limit_are_refused_with_the_reason(it_erp: Stack, tmp_path: Path):
    with world(it_erp, tmp_path) as w:
        sections = _sections(w)
        sections["documents"]["sales_order"]["max_reissues_per_day"] = 1
        d = w.daemon(sections).start()
        d.wait_ready()
        order = w.create_order()
        w.wait_issued([order])
        w.set_status(order, "CANCELLED", cancel_reason="ERROR")
        w.wait_for([order], lambda r: r["invoice_status"] == "REVERSED", what="reversal r0")
        w.set_status(order, "CONFIRMED")
        _wait(lambda: _reissued(w, order), what="re-issue r1")
        w.set_status(order, "CANCELLED", cancel_reason="ERROR")
        w.wait_for([order], lambda r: r["invoice_status"] == "REVERSED", what="reversal r1")
        w.set_status(order, "CONFIRMED")
        row = w.wait_for(
            [order],
            lambda r: "re-issue refused" in (r["invoice_error"] or ""),
            what="the refused second re-issue",
        )[order]
        assert "max_reissues_per_day: 1" in row["invoice_error"]
        assert row["invoice_status"] == "REVERSED"
        time.sleep(1.0)
        shape = sorted((r["kind"], r["revision"]) for r in _ledger_by_key(w, order))
        assert shape == [("issue", 0), ("issue", 1), ("reversal", 0), ("reversal", 1)]
        serials = {r["serial"] for r in _ledger_by_key(w, order)}
        kinds = sorted(i["kind"] for i in w.sandbox.issued() if i["serial"] in serials)
        assert kinds == ["BLUE", "BLUE", "RED", "RED"]
