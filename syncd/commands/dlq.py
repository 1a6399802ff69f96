"""`syncd dlq list|replay -c CONFIG`: inspect and replay the dead-letter topic.

`replay` reads the dead-letter topic as the consumer group `<group_id>-dlq-replay`
(committing after each record has been re-produced, so an interrupted replay resumes where
it stopped) and re-produces each record's original key, value and headers -- syncd's own
`syncd.*` headers removed -- to the topic *and partition* it came from, so per-key order
among the source's partitions is kept. Replaying twice is harmless: the ledger dedupes by
document identity, not by offset.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.commands._operator import add_reason_argument
from syncd.safetext import printable

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from syncd.config import SyncdConfig

HELP = "list or replay the dead-letter topic (after fixing what made records fail)"

POLL_TIMEOUT = 1.0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = sub.add_parser(
        "list",
        help="show dead letters: source position, error code, reason",
        description="Show dead letters from the beginning of the topic "
        "(reads only; commits nothing).",
    )
    ls.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    ls.add_argument(
        "--limit", type=int, default=100, metavar="N", help="show at most N records (default 100)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="Kafka timeouts (default 10)"
    )
    rp = sub.add_parser(
        "replay",
        help="re-produce dead letters to their source topics",
        description="Re-produce dead letters not yet replayed (group <group_id>-dlq-replay) to "
        "their source topic and partition, original key/value/headers, syncd.* headers "
        "removed.",
    )
    rp.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    rp.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="replay at most N records (default: all present when started)",
    )
    rp.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be replayed; produce and commit nothing",
    )
    rp.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="Kafka timeouts (default 10)"
    )
    rp.add_argument(
        "--json",
        action="store_true",
        help="one JSON object at the end: counts and every record (replayed or skipped)",
    )
    add_reason_argument(rp, required=False)


def replay_group(config: SyncdConfig) -> str:
    return f"{config.kafka.group_id}-dlq-replay"


@dataclass(frozen=True, slots=True)
class Letter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _headers(msg: Message) -> list[tuple[str, bytes | None]]:
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    out: list[tuple[str, bytes | None]] = []
    for item in items:
        k, v = item[0], item[1]
        out.append((str(k), v.encode() if isinstance(v, str) else v))
    return out


def _read(
    consumer: Consumer, topic: str, *, from_committed: bool, limit: int | None, timeout: float
) -> Iterator[Letter]:
    """Records from the start (or the group's committed offsets) up to the high watermarks
    seen when reading began; records arriving later are left for the next run."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        return
    parts = [KafkaTopicPartition(topic, p) for p in sorted(meta.partitions)]
    ends: dict[int, int] = {}
    starts: dict[int, int] = {}
    committed = (
        {c.partition: c.offset for c in consumer.committed(parts, timeout=timeout)}
        if from_committed
        else {}
    )
    for p in parts:
        low, high = consumer.get_watermark_offsets(p, timeout=timeout, cached=False)
        start = committed.get(p.partition, -1)
        starts[p.partition] = start if start is not None and start >= low else low
        if high > starts[p.partition]:
            ends[p.partition] = int(high)
    if not ends:
        return
    consumer.assign(
        [
            KafkaTopicPartition(topic, p, starts[p] if starts[p] >= 0 else OFFSET_BEGINNING)
            for p in sorted(ends)
        ]
    )
    done: set[int] = set()
    seen = 0
    idle = 0.0
    while len(done) < len(ends) and (limit is None or seen < limit):
        msg = consumer.poll(POLL_TIMEOUT)
        if msg is None:
            idle += POLL_TIMEOUT
            if idle > timeout:
                raise TimeoutError(
                    f"no records from {topic} for {timeout:.0f} s before "
                    "reaching the high watermark"
                )
            continue
        idle = 0.0
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                from confluent_kafka import KafkaException

                raise KafkaException(err)
            continue
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        if partition in done:
            continue
        if offset >= ends[partition]:
            done.add(partition)
            continue
        seen += 1
        yield Letter(partition, offset, msg.key(), msg.value(), _headers(msg))
        if offset + 1 >= ends[partition]:
            done.add(partition)


def _consumer(config: SyncdConfig, group: str, timeout: float) -> Consumer:
    from confluent_kafka import Consumer

    from syncd.kafka.client import operator_config

    return Consumer(
        operator_config(
            config.kafka,
            client_id="syncd-dlq",
            timeout=timeout,
            consumer=True,
            overrides={
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
        )
    )


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from syncd.commands import (
        EXIT_FAILED,
        EXIT_KAFKA,
        fail,
        is_kafka_unreachable,
        kafka_reason,
        kafka_unreachable,
        load_config_or_exit,
    )

    config = load_config_or_exit(args.config, "dlq")
    as_json = bool(args.json)
    try:
        if args.dlq_command == "list":
            return _list(config, args)
        return _replay(config, args)
    except KafkaException as exc:
        if is_kafka_unreachable(exc):
            return fail("dlq", EXIT_KAFKA, kafka_unreachable(config, exc), as_json=as_json)
        return fail("dlq", EXIT_FAILED, f"Kafka: {kafka_reason(exc)}", as_json=as_json)
    except (TimeoutError, RuntimeError) as exc:
        return fail("dlq", EXIT_FAILED, str(exc), as_json=as_json)


def describe(letter: Letter) -> dict[str, Any]:
    from syncd.kafka.deadletter import describe_dead_letter

    info = describe_dead_letter(letter.headers)
    src = info.source
    return {
        "dlq_partition": letter.partition,
        "dlq_offset": letter.offset,
        "source": f"{src.topic}[{src.partition}]@{src.offset}" if src else None,
        "code": info.code and printable(info.code, 64),
        "reason": info.reason and printable(info.reason),
        "failed_at": info.failed_at and printable(info.failed_at, 64),
        "key_bytes": len(letter.key or b""),
        "value_bytes": len(letter.value or b""),
        "excerpt": excerpt(letter.value),
    }


#: Characters of a dead letter's value shown by `syncd dlq list`.
EXCERPT_CHARS = 120


def excerpt(value: bytes | None, limit: int = EXCERPT_CHARS) -> str | None:
    """The start of a record's bytes as printable text: undecodable bytes and control
    characters escaped, clipped (the record itself stays untouched in the topic)."""
    if value is None:
        return None
    head = value[: limit * 4].decode("utf-8", "backslashreplace")
    text = printable(head[:limit], limit)
    return text + "..." if len(head) > limit or len(value) > limit * 4 else text


def _list(config: SyncdConfig, args: argparse.Namespace) -> int:
    import uuid

    topic = config.kafka.dead_letter_topic
    # A throw-away group: listing never moves the replay group's position.
    consumer = _consumer(config, f"syncd-dlq-list-{uuid.uuid4().hex[:8]}", args.timeout)
    n = 0
    try:
        for letter in _read(
            consumer, topic, from_committed=False, limit=args.limit, timeout=args.timeout
        ):
            d = describe(letter)
            n += 1
            if args.json:
                print(json.dumps(d))
            else:
                print(
                    f"{topic}[{d['dlq_partition']}]@{d['dlq_offset']}  from {d['source']}  "
                    f"{d['failed_at'] or '-'}  [{d['code']}] {d['reason']}\n"
                    f"    value ({d['value_bytes']} bytes): {d['excerpt']}"
                )
    finally:
        consumer.close()
    if not args.json:
        print(f"{n} dead letter(s) shown" if n else f"no dead letters in {topic}")
    return 0


def _replay(config: SyncdConfig, args: argparse.Namespace) -> int:
    from confluent_kafka import Producer
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    from syncd.kafka.client import operator_config
    from syncd.kafka.deadletter import describe_dead_letter, strip_syncd_headers

    topic = config.kafka.dead_letter_topic
    group = replay_group(config)
    if not args.dry_run and not str(args.reason or "").strip():
        from syncd.commands import EXIT_USAGE, fail

        return fail(
            "dlq replay",
            EXIT_USAGE,
            "--reason TEXT is required for a replay (it is recorded in the audit trail)",
            as_json=bool(args.json),
            details={"reason": "usage"},
        )
    consumer = _consumer(config, group, args.timeout)
    audited = None
    if not args.dry_run:
        try:
            # Kafka first: an unreachable broker is answered before the ledger is touched.
            consumer.list_topics(topic, timeout=args.timeout)
            audited = _ReplayAudit(config, args)
        except BaseException:
            consumer.close()
            raise
        if audited.failed is not None:
            consumer.close()
            return audited.failed
    producer = Producer(
        operator_config(
            config.kafka,
            client_id="syncd-dlq-replay",
            timeout=args.timeout,
            overrides={"enable.idempotence": True, "acks": "all"},
        )
    )
    replayed = skipped = 0
    partitions_of: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    say = (lambda _text: None) if args.json else print
    try:
        for letter in _read(
            consumer, topic, from_committed=True, limit=args.limit, timeout=args.timeout
        ):
            info = describe_dead_letter(letter.headers)
            src = info.source
            where = f"{topic}[{letter.partition}]@{letter.offset}"
            entry: dict[str, Any] = {"dlq_partition": letter.partition, "dlq_offset": letter.offset}
            records.append(entry)
            if src is None:
                skipped += 1
                entry["action"] = "skipped"
                entry["reason"] = "no syncd.source.* headers"
                say(f"skip {where}: no syncd.source.* headers, cannot tell where it came from")
            else:
                if src.topic not in partitions_of:
                    md = consumer.list_topics(src.topic, timeout=args.timeout).topics.get(src.topic)
                    ok = md is not None and md.error is None
                    partitions_of[src.topic] = len(md.partitions) if ok and md else 0
                target = src.partition if src.partition < partitions_of[src.topic] else None
                entry.update(
                    action="would_replay" if args.dry_run else "replayed",
                    source=f"{src.topic}[{src.partition}]@{src.offset}",
                    to_topic=src.topic,
                    to_partition=target,
                    code=info.code and printable(info.code, 64),
                )
                say(
                    f"{'would replay' if args.dry_run else 'replay'} {where} -> {src.topic}"
                    f"[{target if target is not None else 'by key'}]  "
                    f"(was {src.topic}[{src.partition}]@{src.offset}: [{info.code}] "
                    f"{info.reason})"
                )
                if not args.dry_run:
                    kwargs: dict[str, Any] = {}
                    if target is not None:
                        kwargs["partition"] = target
                    headers: list[tuple[str, str | bytes | None]] = list(
                        strip_syncd_headers(letter.headers)
                    )
                    producer.produce(
                        src.topic, key=letter.key, value=letter.value, headers=headers, **kwargs
                    )
                    if producer.flush(args.timeout) != 0:
                        raise RuntimeError(
                            f"{where}: not delivered to {src.topic} within "
                            f"{args.timeout:.0f} s; nothing committed for it"
                        )
                replayed += 1
            if not args.dry_run:
                consumer.commit(
                    offsets=[KafkaTopicPartition(topic, letter.partition, letter.offset + 1)],
                    asynchronous=False,
                )
    finally:
        producer.flush(args.timeout)
        consumer.close()
        if audited is not None:
            audited.done(replayed, skipped, records)
    verb = "would replay" if args.dry_run else "replayed"
    if args.json:
        from syncd.commands import emit_json

        emit_json(
            {
                "ok": True,
                "dry_run": bool(args.dry_run),
                "replayed": replayed,
                "skipped": skipped,
                "group": group,
                "records": records,
            }
        )
    else:
        print(f"{verb} {replayed} record(s), skipped {skipped} (group {group})")
    return 0


class _ReplayAudit:
    """The audit rows of a replay: one before anything is re-produced (no replay without
    its audit row: an unreachable ledger stops the replay), one with what was done."""

    def __init__(self, config: SyncdConfig, args: argparse.Namespace) -> None:
        from syncd.commands._operator import actor, operator_from

        self._config = config
        self.failed: int | None = None
        self._actor = actor()
        self._operator = operator_from(args)
        self._write(
            "dlq replay requested",
            {"topic": config.kafka.dead_letter_topic, "limit": args.limit},
            json_errors=bool(args.json),
            consequence="nothing replayed",
        )

    def done(self, replayed: int, skipped: int, records: list[dict[str, Any]]) -> None:
        self._write(
            "dlq replay done",
            {
                "topic": self._config.kafka.dead_letter_topic,
                "replayed": replayed,
                "skipped": skipped,
                "records": [
                    {k: r.get(k) for k in ("dlq_partition", "dlq_offset", "action", "source")}
                    for r in records[:1000]
                ],
            },
            json_errors=False,
            consequence="the replay happened; its outcome is not in the audit trail",
        )

    def _write(
        self, what: str, details: dict[str, Any], *, json_errors: bool, consequence: str
    ) -> None:
        from sqlalchemy.exc import DBAPIError

        from syncd.commands import (
            EXIT_DATABASE,
            EXIT_FAILED,
            database_reason,
            database_unreachable,
            fail,
            is_connection_error,
        )
        from syncd.ledger.audit import record_action
        from syncd.ledger.engine import ledger_engine

        engine = ledger_engine(
            self._config.database.dsn_value(),
            self._config.database.schema_name,
            pool_size=1,
            max_overflow=0,
        )
        try:
            with engine.begin() as conn:
                record_action(
                    conn, what, actor=self._actor, operator=self._operator, details=details
                )
        except DBAPIError as exc:
            if is_connection_error(exc):
                code, message = EXIT_DATABASE, database_unreachable(self._config, exc)
            else:
                code, message = EXIT_FAILED, f"database error: {database_reason(exc)}"
            self.failed = fail(
                "dlq replay",
                code,
                f"cannot write the audit row ({message}); {consequence}",
                as_json=json_errors,
                details={"reason": "audit"},
            )
        finally:
            engine.dispose()
