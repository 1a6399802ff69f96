"""Invoice building throughput: one demo sales order with two lines, mapped N times.

Each iteration does what `syncd.pipeline.intake.Intake._issue` does with a confirmed order once
its lines are read: the identity (`identity_of`), `build_blue` (mapping, tax maths,
pydantic models, business-rule validation, `serial_for`), the serial the intake records
and the JSON payload (`_payload`, i.e. `model_dump(mode="json")`). No I/O. The rows are
shaped like the benchmark's orders (bench/run.py `load_orders`, config/demo/erp.sql
column types), and a few hundred distinct orders are cycled so serials and amounts differ.

    .venv/bin/python bench/invoice_bench.py [-n 20000] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.config import DocumentConfig, load_config
from syncd.identity import DocumentKind, serial_for
from syncd.invoice.from_erp import build_blue
from syncd.pipeline.intake import _payload
from syncd.rules.decide import identity_of

ROOT = Path(__file__).resolve().parents[1]
BUYER_TAX_ID = "91110108MA01ABCD2H"
DISTINCT_ORDERS = 500
PROFILE_SORT = "cumulative"

Order = tuple[ChangeEvent, dict[str, Any], list[dict[str, Any]]]


def order(order_id: int) -> Order:
    """The CONFIRMED update of one order and its two lines, typed as the decoder gives them."""
    row: dict[str, Any] = {
        "id": order_id,
        "order_no": f"BTAG-{order_id:07d}",
        "customer_id": None,
        "status": "CONFIRMED",
        "order_date": date(2026, 11, 27),
        "currency": "CNY",
        "invoice_type": "ORDINARY",
        "price_includes_tax": False,
        "buyer_name": "Buyer Ltd.",
        "buyer_tax_id": BUYER_TAX_ID,
        "buyer_address": None,
        "buyer_phone": None,
        "buyer_bank_name": None,
        "buyer_bank_account": None,
        "buyer_email": None,
        "total_amount": Decimal("0.00"),
        "remark": None,
        "cancel_reason": None,
        "invoice_no": None,
        "invoice_status": None,
        "invoice_error": None,
        "invoiced_at": None,
        "invoice_url": None,
        "red_invoice_no": None,
    }
    lines = []
    for line_no in (1, 2):
        quantity = Decimal(1 + order_id % 7).quantize(Decimal("0.00000001"))
        price = Decimal(10 + order_id % 900 + line_no).quantize(Decimal("0.00000001"))
        lines.append(
            {
                "id": order_id * 2 + line_no,
                "order_id": order_id,
                "line_no": line_no,
                "item_name": f"Service {line_no}",
                "tax_code": "3040201000000000000",
                "spec": None,
                "unit": "hour",
                "quantity": quantity,
                "unit_price": price,
                "tax_rate": Decimal("0.1300"),
                "discount_amount": Decimal("0.00"),
                "amount": (quantity * price).quantize(Decimal("0.01")),
            }
        )
    event = ChangeEvent(
        position=RecordPosition("erp.erp.sales_order", 0, order_id),
        op=Op.UPDATE,
        table="erp.sales_order",
        key={"id": order_id},
        before=dict(row, status="DRAFT"),
        after=row,
        source_ts_ms=1_795_821_553_219,
        snapshot=False,
    )
    return event, row, lines


def issue(doc: DocumentConfig, item: Order) -> dict[str, Any]:
    """The CPU part of `_issue` for one order: identity, invoice, serial, payload."""
    event, row, lines = item
    sid = identity_of(doc, event, DocumentKind.ISSUE, 0)
    mapped = build_blue(doc, row, lines, sid)
    serial = mapped.invoice.serial if mapped.invoice is not None else serial_for(sid)
    assert mapped.ok and mapped.invoice is not None and serial, mapped.summary()
    return _payload(mapped.invoice)


def run(count: int, profile: bool = False) -> dict[str, float]:
    doc = load_config(ROOT / "config" / "demo.yaml").documents["sales_order"]
    orders = [order(i) for i in range(1, DISTINCT_ORDERS + 1)]
    for item in orders:  # warm-up (first-call caches, imports)
        issue(doc, item)
    profiler = cProfile.Profile(time.process_time) if profile else None
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i in range(count):
        issue(doc, orders[i % DISTINCT_ORDERS])
    cpu = time.process_time() - cpu_started
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(PROFILE_SORT).print_stats(45)
    return {
        "documents": count,
        "seconds": round(elapsed, 3),
        "documents_per_second": round(count / elapsed),
        # CPU time of this process: meaningful even when other work shares the cores
        "cpu_seconds": round(cpu, 3),
        "documents_per_cpu_second": round(count / cpu),
        "cpu_us_per_document": round(cpu / count * 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--count", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile (process time) of the timed loop, to stderr",
    )
    args = parser.parse_args()
    result = run(args.count, args.profile)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"built {result['documents']} invoices (2 lines each) in {result['seconds']} s: "
            f"{result['documents_per_second']} documents/s "
            f"({result['documents_per_cpu_second']} per CPU second, "
            f"{result['cpu_us_per_document']} us CPU per document)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
