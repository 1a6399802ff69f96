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
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
                raise RuntimeError(f"reading {topic}: {err}")
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


def _consumer(config: SyncdConfig, group: str) -> Consumer:
    import logging

    from confluent_kafka import Consumer

    return Consumer(
        {
            **config.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "client.id": "syncd-dlq",
        },
        logger=logging.getLogger("syncd.kafka"),
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit

    config = load_config_or_exit(args.config, "dlq")
    try:
        if args.dlq_command == "list":
            return _list(config, args)
        return _replay(config, args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"syncd dlq: {exc}", file=sys.stderr)
        return 1


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
    consumer = _consumer(config, f"syncd-dlq-list-{uuid.uuid4().hex[:8]}")
    n = 0
    try:
        for letter in _read(consumer, topic, from_committed=False, limit=args.limit, timeout=10.0):
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
    import logging

    from confluent_kafka import KafkaException, Producer
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    from syncd.kafka.deadletter import describe_dead_letter, strip_syncd_headers

    topic = config.kafka.dead_letter_topic
    group = replay_group(config)
    consumer = _consumer(config, group)
    producer = Producer(
        {
            **config.kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "client.id": "syncd-dlq-replay",
        },
        logger=logging.getLogger("syncd.kafka"),
    )
    replayed = skipped = 0
    partitions_of: dict[str, int] = {}
    try:
        for letter in _read(
            consumer, topic, from_committed=True, limit=args.limit, timeout=args.timeout
        ):
            info = describe_dead_letter(letter.headers)
            src = info.source
            where = f"{topic}[{letter.partition}]@{letter.offset}"
            if src is None:
                skipped += 1
                print(f"skip {where}: no syncd.source.* headers, cannot tell where it came from")
            else:
                if src.topic not in partitions_of:
                    md = consumer.list_topics(src.topic, timeout=args.timeout).topics.get(src.topic)
                    ok = md is not None and md.error is None
                    partitions_of[src.topic] = len(md.partitions) if ok and md else 0
                target = src.partition if src.partition < partitions_of[src.topic] else None
                print(
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
    except KafkaException as exc:
        print(f"syncd dlq: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.flush(args.timeout)
        consumer.close()
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {replayed} record(s), skipped {skipped} (group {group})")
    return 0
