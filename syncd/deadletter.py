"""Dead letters: records syncd cannot act on go to a topic, bytes untouched, reasons in headers.

The consumer keeps flowing; an operator fixes the cause (config, connector) and replays the
topic with `syncd dlq replay`. Header names are part of the contract (docs/operations).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from syncd.changes import RecordPosition

H_ERROR: Final = "syncd.error"
H_CODE: Final = "syncd.error.code"
H_TOPIC: Final = "syncd.source.topic"
H_PARTITION: Final = "syncd.source.partition"
H_OFFSET: Final = "syncd.source.offset"
H_AT: Final = "syncd.failed.at"

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
        (H_ERROR, reason.encode("utf-8", "replace")[:4000]),
        (H_CODE, code.encode()),
        (H_TOPIC, position.topic.encode()),
        (H_PARTITION, str(position.partition).encode()),
        (H_OFFSET, str(position.offset).encode()),
        (H_AT, (now or datetime.now(UTC)).isoformat().encode()),
    ]
    return headers


def source_of(headers: Sequence[tuple[str, bytes | None]] | None) -> RecordPosition | None:
    """The original position a dead letter came from (for replay)."""
    found = {k: (v or b"").decode() for k, v in (headers or []) if k.startswith("syncd.source.")}
    try:
        return RecordPosition(found[H_TOPIC], int(found[H_PARTITION]), int(found[H_OFFSET]))
    except (KeyError, ValueError):
        return None
