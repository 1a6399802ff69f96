"""`syncd decode`: show what syncd makes of one Kafka record, without running anything.

DBAs and SREs use it to check a connector's output (converter settings, decimal
mode, TOAST placeholders) before the daemon ever sees it.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from syncd.changes import DecodeError, RecordPosition
from syncd.debezium import DecodeOptions, decode_json, record_to_json
from syncd.debezium.limits import DEFAULT_LIMITS
from syncd.debezium.options import DEFAULT_HEARTBEAT_TOPIC_PREFIX, DEFAULT_TRANSACTION_TOPIC_SUFFIX
from syncd.safetext import printable, reason_of, write_utf8

HELP = "decode one Debezium Kafka record (JSON) and print the typed result as JSON"

_EPILOG = """\
input: one JSON object {"topic", "partition", "offset", "key", "value"} where key and
value are the record's JSON documents exactly as on the wire (or null).
output: one JSON object with "kind" (change, tombstone, heartbeat, transaction); decimals
are exact strings, temporal values ISO 8601, bytes {"base64": ...}, and values Debezium
did not send (unchanged TOAST) {"unavailable": true}.
exit codes: 0 decoded, 2 bad input (one line on stderr)."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--event", metavar="FILE", help="read the record from FILE (default: stdin)"
    )
    parser.add_argument(
        "--decimal-scale",
        metavar="SCHEMA.TABLE.COLUMN=N",
        action="append",
        default=[],
        help="scale of a precise decimal column for records without schemas (repeatable)",
    )
    parser.add_argument(
        "--decimal-column",
        metavar="SCHEMA.TABLE.COLUMN",
        action="append",
        default=[],
        help="a decimal column sent as text or number without a schema (repeatable)",
    )
    parser.add_argument("--heartbeat-prefix", default=DEFAULT_HEARTBEAT_TOPIC_PREFIX)
    parser.add_argument("--transaction-suffix", default=DEFAULT_TRANSACTION_TOPIC_SUFFIX)


_FIELDS = ("topic", "partition", "offset", "key", "value")


class _InputError(Exception):
    pass


def _options(args: argparse.Namespace) -> DecodeOptions:
    scales: dict[str, int] = {}
    for item in args.decimal_scale:
        column, eq, scale = item.partition("=")
        try:
            scales[column] = int(scale)
        except ValueError:
            eq = ""
        if not eq:
            raise _InputError(f"--decimal-scale {item!r}: expected SCHEMA.TABLE.COLUMN=N")
    try:
        return DecodeOptions(
            heartbeat_topic_prefix=args.heartbeat_prefix,
            transaction_topic_suffix=args.transaction_suffix,
            decimal_scales=scales,
            decimal_columns=frozenset(args.decimal_column),
        )
    except ValueError as exc:
        raise _InputError(str(exc)) from None


#: The largest input read: a key and a value of the largest record the decoder accepts,
#: plus the JSON around them. Anything larger could not come off a topic syncd reads.
MAX_INPUT_BYTES = 2 * DEFAULT_LIMITS.max_record_bytes + 65536


def _read(args: argparse.Namespace) -> tuple[str, str]:
    where = "<stdin>" if args.event is None else args.event
    try:
        if args.event is None:
            stdin = getattr(sys.stdin, "buffer", None)  # absent on a text-only stream
            data = (
                stdin.read(MAX_INPUT_BYTES + 1)
                if stdin is not None
                else sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogatepass")
            )
        else:
            with open(args.event, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise _InputError(
            f"{where}: larger than {MAX_INPUT_BYTES} bytes, more than any record "
            "syncd accepts (limits.max_record_bytes)"
        )
    try:
        return where, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InputError(f"{where}: not UTF-8 (invalid byte at offset {exc.start})") from None


def _position(where: str, record: Any) -> RecordPosition:
    if type(record) is not dict:
        raise _InputError(f"{where}: expected an object {{topic, partition, offset, key, value}}")
    missing = [name for name in _FIELDS if name not in record]
    if missing:
        raise _InputError(f"{where}: missing {', '.join(missing)}")
    topic, partition, offset = record["topic"], record["partition"], record["offset"]
    if type(topic) is not str or type(partition) is not int or type(offset) is not int:
        raise _InputError(f"{where}: topic must be a string, partition and offset integers")
    return RecordPosition(topic, partition, offset)


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        where, text = _read(args)
        try:
            record = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
        except (ValueError, RecursionError) as exc:
            raise _InputError(f"{where}: not JSON: {reason_of(exc)}") from None
        position = _position(where, record)
        decoded = decode_json(position, record["key"], record["value"], options)
        text = json.dumps(record_to_json(decoded), ensure_ascii=False)
    except (_InputError, DecodeError) as exc:
        print(f"syncd decode: {printable(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # whatever the record made fail: one line, never a traceback
        print(f"syncd decode: cannot decode the record: {reason_of(exc)}", file=sys.stderr)
        return 2
    write_utf8(sys.stdout, text + "\n")
    return 0
