"""Peak memory of `syncd export` against the number of invoices in the period.

`syncd export` streams (a server-side cursor, row-by-row writers, the UBL manifest kept
on disk), so its peak resident set size should not grow with the ledger. This script
seeds N issued invoices into a scratch ledger schema on the stack's PostgreSQL (one
INSERT ... SELECT over generate_series, the same stored invoice each time under its own
serial and number), runs the real command in a child process per (N, format), and
reports the child's peak RSS (`wait4`'s ru_maxrss), its wall time and the output size.

    SYNCD_PG_PORT=... python -m bench.export_memory --sizes 10000,100000,1000000 \
        --formats csv,json,ubl

Not a test: it takes minutes at a million rows and its verdict is a figure for
docs/performance.md, not a pass/fail. The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from syncd.ledger.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
SERVER = os.environ.get(
    "SYNCD_TEST_PG",
    f"postgresql+psycopg://postgres@127.0.0.1:{os.environ.get('SYNCD_PG_PORT', '15432')}",
)
SCHEMA = "syncd_bench"


def _invoice_payload() -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.unit.invoice_samples import multi_rate

    data: dict[str, Any] = json.loads(multi_rate().to_json())
    return data


def seed(dsn: str, rows: int, already: int) -> None:
    """Add invoices `already+1 .. rows` (all issued on 2026-11-15, UTC)."""
    if rows <= already:
        return
    engine = create_engine(dsn)
    payload = json.dumps(_invoice_payload())
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.documents (document_type, source_table, source_key, "
                "kind, revision, state, serial, payload, payload_hash, invoice_no, issued_at) "
                "SELECT 'sales_order', 'erp.sales_order', '{\"id\":' || g || '}', 'issue', 0, "
                "'ISSUED', 'SB' || lpad(g::text, 24, '0'), CAST(:payload AS jsonb), 'h', "
                "'2631' || lpad(g::text, 16, '0'), "
                "timestamptz '2026-11-15 00:00:00+00' + g * interval '1 millisecond' "
                "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g"
            ),
            {"payload": payload, "first": already + 1, "last": rows},
        )
    engine.dispose()


def measure(config: Path, fmt: str, out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "syncd",
        "export",
        "-c",
        str(config),
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--format",
        fmt,
        "--output",
        str(out),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export failed: {stderr.strip()}")
    return {
        "format": fmt,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(elapsed, 1),
        "output_mib": round(out.stat().st_size / 2**20, 1),
        "said": stderr.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--formats", default="csv,json,ubl")
    parser.add_argument("--ubl-max", type=int, default=1_000_000, help="skip ubl above this")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    formats = args.formats.split(",")
    name = f"exportbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    dsn = f"{SERVER}/{name}"
    results: list[dict[str, Any]] = []
    try:
        upgrade(dsn, SCHEMA)
        data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        data["database"].update(dsn=dsn, schema_name=SCHEMA)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.yaml"
            config.write_text(yaml.safe_dump(data, sort_keys=False))
            seeded = 0
            for size in sizes:
                seed(dsn, size, seeded)
                seeded = size
                for fmt in formats:
                    if fmt == "ubl" and size > args.ubl_max:
                        continue
                    out = Path(tmp) / f"export.{fmt}"
                    result = {"invoices": size, **measure(config, fmt, out)}
                    out.unlink()
                    results.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
