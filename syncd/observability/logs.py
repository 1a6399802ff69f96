"""JSON-lines logging with bound document context and redaction.

* One handler on the root logger writes one JSON object per line to stdout (or, with
  `logging.json: false`, one readable text line); the libraries' loggers (librdkafka via
  confluent-kafka, SQLAlchemy, Alembic, httpx, uvicorn) propagate to it, so every line has
  the same shape. `level` is Python's level name in capitals: `INFO`, `WARNING`, `ERROR`.
* librdkafka's own log lines reach the `syncd.kafka` logger (`kafka_logger()`, passed as
  the clients' `logger`), rate-limited: a broker that is down makes librdkafka repeat the
  same `FAIL` line every few milliseconds; one line per minute, with the count of the
  ones left out, says the same.
* `bind(topic=..., partition=..., offset=..., table=..., key=..., serial=...)` puts
  context into a contextvar; every record logged inside the block carries it, so the
  pipeline does not have to repeat it at each call.
* `RedactionFilter` sits on the handler (it sees records of every logger): values under
  secret-looking keys are replaced, registered secret values are scrubbed from any text,
  credentials in URLs and bearer tokens are masked, and buyer tax IDs are shortened to
  `9131********8E` -- enough to find the customer, not enough to copy the ID.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "syncd_log_context",
    default={},  # noqa: B039 - never mutated, always replaced
)

#: Keys the pipeline binds; others are allowed too.
CONTEXT_KEYS: Final = ("topic", "partition", "offset", "table", "document", "key", "serial")

# LogRecord attributes that are not "extra" fields.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}
_RESERVED: Final = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})

#: Loggers of libraries routed through our handler (their own handlers are removed).
ROUTED_LOGGERS: Final[Mapping[str, int]] = {
    "librdkafka": logging.INFO,
    "confluent_kafka": logging.INFO,
    "sqlalchemy": logging.WARNING,  # INFO echoes SQL with parameters: personal data
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.WARNING,
    "alembic": logging.INFO,
    "httpx": logging.WARNING,  # INFO logs every request line
    "httpcore": logging.WARNING,
    "uvicorn": logging.INFO,
    "uvicorn.error": logging.INFO,
    "uvicorn.access": logging.WARNING,
    "py.warnings": logging.WARNING,
    "syncd.kafka": logging.NOTSET,  # librdkafka through `kafka_logger()`: the root's level
}


# ------------------------------------------------------------------------------ context


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every record logged in this block (and tasks/threads started with a
    copy of this context). Nested binds merge; `None` values are dropped."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bound() -> Mapping[str, Any]:
    """The fields currently bound (a read-only snapshot)."""
    return dict(_context.get())


# ------------------------------------------------------------------------------ redaction

MASK: Final = "***"
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key|"
    r"cookie|signature",
    re.IGNORECASE,
)
_TAX_ID_KEY = re.compile(r"tax[_-]?(id|no|number)|vat[_-]?(id|no)|\bnid\b", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_KV_SECRET = re.compile(
    r"(?P<k>\b(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|client[_-]?secret)\b"
    r"[\"']?\s*[=:]\s*[\"']?)(?P<v>[^\s\"',;&}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Unified social credit code (18 chars), 18-digit resident ID numbers, 15-digit legacy tax
# IDs. (Not 20 digits: that is what fully digital invoice numbers look like.)
_TAX_ID_TEXT = re.compile(
    r"(?<![A-Za-z0-9])(?:[0-9A-HJ-NP-RTUW-Y]{2}\d{6}[0-9A-HJ-NP-RTUW-Y]{10}|\d{17}[0-9Xx]"
    r"|\d{15})(?![A-Za-z0-9])"
)
#: Values under these keys are identifiers we need to see; only registered secrets are
#: scrubbed from them (a serial can look like a tax ID).
_PLAIN_KEYS: Final = frozenset(
    {
        "serial",
        "invoice_no",
        "topic",
        "partition",
        "offset",
        "table",
        "document",
        "logger",
        "consumer_group",
        "group",
    }
)

_secrets_lock = threading.Lock()
#: Longest first, so a secret that contains another is masked whole. Replaced (never
#: mutated) under the lock; readers take the current tuple without it.
_secret_values: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Scrub this exact value from every log line from now on (API keys, DB passwords).

    Values shorter than 4 characters are ignored: masking them would mangle normal text.
    """
    if value and len(value) >= 4:
        global _secret_values
        with _secrets_lock:
            _secret_values = tuple(sorted({*_secret_values, value}, key=len, reverse=True))


def mask_tax_id(value: str) -> str:
    """`91310115MA1K4PLN8E` -> `9131********8E` (fixed width: the length is not leaked)."""
    v = value.strip()
    if len(v) <= 6:
        return MASK
    return f"{v[:4]}********{v[-2:]}"


def _scrub_secrets(text: str) -> str:
    for s in _secret_values:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_text(text: str) -> str:
    text = _scrub_secrets(text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KV_SECRET.sub(lambda m: f"{m['k']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _TAX_ID_TEXT.sub(lambda m: mask_tax_id(m.group(0)), text)


_SECRET, _TAX_ID, _PLAIN, _ANY = range(4)


#: key -> its rule (`_key_rule`); a plain dict, read on every value of every line
_rules: dict[str, int] = {}


def _key_rule(key: str) -> int:
    """How values under `key` are redacted (keys repeat on every line: decided once)."""
    rule = _rules.get(key)
    if rule is None:
        if _SECRET_KEY.search(key):
            rule = _SECRET
        elif _TAX_ID_KEY.search(key):
            rule = _TAX_ID
        else:
            rule = _PLAIN if key in _PLAIN_KEYS else _ANY
        if len(_rules) < 4096:  # keys of log records are few; never grow without bound
            _rules[key] = rule
    return rule


def redact_value(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """Redact a value found under `key` (recursing into mappings and sequences)."""
    if _depth > 8:
        return MASK
    if key is not None:
        rule = _key_rule(key)
        if rule == _PLAIN:
            kind = type(value)
            if kind is str:
                return _scrub_secrets(value) if _secret_values else value
            if kind is int or isinstance(value, int | str):
                return _scrub_secrets(value) if isinstance(value, str) else value
        elif rule == _SECRET and value not in (None, ""):
            return MASK
        elif rule == _TAX_ID and isinstance(value, str) and value:
            return mask_tax_id(value)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, key, _depth + 1) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact_text(str(value))


class RedactionFilter(logging.Filter):
    """Rewrites each record in place before any formatter sees it; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not hide the record (or crash logging)
            message = f"{record.msg!r} (unformattable args)"
        record.msg = redact_text(message)
        record.args = None
        for k, v in list(vars(record).items()):
            if k not in _RECORD_ATTRS:
                setattr(record, k, redact_value(v, k))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        record.exc_info = None  # the redacted text replaces the raw traceback
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


# ------------------------------------------------------------------------------ format


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, bound context, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _context.get().items():
            if k not in _RESERVED:
                out[k] = redact_value(v, k)
        for k, v in vars(record).items():
            if k not in _RECORD_ATTRS and k not in _RESERVED:
                out[k] = v
        exc = record.exc_text
        if record.exc_info and not exc:
            exc = redact_text(self.formatException(record.exc_info))
        if exc:
            out["exc"] = exc
        if record.stack_info:
            out["stack"] = record.stack_info
        return _json_line(out)


#: orjson for the line (a log line per settled document; ~5x faster than `json.dumps`),
#: with the same output: dates, dataclasses and unknown types go through `str` exactly as
#: `json.dumps(default=str)` sends them; what orjson refuses (integers beyond 64 bits,
#: non-string keys) takes the `json` path.
_ORJSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _json_line(out: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(out, default=str, option=_ORJSON_OPTIONS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


_second_text: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """`2026-12-03T21:29:04.626Z`: the second's text is made once per second."""
    global _second_text
    # rounded to the microsecond as `datetime.fromtimestamp` rounds, then cut to the ms
    fraction, whole = math.modf(created)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    cached = _second_text
    if cached[0] != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _second_text = (second, text)
    return f"{cached[1]}.{micros // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`logging.json: false`: `ts LEVEL logger: msg key=value ...` for a person reading a
    terminal; the same fields as the JSON line, the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        ts = (
            datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        fields: dict[str, Any] = {
            k: redact_value(v, k) for k, v in _context.get().items() if k not in _RESERVED
        }
        fields.update(
            (k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS and k not in _RESERVED
        )
        extra = "".join(f" {k}={_text_value(v)}" for k, v in fields.items())
        line = f"{ts} {record.levelname} {record.name}: {record.getMessage()}{extra}"
        exc = record.exc_text
        if record.exc_info and not exc:
            exc = redact_text(self.formatException(record.exc_info))
        if exc:
            line += "\n" + exc
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


class RateLimitFilter(logging.Filter):
    """Let the first record of a kind through, then at most one per `interval` seconds.

    A kind is the logger, the level and the message with its millisecond counts blanked
    (librdkafka's `(after 0ms in state CONNECT)` changes from line to line). The record
    that ends a quiet interval carries `suppressed`: how many of its kind were left out.
    """

    _NUMBERS = re.compile(r"\d+ms\b")

    def __init__(self, interval: float = 60.0, *, clock: Any = None) -> None:
        super().__init__()
        import time

        self.interval = interval
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        kind = (record.name, record.levelno, self._NUMBERS.sub("Nms", message))
        now = self._clock()
        with self._lock:
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._seen[kind] = (last[0], last[1] + 1)
                return False
            if len(self._seen) > 1000:  # many distinct messages: forget the old ones
                self._seen.clear()
            self._seen[kind] = (now, 0)
        if last is not None and last[1]:
            record.suppressed = last[1]
        return True


#: The logger librdkafka's lines go to (`kafka_logger()`; the daemon's clients use it too).
KAFKA_LOGGER: Final = "syncd.kafka"
#: Seconds between two librdkafka lines of the same kind.
KAFKA_LOG_INTERVAL: Final = 60.0

_HANDLER_MARK: Final = "_syncd_handler"


def _rate_limited(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter(KAFKA_LOG_INTERVAL))
    return logger


def configure_logging(
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    levels: Mapping[str, str | int] | None = None,
    json_lines: bool = True,
) -> logging.Handler:
    """Install the JSON (or, `json_lines=False`, text) handler on the root logger
    (idempotent) and route library loggers.

    `levels` overrides per-logger levels (e.g. `{"sqlalchemy.engine": "INFO"}` while
    debugging; the redaction filter still applies).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if getattr(h, _HANDLER_MARK, False):
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name, lib_level in {**ROUTED_LOGGERS, **(levels or {})}.items():
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
        lg.setLevel(lib_level if isinstance(lib_level, int) else lib_level.upper())
    _rate_limited(logging.getLogger(KAFKA_LOGGER))
    logging.captureWarnings(True)
    return handler


def configure_command_logging(*, verbose: bool = False, stream: IO[str] | None = None) -> None:
    """Logging for the operator commands (everything but `syncd run`): text lines on stderr.

    A command answers an unreachable dependency with one line of its own, so librdkafka's
    lines (rate-limited anyway) are shown only with `syncd -v`; the other libraries'
    warnings are shown always.
    """
    quiet: dict[str, str | int] = {
        name: max(level, logging.WARNING) for name, level in ROUTED_LOGGERS.items()
    }
    levels: dict[str, str | int] = {
        **(ROUTED_LOGGERS if verbose else quiet),
        KAFKA_LOGGER: logging.INFO if verbose else logging.CRITICAL,
    }
    configure_logging(
        "DEBUG" if verbose else "WARNING",
        stream=stream if stream is not None else sys.stderr,
        levels=levels,
        json_lines=False,
    )


def kafka_logger() -> logging.Logger:
    """Pass as `logger` to every confluent-kafka client, so librdkafka's log lines come
    out through syncd's handler, rate-limited, instead of raw `%3|...|FAIL|` lines on
    stderr (they are delivered from `poll()` and the blocking calls)."""
    return _rate_limited(logging.getLogger(KAFKA_LOGGER))
