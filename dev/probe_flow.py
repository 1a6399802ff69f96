"""Stack readiness probe: commit a row change and wait until Debezium delivers it to Kafka.

`make stack-up` uses it so that "up" means "change events flow", not merely "ports open".
It touches one marker row in erp.customer (code `__STACK_PROBE__`).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import psycopg
from confluent_kafka import Consumer, KafkaError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg-port", type=int, default=15432)
    parser.add_argument("--kafka-port", type=int, default=19092)
    parser.add_argument("--topic", default="erp.erp.customer")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    token = uuid.uuid4().hex
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{args.kafka_port}",
            "group.id": f"stack-probe-{token}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    deadline = time.monotonic() + args.timeout
    # Wait for the assignment (topic may only appear with the snapshot), then commit the change.
    while not consumer.assignment():
        consumer.poll(0.5)
        if time.monotonic() > deadline:
            print(f"no assignment for {args.topic} (topic missing?)", file=sys.stderr)
            return 1
    with psycopg.connect(f"host=127.0.0.1 port={args.pg_port} dbname=erp user=postgres") as conn:
        conn.execute(
            "INSERT INTO erp.customer (code, name) VALUES ('__STACK_PROBE__', %s) "
            "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, updated_at = localtimestamp",
            (f"stack probe {token}",),
        )
    committed = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"consumer error: {msg.error()}", file=sys.stderr)
                continue
            if token.encode() in (msg.value() or b""):
                print(f"event on {args.topic} {time.monotonic() - committed:.2f} s after commit")
                return 0
    finally:
        consumer.close()
    print(f"no change event on {args.topic} within {args.timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
