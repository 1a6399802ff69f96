"""Dead letters: records syncd cannot act on go to a topic, bytes untouched, reasons in headers.

The consumer keeps flowing; an operator fixes the cause (config, connector) and replays the
topic with `syncd dlq replay`. Header names are part of the contract (docs/operations).

Invariant: a dead letter carries the record exactly as consumed (key, value, original
headers) plus syncd's `syncd.*` headers, and the loop learns whether every dead letter it
sent is durable before it stores the records' offsets (`DeadLetterProducer.flush`): an
offset stored past a dead letter that never arrived would lose the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from syncd.changes import RecordPosition
from syncd.safetext import printable

if TYPE_CHECKING:
    from confluent_kafka import Producer

H_ERROR: Final = "syncd.error"
H_CODE: Final = "syncd.error.code"
H_TOPIC: Final = "syncd.source.topic"
H_PARTITION: Final = "syncd.source.partition"
H_OFFSET: Final = "syncd.source.offset"
H_AT: Final = "syncd.failed.at"
#: Every header syncd adds starts with this; replay strips them so the record goes back
#: exactly as the connector produced it.
SYNCD_PREFIX: Final = "syncd."

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    position: RecordPosition,
    code: str,
    reason: str,
    original: Sequence[tuple[str, bytes | None]] | None = None,
    now: datetime | None = None,
) -> Headers:
    """The original headers first, then syncd's own (which name the error and the source)."""
    headers: Headers = [(k, v or b"") for k, v in (original or [])]
    headers += [
        (H_ERROR, printable(reason, 2000).encode("utf-8")),
        (H_CODE, code.encode()),
        (H_TOPIC, position.topic.encode()),
        (H_PARTITION, str(position.partition).encode()),
        (H_OFFSET, str(position.offset).encode()),
        (H_AT, (now or datetime.now(UTC)).isoformat().encode()),
    ]
    return headers


def headers_of(headers: object) -> list[tuple[str, bytes | None]]:
    """A consumed message's headers (`Message.headers()`: a list, a dict or None) as a list."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    out: list[tuple[str, bytes | None]] = []
    for k, v in items:  # type: ignore[attr-defined]
        out.append((str(k), v.encode() if isinstance(v, str) else v))
    return out


class DeadLetterProducer:
    """Produces dead letters to one topic; `flush` says whether every one of them arrived.

    Takes a confluent_kafka Producer (configured by `syncd.kafka.client`) and owns it.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def send(
        self,
        position: RecordPosition,
        code: str,
        reason: str,
        key: bytes | None,
        value: bytes | None,
        original: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> None:
        """Queue one dead letter: the record's bytes untouched, the reason in headers."""
        self._producer.produce(
            self._topic,
            key=key,
            value=value,
            headers=list(dead_letter_headers(position, code, reason, original)),
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait for the queued dead letters; True once all are acknowledged."""
        remaining = self._producer.flush(timeout)
        return int(remaining) == 0

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is still queued (best effort, bounded by `timeout`)."""
        self._producer.flush(timeout)


def source_of(headers: Sequence[tuple[str, bytes | None]] | None) -> RecordPosition | None:
    """The original position a dead letter came from (for replay)."""
    found = {k: (v or b"").decode() for k, v in (headers or []) if k.startswith("syncd.source.")}
    try:
        return RecordPosition(found[H_TOPIC], int(found[H_PARTITION]), int(found[H_OFFSET]))
    except (KeyError, ValueError):
        return None


def strip_syncd_headers(
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> list[tuple[str, bytes | None]]:
    """The record's original headers: syncd's own (`syncd.*`) removed, order kept."""
    return [(k, v) for k, v in (headers or []) if not k.startswith(SYNCD_PREFIX)]


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What syncd wrote into a dead letter's headers (for `syncd dlq list/replay`)."""

    source: RecordPosition | None
    code: str | None
    reason: str | None
    failed_at: str | None


def describe_dead_letter(headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetterInfo:
    found: dict[str, str] = {}
    for k, v in headers or []:
        if k.startswith(SYNCD_PREFIX):
            # The last value wins: a record dead-lettered twice carries the newest reason.
            found[k] = (v or b"").decode("utf-8", "replace")
    return DeadLetterInfo(
        source_of(headers), found.get(H_CODE), found.get(H_ERROR), found.get(H_AT)
    )
