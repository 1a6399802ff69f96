"""Text that came from a record, made safe to show: bounded in size, always valid UTF-8.

A crafted record can carry megabytes of text, control characters that rewrite a terminal,
or unpaired surrogates (valid in a JSON escape, unencodable as UTF-8: a log handler or a
Kafka header that meets one raises). Everything syncd shows of a record or of an exception
it raised -- dead-letter reasons, log lines, CLI output -- passes through here.
"""

from __future__ import annotations

import re
from typing import Final, TextIO

#: Longest reason text kept for a dead letter (header, log line, `syncd dlq list`).
REASON_LIMIT: Final = 500

_UNPRINTABLE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str, limit: int = REASON_LIMIT) -> str:
    """`text` clipped to `limit` characters, control characters and unpaired surrogates
    escaped: safe for a log line, a Kafka header and any UTF-8 terminal."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return _UNPRINTABLE.sub(_escape, text)


def reason_of(exc: BaseException, limit: int = REASON_LIMIT) -> str:
    """`Type: message` of an exception, bounded and printable; the driver's own words for a
    database error (not SQLAlchemy's wrapper with the statement and its parameters)."""
    inner = getattr(exc, "orig", None) or exc
    try:
        message = str(inner)[: limit * 4].strip()
    except Exception:  # a broken __str__ must not hide the failure behind another
        message = ""
    first = message.splitlines()[0] if message else ""
    name = type(inner).__name__
    return printable(f"{name}: {first}" if first else name, limit)


def write_utf8(stream: TextIO, text: str) -> None:
    """Write `text` as UTF-8 whatever the stream's own encoding, unpaired surrogates as
    JSON-style escapes (valid inside a JSON string, where they can only occur)."""
    data = _SURROGATE.sub(_escape, text).encode("utf-8")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (a test's StringIO)
        stream.write(data.decode("utf-8"))
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
