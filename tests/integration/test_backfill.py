"""`syncd backfill` on the real stack: the --where condition against PostgreSQL, dry run
totals, resuming, and the acceptance test -- a backfill racing live CDC over 500 rows
under kill -9 of both the backfill and the daemon gives exactly one invoice per order,
checked at the sandbox platform and in the ERP write-back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.integration.daemon_harness import (
    BUYER_TAX_ID,
    IT_SCHEMA,
    ORDER_TOPIC,
    World,
    high_watermarks,
    world,
)
from tests.integration.stack import Stack

REASON = "orders from before the go-live"
CONFIRM = f"UPDATE {IT_SCHEMA}.sales_order SET status = 'CONFIRMED' WHERE id = ANY(:ids)"


def _cmd(config: Path, where: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "syncd",
        "backfill",
        "-c",
        str(config),
        "--document",
        "sales_order",
        "--where",
        where,
        "--reason",
        REASON,
        *extra,
    ]


def _backfill(
    config: Path, where: str, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(config, where, *extra), capture_output=True, text=True, timeout=timeout, check=False
    )


def _id_range(ids: list[int]) -> str:
    return f"{{all: [{{column: id, at_least: {min(ids)}}}, {{column: id, at_most: {max(ids)}}}]}}"


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _runs(w: World) -> list[dict[str, Any]]:
    with w.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                text(f'SELECT * FROM "{w.schema}".backfill_runs ORDER BY id')
            ).mappings()
        ]


def _audit(w: World, reason: str) -> list[dict[str, Any]]:
    with w.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                text(f'SELECT * FROM "{w.schema}".audit WHERE reason = :r ORDER BY id'),
                {"r": reason},
            ).mappings()
        ]


def _bulk_orders(w: World, n: int, status: str, other: str | None = None) -> list[int]:
    """n orders of one line each, inserted in one transaction (one change event each);
    with `other`, every second order (by id) has that status instead."""
    with w.engine.begin() as conn:
        ids = [
            int(i)
            for i in conn.execute(
                text(
                    f"INSERT INTO {IT_SCHEMA}.sales_order (order_no, buyer_name, buyer_tax_id, "
                    "invoice_type, status) SELECT :p || '-' || g, 'Buyer Ltd.', :tax, 'ORDINARY', "
                    f"CAST(CASE WHEN g % 2 = 0 THEN :o ELSE :s END AS {IT_SCHEMA}.order_status) "
                    "FROM generate_series(1, :n) AS g ORDER BY g RETURNING id"
                ),
                {
                    "p": f"{w.prefix}-{status[:1]}{uuid.uuid4().hex[:4]}",
                    "tax": BUYER_TAX_ID,
                    "s": status,
                    "o": other or status,
                    "n": n,
                },
            ).scalars()
        ]
        conn.execute(
            text(
                f"INSERT INTO {IT_SCHEMA}.sales_order_line (order_id, line_no, item_name, "
                "tax_code, unit, quantity, unit_price, tax_rate, amount) SELECT o, 1, "
                "'Service 1', '3040201000000000000', 'hour', 2, 10.50, 0.13, 21.00 "
                "FROM unnest(CAST(:ids AS bigint[])) AS o"
            ),
            {"ids": ids},
        )
    return sorted(ids)


def _order_events(stack: Stack) -> int:
    return sum(high_watermarks(stack.bootstrap, ORDER_TOPIC).values())


def test_where_dry_run_and_rerun(it_erp: Stack, tmp_path: Path) -> None:
    with world(it_erp, tmp_path) as w:
        config = w.config_file()
        ids = [w.create_order(confirm=False) for _ in range(10)]
        confirmed, cancelled, draft = ids[:5], ids[5:7], ids[7:]
        for i in confirmed:
            w.set_status(i, "CONFIRMED")
        for i in cancelled:
            w.set_status(i, "CANCELLED")
        where = _id_range(ids)

        bad = _backfill(config, "{column: id, equals: ten}")
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("\n") == 1 and "does not fit column id" in bad.stderr
        bad = _backfill(config, "{column: no_such_column, equals: 1}")
        assert bad.returncode == 2 and "no column 'no_such_column'" in bad.stderr

        # a narrower condition: the SQL selects exactly what the evaluator would
        only = f"{{all: [{where}, {{column: status, in: [CANCELLED, DRAFT]}}]}}"
        dry = _backfill(config, only, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        keyed = {d["key"]["id"]: d for d in report["documents"]}
        assert set(keyed) == set(cancelled + draft)
        assert all(d["action"] == "skip" for d in keyed.values())
        assert "no invoice to reverse" in keyed[cancelled[0]]["reason"]

        dry = _backfill(config, where, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        planned = {d["key"]["id"]: d for d in report["documents"]}
        assert {i for i, d in planned.items() if d["action"] == "issue"} == set(confirmed)
        assert report["totals"]["counts"] == {"issue": 5, "reverse": 0, "invalid": 0, "skip": 5}
        assert _runs(w) == [] and w.ledger_rows() == []  # a dry run writes nothing

        done = _backfill(config, where, "--rate", "200", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["run_totals"] == {
            "scanned": 10,
            "issued": 5,
            "reversed": 0,
            "skipped": 5,
            "invalid": 0,
        }
        rows = {json.loads(r["source_key"])["id"]: r for r in w.ledger_rows()}
        assert set(rows) == set(confirmed)
        gross = sum(Decimal(str(r["payload"]["totals"]["gross_amount"])) for r in rows.values())
        assert Decimal(str(report["totals"]["amounts"]["issue"]["gross"])) == gross
        for i in confirmed:  # the dry run named the serial the ledger froze
            assert planned[i]["serial"] == rows[i]["serial"]
            assert rows[i]["state"] == "READY" and rows[i]["source_offset"] is None
        # audited: who, when, why
        started = _audit(w, "backfill started")
        assert len(started) == 1 and started[0]["why"] == REASON and started[0]["os_user"]
        assert len(_audit(w, "backfill finished")) == 1
        per_doc = [
            a
            for a in _audit_all(w)
            if a["document_id"] is not None and a["reason"].startswith("backfill run")
        ]
        assert len(per_doc) == 5 and all(a["why"] == REASON for a in per_doc)

        # a second run finds everything recorded: nothing twice
        again = _backfill(config, where, "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["totals"]["counts"]["issue"] == 0
        assert len(w.ledger_rows()) == 5


def _audit_all(w: World) -> list[dict[str, Any]]:
    with w.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(text(f'SELECT * FROM "{w.schema}".audit ORDER BY id')).mappings()
        ]


def test_backfill_racing_cdc_under_kill_9_issues_each_order_once(
    it_erp: Stack, tmp_path: Path
) -> None:
    with world(it_erp, tmp_path) as w:
        t0 = time.monotonic()
        # 500 orders, ids interleaved: 250 historic ones, confirmed while nobody consumed and
        # then the group's offsets moved past them -- CDC will never replay them, only the
        # backfill can issue them -- and 250 live ones, confirmed while the backfill runs
        # over them, so the backfill and CDC race for the same rows
        before = _order_events(it_erp)
        everything = _bulk_orders(w, 500, "CONFIRMED", other="DRAFT")
        status = {i: r["status"] for i, r in w.orders(everything).items()}
        historic = [i for i in everything if status[i] == "CONFIRMED"]
        live = [i for i in everything if status[i] == "DRAFT"]
        _wait(lambda: _order_events(it_erp) >= before + len(everything), 120, "order events")
        w.prepare()
        daemon = w.daemon()
        daemon.start().wait_ready()
        where = _id_range(everything)
        t1 = time.monotonic()

        log = (tmp_path / "backfill-1.log").open("w")
        proc = subprocess.Popen(
            _cmd(daemon.config_path, where, "--rate", "20"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            for n in range(0, 125, 25):  # half the live orders confirmed mid-backfill
                with w.engine.begin() as conn:
                    conn.execute(text(CONFIRM), {"ids": live[n : n + 25]})
                time.sleep(0.5)  # paces the load only; no verdict depends on it
            _wait(lambda: (_runs(w) or [{"pages": 0}])[0]["pages"] >= 3, 120, "backfill pages")
            proc.send_signal(signal.SIGKILL)  # kill -9 the backfill mid-run
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        killed_at = _runs(w)[0]
        assert killed_at["state"] == "running" and killed_at["scanned"] < len(everything)

        _wait(lambda: sum(r["state"] == "ISSUED" for r in w.ledger_rows()) >= 40, 120, "issuing")
        daemon.kill()  # kill -9 the daemon mid-flight
        # the rest of the live orders confirmed while no daemon runs, and the backfill
        # resumed before the daemon is back: now the backfill records first and the
        # confirmations' change events find the documents there
        with w.engine.begin() as conn:
            conn.execute(text(CONFIRM), {"ids": live[125:]})
        t2 = time.monotonic()
        resumed = _backfill(daemon.config_path, where, "--rate", "200")
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert f"resuming backfill run {killed_at['id']}" in resumed.stderr
        second = w.daemon()
        second.start().wait_ready()
        t3 = time.monotonic()
        w.wait_issued(everything, timeout=300)
        t4 = time.monotonic()
        w.verdict(issued=everything)
        invoices = w.sandbox.issued()
        assert len([i for i in invoices if i["kind"] == "BLUE"]) == len(everything)
        issue_rows = [r for r in w.ledger_rows() if r["kind"] == "issue"]
        assert len(issue_rows) == len(everything)
        assert len({r["source_key"] for r in issue_rows}) == len(everything)
        runs = _runs(w)
        assert len(runs) == 1 and runs[0]["state"] == "finished"
        # every historic order came through the backfill, and both runs were audited
        backfilled = {
            json.loads(r["source_key"])["id"] for r in issue_rows if r["source_offset"] is None
        }
        assert set(historic) <= backfilled
        late = {i for i in live[125:] if i > killed_at["last_key"][0]}
        assert late <= backfilled  # nobody else could record them
        print(
            f"backfill race: {len(backfilled & set(live))} of {len(live)} live orders recorded "
            f"by the backfill, {len(set(live) - backfilled)} by CDC; setup {t1 - t0:.0f} s, "
            f"race and kills {t2 - t1:.0f} s, resumed run {t3 - t2:.0f} s, "
            f"all issued after {t4 - t3:.0f} s more; run {runs[0]['pages']} pages, "
            f"{runs[0]['issued']} issued, {runs[0]['skipped']} skipped"
        )
        assert len(_audit(w, "backfill started")) == 1
        assert len(_audit(w, "backfill resumed")) == 1


def test_a_cancellation_cdc_missed_is_reversed_once(it_erp: Stack, tmp_path: Path) -> None:
    with world(it_erp, tmp_path) as w:
        daemon = w.daemon()
        daemon.start().wait_ready()
        ids = [w.create_order(lines=1) for _ in range(3)]
        w.wait_issued(ids)
        daemon.terminate()
        # cancelled while nobody consumed, then the offsets moved past the cancellations:
        # the daemon will never see them
        before = _order_events(it_erp)
        for i in ids[:2]:
            w.set_status(i, "CANCELLED")
        _wait(lambda: _order_events(it_erp) >= before + 2, 60, "cancellation events")
        w.prepare()
        second = w.daemon()
        second.start().wait_ready()
        where = f"{{all: [{_id_range(ids)}, {{column: status, equals: CANCELLED}}]}}"

        dry = _backfill(second.config_path, where, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["totals"]["counts"]["reverse"] == 2
        assert Decimal(str(report["totals"]["amounts"]["reverse"]["gross"])) < 0

        done = _backfill(second.config_path, where, "--format", "csv")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0].startswith("key,action,serial")
        assert sum(",reverse," in line for line in done.stdout.splitlines()) == 2
        w.wait_for(ids[:2], lambda r: r["invoice_status"] == "REVERSED", what="reversal")
        w.verdict(issued=ids[2:], reversed_=ids[:2])
        # a second run finds the reversals recorded: nothing twice
        again = _backfill(second.config_path, where, "--json")
        assert json.loads(again.stdout)["totals"]["counts"]["reverse"] == 0


def test_two_processes_on_one_run_cannot_both_move_it(it_erp: Stack, tmp_path: Path) -> None:
    with world(it_erp, tmp_path) as w:
        config = w.config_file()
        ids = _bulk_orders(w, 20, "CONFIRMED")
        where = _id_range(ids)
        logs = [(tmp_path / f"backfill-{n}.log").open("w+") for n in (1, 2)]
        # 2 documents/s: a page of 10 rows, then 5 s of pacing -- the second process starts
        # (and resumes the same run) while the first one waits
        procs = [
            subprocess.Popen(_cmd(config, where, "--rate", "2"), stdout=logs[0], stderr=logs[0])
        ]
        try:
            _wait(lambda: _runs(w) and _runs(w)[0]["pages"] >= 1, 60, "the first page")
            procs.append(
                subprocess.Popen(_cmd(config, where, "--rate", "2"), stdout=logs[1], stderr=logs[1])
            )
            codes = sorted(p.wait(120) for p in procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
        rows = [r for r in w.ledger_rows() if r["kind"] == "issue"]
        assert sorted(json.loads(r["source_key"])["id"] for r in rows) == ids  # each once
        print(f"two processes on one run: exit codes {codes}")
        if "resuming backfill run" in outputs[1]:
            # both worked on one run: the one that came second to a page stopped
            assert codes == [0, 1], outputs
            assert any("by another process" in o for o in outputs), outputs
        else:  # the first had finished before the second looked: a fresh run found all
            assert codes == [0, 0], outputs
