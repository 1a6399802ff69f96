"""`syncd status -c CONFIG [--json]`: what the ledger, the partitions and the dead letters say.

Read-only and safe while the daemon runs: plain SELECTs on the ledger, watermark and
committed-offset look-ups in Kafka (the consumer never subscribes, so it never joins the
daemon's group).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import SyncdConfig
    from syncd.ledger.models import DocumentRow

HELP = "ledger counts, stuck and parked documents, partition lag and leases, dead letters"

PARKED_LIMIT = 100


@dataclass(slots=True)
class DocumentLine:
    id: int
    document: str
    key: str
    kind: str
    revision: int
    serial: str
    state: str
    attempts: int
    last_error_code: str | None
    last_error: str | None
    updated_at: str
    next_attempt_at: str | None


@dataclass(slots=True)
class PartitionLine:
    topic: str
    partition: int
    stored_offset: int | None
    kafka_committed: int | None
    high_watermark: int | None
    lag: int | None
    lease_owner: str | None
    lease_epoch: int | None


@dataclass(slots=True)
class DeadLetterTopic:
    topic: str
    exists: bool
    messages: int | None


@dataclass(slots=True)
class StatusReport:
    group: str
    schema: str
    stuck_after_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    stuck: list[DocumentLine] = field(default_factory=list)
    parked: list[DocumentLine] = field(default_factory=list)
    partitions: list[PartitionLine] = field(default_factory=list)
    dead_letter: DeadLetterTopic | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = sum(self.counts.values())
        return data


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a non-terminal document not updated for this long is stuck (default 300)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--kafka-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="timeout of each Kafka look-up (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit

    config = load_config_or_exit(args.config, "status")
    report = collect(config, stuck_after=args.stuck_after, kafka_timeout=args.kafka_timeout)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(report))
    return 1 if report.errors else 0


# --------------------------------------------------------------------------- collecting


def _line(row: DocumentRow) -> DocumentLine:
    return DocumentLine(
        id=row.id,
        document=row.identity.document_type,
        key=row.identity.source_key,
        kind=row.kind.value,
        revision=row.identity.revision,
        serial=row.serial,
        state=row.state.value,
        attempts=row.attempts,
        last_error_code=row.last_error_code,
        last_error=row.last_error,
        updated_at=_iso(row.updated_at),
        next_attempt_at=_iso(row.next_attempt_at) if row.next_attempt_at else None,
    )


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def collect(config: SyncdConfig, *, stuck_after: float, kafka_timeout: float = 5.0) -> StatusReport:
    """Gather everything; a part that cannot be read becomes an entry in `errors`."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from syncd.ledger import repository as repo
    from syncd.ledger.engine import ledger_engine
    from syncd.ledger.models import TopicPartition
    from syncd.lifecycle import DocumentState

    group = config.kafka.group_id
    report = StatusReport(
        group=group, schema=config.database.schema_name, stuck_after_seconds=stuck_after
    )
    kafka = _kafka_view(config, kafka_timeout, report)
    tps = [TopicPartition(t, p) for t, p in sorted(kafka)]
    stored: dict[TopicPartition, int] = {}
    leases: dict[TopicPartition, tuple[int, str | None]] = {}
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        with engine.connect() as conn:
            report.counts = {s.value: n for s, n in repo.count_by_state(conn).items()}
            report.stuck = [
                _line(r)
                for r in repo.stuck_documents(
                    conn, timedelta(seconds=stuck_after), limit=PARKED_LIMIT
                )
            ]
            report.parked = [
                _line(r)
                for r in repo.documents_in_states(
                    conn, [DocumentState.DEAD, DocumentState.BLOCKED], limit=PARKED_LIMIT
                )
            ]
            stored = repo.load_offsets(conn, group, tps)
            leases = repo.lease_epochs(conn, group, tps)
    except (OperationalError, DBAPIError) as exc:
        report.errors.append(f"ledger: {type(exc).__name__}: {exc.orig}")
    finally:
        engine.dispose()
    for tp in tps:
        high, committed = kafka[(tp.topic, tp.partition)]
        position = stored.get(tp)
        base = position if position is not None else committed
        lag = None
        if high is not None:
            lag = max(0, high - base) if base is not None else high
        lease = leases.get(tp)
        report.partitions.append(
            PartitionLine(
                tp.topic,
                tp.partition,
                position,
                committed,
                high,
                lag,
                lease[1] if lease else None,
                lease[0] if lease else None,
            )
        )
    return report


def _kafka_view(
    config: SyncdConfig, timeout: float, report: StatusReport
) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """(topic, partition) -> (high watermark, Kafka committed offset of the group)."""
    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    out: dict[tuple[str, int], tuple[int | None, int | None]] = {}
    consumer = Consumer(
        {
            **config.kafka.client_config(),
            "group.id": config.kafka.group_id,
            "enable.auto.commit": False,
            "client.id": "syncd-status",
        }
    )
    dlq = config.kafka.dead_letter_topic
    try:
        md = consumer.list_topics(timeout=timeout)
        for topic in config.topics():
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                report.warnings.append(f"kafka: topic {topic} does not exist (yet)")
                continue
            parts = [KafkaTopicPartition(topic, p) for p in sorted(meta.partitions)]
            committed = {
                (c.topic, c.partition): c.offset for c in consumer.committed(parts, timeout=timeout)
            }
            for p in parts:
                _low, high = consumer.get_watermark_offsets(p, timeout=timeout, cached=False)
                c = committed.get((p.topic, p.partition))
                out[(p.topic, p.partition)] = (
                    int(high),
                    int(c) if c is not None and c >= 0 else None,
                )
        meta = md.topics.get(dlq)
        if meta is None or meta.error is not None:
            report.dead_letter = DeadLetterTopic(dlq, False, 0)
        else:
            total = 0
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    KafkaTopicPartition(dlq, p), timeout=timeout, cached=False
                )
                total += int(high) - int(low)
            report.dead_letter = DeadLetterTopic(dlq, True, total)
    except KafkaException as exc:
        report.errors.append(f"kafka: {exc}")
    finally:
        consumer.close()
    return out


# --------------------------------------------------------------------------- rendering


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join("  " + line for line in lines) + "\n"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _doc_rows(docs: list[DocumentLine]) -> list[list[str]]:
    return [
        [
            str(d.id),
            d.document,
            d.key,
            f"{d.kind}/r{d.revision}",
            d.serial,
            d.state,
            str(d.attempts),
            d.updated_at,
            _short(f"[{d.last_error_code}] {d.last_error}" if d.last_error else None),
        ]
        for d in docs
    ]


DOC_HEADERS = ["ID", "DOCUMENT", "KEY", "KIND", "SERIAL", "STATE", "ATT", "UPDATED", "LAST ERROR"]


def render_text(report: StatusReport) -> str:
    out = [f"syncd status  (group {report.group}, ledger schema {report.schema})\n\n"]
    total = sum(report.counts.values())
    out.append(f"Documents by state ({total} total):\n")
    nonzero = [[s, str(n)] for s, n in report.counts.items() if n]
    out.append(_table(["STATE", "COUNT"], nonzero) if nonzero else "  (none)\n")
    out.append(
        f"\nStuck (not terminal, untouched for {report.stuck_after_seconds:.0f} s): "
        f"{len(report.stuck)}\n"
    )
    if report.stuck:
        out.append(_table(DOC_HEADERS, _doc_rows(report.stuck)))
    out.append(
        f"\nDead / blocked (need an operator; `syncd retry --document ID`): {len(report.parked)}\n"
    )
    if report.parked:
        out.append(_table(DOC_HEADERS, _doc_rows(report.parked)))
    out.append("\nPartitions:\n")
    if report.partitions:
        out.append(
            _table(
                [
                    "TOPIC",
                    "PART",
                    "STORED",
                    "KAFKA COMMITTED",
                    "HIGH",
                    "LAG",
                    "LEASE OWNER",
                    "EPOCH",
                ],
                [
                    [
                        p.topic,
                        str(p.partition),
                        _opt(p.stored_offset),
                        _opt(p.kafka_committed),
                        _opt(p.high_watermark),
                        _opt(p.lag),
                        p.lease_owner or "-",
                        _opt(p.lease_epoch),
                    ]
                    for p in report.partitions
                ],
            )
        )
    else:
        out.append("  (none found)\n")
    if report.dead_letter is not None:
        d = report.dead_letter
        size = f"{d.messages} record(s)" if d.exists else "does not exist yet (no dead letters)"
        out.append(f"\nDead-letter topic {d.topic}: {size}\n")
    if report.warnings:
        out.append("\nNotes:\n" + "".join(f"  {w}\n" for w in report.warnings))
    if report.errors:
        out.append("\nProblems:\n" + "".join(f"  {e}\n" for e in report.errors))
    return "".join(out)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)
