"""Stack readiness probe: commit a row change and wait until Debezium delivers it to Kafka.

`make stack-up` uses it so that "up" means "change events flow", not merely "ports open".
It touches one marker row: the DRAFT sales order `__STACK_PROBE__` (a draft never qualifies
for an invoice, so syncd ignores it).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg-port", type=int, default=15432)
    parser.add_argument("--kafka-port", type=int, default=19092)
    parser.add_argument("--topic", default="erp.erp.sales_order")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    token = uuid.uuid4().hex
    deadline = time.monotonic() + args.timeout
    with psycopg.connect(f"host=127.0.0.1 port={args.pg_port} dbname=erp user=postgres") as conn:
        conn.execute(
            "INSERT INTO erp.sales_order (order_no, buyer_name, remark) "
            "VALUES ('__STACK_PROBE__', 'stack probe', %s) ON CONFLICT (order_no) "
            "DO UPDATE SET remark = EXCLUDED.remark, updated_at = localtimestamp",
            (f"stack probe {token}",),
        )
    committed = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{args.kafka_port}",
            "group.id": f"stack-probe-{token}",
            "enable.auto.commit": False,
        }
    )
    # The topic only exists once Debezium has produced to it: wait for it, then read it all.
    while True:
        topic = consumer.list_topics(args.topic, timeout=5).topics.get(args.topic)
        if topic is not None and topic.error is None and topic.partitions:
            break
        if time.monotonic() > deadline:
            print(f"topic {args.topic} never appeared", file=sys.stderr)
            return 1
        time.sleep(0.5)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:  # type: ignore[union-attr]
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
