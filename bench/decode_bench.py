"""Decoder throughput: one realistic erp.sales_order update, decoded N times.

The record is a DRAFT -> CONFIRMED update with schemas on and precise decimals,
shaped like Debezium 3.6.1's Postgres output (tests/unit/debezium_events.py).
Every iteration goes through `decode_record` from raw bytes, as the daemon does;
after the first record the schema is served from the plan cache. With `--decide`
each iteration runs the intake's `Classifier.classify` instead (decode + route +
decide, config/demo.yaml), which is what the consumer loop does per record.

    .venv/bin/python bench/decode_bench.py [-n 20000] [--decide] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd.changes import DecodedRecord, RecordPosition
from syncd.config import load_config
from syncd.debezium import DecodeOptions, decode_record
from syncd.pipeline.classify import Classified, Classifier
from tests.unit.debezium_events import sales_order_update

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
TOPIC = "erp.erp.sales_order"


def _step(decide: bool) -> Callable[[RecordPosition, bytes, bytes], object]:
    """decode_record alone, or the classifier's whole decode + route + decide."""
    if decide:
        classifier = Classifier(load_config(DEMO_CONFIG))

        def classify(position: RecordPosition, key: bytes, value: bytes) -> Classified:
            return classifier.classify(position, key, value)

        return classify
    options = DecodeOptions()

    def decode(position: RecordPosition, key: bytes, value: bytes) -> DecodedRecord:
        return decode_record(position, key, value, options)

    return decode


def run(count: int, decide: bool = False) -> dict[str, float]:
    key, value = sales_order_update()
    step = _step(decide)
    step(RecordPosition(TOPIC, 0, 0), key, value)  # warm-up
    started = time.perf_counter()
    cpu_started = time.process_time()
    for offset in range(count):
        step(RecordPosition(TOPIC, 0, offset), key, value)
    cpu = time.process_time() - cpu_started
    elapsed = time.perf_counter() - started
    return {
        "events": count,
        "seconds": round(elapsed, 3),
        "events_per_second": round(count / elapsed),
        # CPU time of this process: meaningful even when other work shares the cores
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_second": round(count / cpu),
        "value_bytes": len(value),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--count", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--decide", action="store_true", help="classify (decode + decide, config/demo.yaml)"
    )
    args = parser.parse_args()
    result = run(args.count, args.decide)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{'classified' if args.decide else 'decoded'} {result['events']} sales_order updates "
            f"({result['value_bytes']} bytes each) "
            f"in {result['seconds']} s: {result['events_per_second']} events/s "
            f"({result['events_per_cpu_second']} events per CPU second)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
