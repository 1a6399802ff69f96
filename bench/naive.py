"""The naive baseline: what a user writes without syncd.

A plain confluent-kafka loop that, for every Debezium event of the order table, decides
whether the order just became CONFIRMED, reads its lines, builds the invoice, calls the
invoice API, polls until the invoice is issued, writes it back into the ERP row and commits
the Kafka offset -- one document at a time, waiting for every call in turn. It reuses
syncd's decoder, mapping and API client so that it does exactly the same work per
document; only the concurrency model differs (none). No exactly-once machinery either.

    python bench/naive.py --config CONFIG --offsets '{"0": 123, ...}' --seconds 20 \
        --expect 400
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTP
from sqlalchemy import create_engine

from syncd.changes import RecordPosition
from syncd.config import load_config
from syncd.erp.lines import load_lines
from syncd.erp.writeback import ResultStatus, WriteBack, apply_writeback, writeback_values
from syncd.identity import DocumentKind, serial_for
from syncd.invoice.from_erp import build_blue
from syncd.issuers.base import Issued, Processing
from syncd.issuers.registry import create_issuer
from syncd.pipeline.classify import Classifier, Kind
from syncd.rules.decide import identity_of


def main() -> int:
    parser = argparse.ArgumentParser(description="sequential confluent-kafka baseline")
    parser.add_argument("--config", required=True, help="a syncd config (topics, DSN, issuer)")
    parser.add_argument("--offsets", required=True, help='JSON {"partition": start offset}')
    parser.add_argument("--seconds", type=float, default=20.0, help="stop after this long")
    parser.add_argument("--expect", type=int, default=0, help="stop after this many documents")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.05,
        help="sleep between status queries of a processing invoice",
    )
    args = parser.parse_args()
    config = load_config(args.config)
    doc = next(iter(config.documents.values()))
    topic = config.topics()[0]
    classifier = Classifier(config)
    issuer = create_issuer(
        config.primary_issuer.provider, config.primary_issuer.provider_settings()
    )
    engine = create_engine(config.database.dsn_value(), pool_size=1)
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": config.kafka.group_id,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([KafkaTP(topic, int(p), int(o)) for p, o in json.loads(args.offsets).items()])
    done = 0
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline and (args.expect <= 0 or done < args.expect):
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            c = classifier.classify(
                RecordPosition(topic, msg.partition() or 0, msg.offset() or 0),
                msg.key(),
                msg.value(),
            )
            if c.kind is Kind.ISSUE and c.event is not None:
                row = c.event.after or {}
                sid = identity_of(doc, c.event, DocumentKind.ISSUE, 0)
                with engine.begin() as conn:
                    lines = load_lines(conn, doc, row.get("id"))
                mapped = build_blue(doc, row, lines, sid)
                assert mapped.invoice is not None, mapped.summary()
                payload = mapped.invoice.model_dump(mode="json")
                result = issuer.issue(payload)
                while isinstance(result, Processing):
                    time.sleep(args.poll_interval)
                    result = issuer.query(serial_for(sid))
                if isinstance(result, Issued):
                    wb = WriteBack(
                        ResultStatus.ISSUED, invoice_no=result.invoice_no, issued_at=None
                    )
                    assert writeback_values(doc, wb)
                    with engine.begin() as conn:
                        apply_writeback(conn, doc, {"id": row.get("id")}, wb)
                    done += 1
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
        issuer.close()
        engine.dispose()
    print(json.dumps({"documents": done}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
