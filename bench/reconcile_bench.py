"""Time `syncd reconcile` over N documents (default 100,000) on the local stack's PostgreSQL.

Creates a throw-away database (the demo ERP schema, a migrated ledger), seeds N confirmed
orders dated today with their invoice numbers, and N ISSUED ledger documents with their
payload totals (set-based INSERTs: seeding is not what is measured), plus a few
exceptions of each ERP/ledger class. The platform's list is N matching invoices built in
memory (`--platform synthetic`): reading it from a real provider is that provider's paging
(100 per page on the sandbox), measured separately, not reconcile's work. Then runs the
reconciliation as the command does (snapshot, list, late lookup, compare, render JSON) and
prints the time of each phase, the exceptions found and the peak RSS.

    SYNCD_PG_PORT=15432 .venv/bin/python bench/reconcile_bench.py [-n 100000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from syncd.config import load_config
from syncd.issuers.base import PlatformInvoice, Totals
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.reconcile import run as reconcile_run
from syncd.reconcile.compare import compare
from syncd.reconcile.report import to_json
from syncd.reconcile.sources import inputs, read_snapshot

ROOT = Path(__file__).resolve().parent.parent
SERVER = f"postgresql+psycopg://postgres@127.0.0.1:{os.environ.get('SYNCD_PG_PORT', '15432')}"
SCHEMA = "syncd_bench"
EXCEPTIONS_PER_CLASS = 5


def _seed(dsn: str, n: int) -> None:
    erp = create_engine(dsn)
    with erp.begin() as c:
        c.exec_driver_sql((ROOT / "config" / "demo" / "erp.sql").read_text())
        c.execute(
            text(
                "INSERT INTO erp.sales_order (id, order_no, status, buyer_name, invoice_no) "
                "SELECT g, 'SO-' || g, 'CONFIRMED', 'Buyer ' || g, 'N' || lpad(g::text, 12, '0') "
                "FROM generate_series(1, CAST(:n AS bigint)) g"
            ),
            {"n": n},
        )
        # exceptions: qualifying rows without ledger documents; cancelled rows
        c.execute(
            text(
                "INSERT INTO erp.sales_order (id, order_no, status, buyer_name) "
                "SELECT g, 'SO-' || g, 'CONFIRMED', 'Buyer' "
                "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
            ),
            {"a": n + 1, "b": n + EXCEPTIONS_PER_CLASS},
        )
        c.execute(
            text("UPDATE erp.sales_order SET status = 'CANCELLED' WHERE id <= :k"),
            {"k": EXCEPTIONS_PER_CLASS},
        )
        c.execute(
            text("UPDATE erp.sales_order SET invoice_no = NULL WHERE id BETWEEN :a AND :b"),
            {"a": EXCEPTIONS_PER_CLASS + 1, "b": 2 * EXCEPTIONS_PER_CLASS},
        )
    erp.dispose()
    upgrade(dsn, SCHEMA)
    totals = json.dumps(
        {"totals": {"net_amount": "100.00", "tax_amount": "13.00", "gross_amount": "113.00"}}
    )
    with create_engine(dsn).begin() as c:
        c.execute(
            text(
                f"INSERT INTO {SCHEMA}.documents (document_type, source_table, source_key, kind, "
                "revision, state, serial, payload, invoice_no, issued_at) "
                "SELECT 'sales_order', 'erp.sales_order', '{\"id\":' || g || '}', 'issue', 0, "
                "'ISSUED', 'S' || lpad(g::text, 15, '0'), CAST(:totals AS jsonb), "
                "'N' || lpad(g::text, 12, '0'), now() FROM generate_series(1, CAST(:n AS bigint)) g"
            ),
            {"n": n, "totals": totals},
        )


def _config(dsn: str, tmp: Path) -> Path:
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    data["database"].update(dsn=dsn, schema_name=SCHEMA)
    path = tmp / "reconcile-bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _platform(n: int) -> list[PlatformInvoice]:
    now = datetime.now(UTC)
    t = Totals(Decimal("100.00"), Decimal("13.00"), Decimal("113.00"))
    return [
        PlatformInvoice(
            invoice_no=f"N{g:012d}", kind="BLUE", issued_at=now, totals=t, serial=f"S{g:015d}"
        )
        for g in range(1, n + 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="documents (default 100000)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    name = f"reconcile_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    dsn = f"{SERVER}/{name}"
    try:
        started = time.perf_counter()
        _seed(dsn, args.n)
        seeded = time.perf_counter() - started
        config = load_config(_config(dsn, Path(os.environ.get("TMPDIR", "/tmp"))))
        engine = ledger_engine(dsn, SCHEMA, pool_size=1, max_overflow=1)
        today = datetime.now(UTC).date()
        request = reconcile_run.Request(
            datetime.combine(today, datetime.min.time(), UTC),
            datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC),
        )
        docs = reconcile_run.documents(config, None)
        listed = _platform(args.n)
        phases: dict[str, float] = {}
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        with engine.execution_options(isolation_level="REPEATABLE READ").begin() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            snapshot = read_snapshot(
                conn, docs, request.start, request.end, {d.name: d.period_column for d in docs}
            )
        phases["snapshot_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        known = reconcile_run.known_listed(engine, snapshot, listed)
        phases["late_lookup_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        report = compare(inputs(snapshot, listed, known, docs, request.start, request.end))
        phases["compare_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        rendered = to_json(report, exit_code=1)
        phases["render_json_s"] = time.perf_counter() - t3
        total = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        # the same through the command's own entry (snapshot + lookup + compare)
        t4 = time.perf_counter()
        again = reconcile_run.reconcile(engine, config, request, lambda since: listed)
        whole = time.perf_counter() - t4
        engine.dispose()
        out: dict[str, Any] = {
            "documents": args.n,
            "seed_s": round(seeded, 1),
            **{k: round(v, 2) for k, v in phases.items()},
            "total_s": round(total, 2),
            # CPU of this process (the database's work is not in it): on a shared machine
            # the wall-clock figures above include waiting for a core, this does not
            "python_cpu_s": round(cpu, 2),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "reconcile_function_s": round(whole, 2),
            "exceptions": {c.value: t.count for c, t in report.by_class().items() if t.count},
            "same_result_twice": [e.cls for e in again.exceptions]
            == [e.cls for e in report.exceptions],
            "report_bytes": len(rendered),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(json.dumps(out, indent=2))
    finally:
        if not args.keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
