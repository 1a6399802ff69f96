"""Kafka record -> typed record (`syncd.changes`): envelopes, flattened rows, special topics.

Everything here is pure: bytes or parsed JSON in, one `DecodedRecord` or one
`DecodeError` out. Any other exception escaping would be a bug; a last-resort
guard turns it into a `DecodeError` too, so a poison record can never crash the
consumer loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final, TypeAlias

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; stdlib json still works
    _orjson = None  # type: ignore[assignment]

from syncd.changes import (
    UNAVAILABLE,
    ChangeEvent,
    ColumnValue,
    DecodedRecord,
    DecodeError,
    Heartbeat,
    Op,
    ProbedChange,
    QuietUpdate,
    RecordPosition,
    Row,
    Tombstone,
    TransactionMarker,
)
from syncd.debezium import limits as _limits
from syncd.debezium.convert import (
    ExactNumbersNeeded,
    Invalid,
    Sibling,
    StructPlan,
    b64,
    compile_fields,
    decimal_string,
    exact_decimal,
    fast_floats,
    schemaless_value,
    unscaled_to_decimal,
)
from syncd.debezium.limits import DecodeLimits
from syncd.debezium.options import DecodeOptions
from syncd.safetext import reason_of

_OPS: Final = {op.value: op for op in Op}
# Enum member access is slow on Python 3.11; the hot path compares module constants.
_CREATE: Final = Op.CREATE
_UPDATE: Final = Op.UPDATE
_DELETE: Final = Op.DELETE
_READ: Final = Op.READ
_MESSAGE: Final = Op.MESSAGE
_FLAT_PREFIX: Final = "__"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_BASE64_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
)


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """Converters compiled from one record schema (a key, an envelope or a flat row)."""

    envelope: bool
    fields: StructPlan | None = None  # key or flattened row
    before: StructPlan | None = None
    after: StructPlan | None = None
    #: levels of nested schemas, and the most fields of one struct (checked per record
    #: against the active limits: plans are cached across callers with other limits)
    depth: int = 0
    width: int = 0
    #: the last limits this plan was found within (checked once per limits, not per record)
    within: list[DecodeLimits | None] = field(default_factory=lambda: [None], compare=False)

    def check(self, limits: DecodeLimits) -> None:
        if self.within[0] is limits:
            return
        if self.depth > limits.max_nesting_depth:
            raise Invalid(
                f"schema nested {self.depth} levels deep, more than "
                f"{limits.max_nesting_depth} (limits.max_nesting_depth)"
            )
        if self.width > limits.max_fields:
            raise Invalid(
                f"schema struct of {self.width} fields exceeds {limits.max_fields} "
                "(limits.max_fields)"
            )
        self.within[0] = limits


#: Schemas deeper than this are refused before compiling whatever the limits say: the
#: converters recurse once per level.
_HARD_SCHEMA_DEPTH: Final = 200


def _schema_shape(schema: Any) -> tuple[int, int]:
    """(nesting depth, widest struct) of a schema, walked without recursion."""
    depth = width = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, level = stack.pop()
        if type(node) is not dict:
            continue
        if level > depth:
            depth = level
            if depth > _HARD_SCHEMA_DEPTH:
                break
        fields = node.get("fields")
        if type(fields) is list:
            width = max(width, len(fields))
            stack.extend((f, level + 1) for f in fields)
        for child in ("items", "values", "keys"):
            if type(node.get(child)) is dict:
                stack.append((node[child], level + 1))
    return depth, width


def compile_plan(schema: Any) -> SchemaPlan:
    if type(schema) is not dict:
        raise Invalid("'schema' is not an object")
    depth, width = _schema_shape(schema)
    if depth > _HARD_SCHEMA_DEPTH:
        raise Invalid(f"schema nested more than {_HARD_SCHEMA_DEPTH} levels deep")
    plan = _compile_plan(schema)
    return replace(plan, depth=depth, width=width)


def _compile_plan(schema: dict[str, Any]) -> SchemaPlan:
    if schema.get("type") != "struct":
        raise Invalid(f"top-level schema is {schema.get('type')!r}, expected a struct")
    fields = schema.get("fields")
    if type(fields) is not list:
        raise Invalid("struct schema without a 'fields' list")
    by_name = {f["field"]: f for f in fields if type(f) is dict and type(f.get("field")) is str}
    if "op" in by_name and "source" in by_name:
        before_schema, after_schema = by_name.get("before"), by_name.get("after")
        before = _row_plan(before_schema, "before")
        # one plan for both images when their structs match (their own field names,
        # "before" and "after", always differ): values can then be shared between them
        same = _struct_body(after_schema) == _struct_body(before_schema)
        after = before if same else _row_plan(after_schema, "after")
        return SchemaPlan(envelope=True, before=before, after=after)
    return SchemaPlan(envelope=False, fields=compile_fields(schema))


def _struct_body(schema: Any) -> Any:
    """A field's schema without its own name (what a converter depends on)."""
    if type(schema) is not dict:
        return schema
    return {key: value for key, value in schema.items() if key != "field"}


def _row_plan(schema: Any, name: str) -> StructPlan | None:
    if schema is None:
        return None
    try:
        if type(schema) is not dict or schema.get("type") != "struct":
            raise Invalid("row schema is not a struct")
        return compile_fields(schema)
    except Invalid as exc:
        raise exc.under(name) from None


# --- plan caches ------------------------------------------------------------------------
# Debezium repeats the same schema text on every record of a table version, so the
# raw-bytes path keys by the schema's exact bytes (hash + memcmp, no parsing); the
# parsed-JSON path keys by identity first and falls back to a canonical dump.

_CACHE_LIMIT: Final = 1024
_bytes_plans: dict[bytes, SchemaPlan] = {}
_identity_plans: dict[int, tuple[Any, SchemaPlan]] = {}
_text_plans: dict[str, SchemaPlan] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()  # schemas change rarely; a full reset is simpler than LRU
    cache[key] = value


def _plan_for_doc(schema: Any) -> SchemaPlan:
    hit = _identity_plans.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    text = json.dumps(schema, sort_keys=True, default=str)
    plan = _text_plans.get(text)
    if plan is None:
        plan = compile_plan(schema)
        _remember(_text_plans, text, plan)
    _remember(_identity_plans, id(schema), (schema, plan))
    return plan


# --- JSON parsing -----------------------------------------------------------------------


def _constant(name: str) -> Decimal:
    return Decimal(name)  # NaN, Infinity, -Infinity as written by Jackson


#: A JSON escape of a surrogate code point (orjson refuses unpaired ones itself; the exact
#: parser accepts them, so its documents are checked when their text has one).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def check_no_lone_surrogates(doc: Any, what: str) -> None:
    """Refuse a document holding a string with an unpaired surrogate: no UTF-8 database
    can have sent it, and no UTF-8 output (database, log, header) can carry it."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is str:
            strings = [node]
        elif type(node) is dict:
            strings = list(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
            continue
        else:
            continue
        for item in strings:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise Invalid(
                    f"{what} holds a string with an unpaired surrogate "
                    f"(\\u{ord(item[exc.start]):04x} at character {exc.start})"
                ) from None


# One decoder instance: json.loads(..., parse_float=...) would build a new one per call.
_JSON: Final = json.JSONDecoder(parse_float=Decimal, parse_constant=_constant)


def _parse(text: str | bytes, what: str) -> Any:
    try:
        if type(text) is bytes:
            text = text.decode("utf-8")
        doc = _JSON.decode(text)  # type: ignore[arg-type]
        if _SURROGATE_ESCAPE.search(text) is not None:  # type: ignore[arg-type]
            check_no_lone_surrogates(doc, what)
        return doc
    except UnicodeDecodeError as exc:
        raise Invalid(f"{what} is not UTF-8 (invalid byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise Invalid(f"{what} is not JSON ({exc.msg} at {where})") from None
    except (ValueError, RecursionError, ArithmeticError) as exc:
        raise Invalid(f"{what} is not usable JSON ({exc})") from None


def _parse_fast(data: bytes, what: str) -> Any:
    """orjson when available (several times faster); the exact parser for anything it refuses.

    orjson yields floats, so a decimal column that meets a float asks for an exact
    re-parse (`fast_floats`, set unless `decode_json` runs).
    """
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # not UTF-8, NaN, integers beyond 64 bits, too deep: let json explain
    return _parse_bytes(data, what)


def _parse_bytes(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{what} is not UTF-8 (invalid byte at offset {exc.start})") from None
    return _parse(text, what)


_SCHEMA_HEAD: Final = b'{"schema":'
_PAYLOAD_SEP: Final = b',"payload":'


#: A parsed key or value: its payload, and the plan when it carried a schema (a plain
#: tuple: one is built per key and value, and a class instance costs several times more).
_Doc: TypeAlias = tuple[Any, SchemaPlan | None]


# (topic, "key"/"value") -> the head `{"schema":<schema>,"payload":` of the topic's last
# document with a known schema, and that schema's bytes (its `_bytes_plans` key). The
# head is only a shortcut to the cut `_load_bytes` would find: the schema text holds no
# earlier `,"payload":`, so a document starting with the head is cut at the same place.
_recent_heads: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _load_bytes(data: bytes, what: str, with_plan: bool, fast: bool, topic: str = "") -> _Doc:
    """Parse a JsonConverter document, skipping the schema text when it was seen before.

    The schema's bytes are the cache key (a hash and a memcmp; a memoryview key
    would be ten times slower to compare), so a known schema is never parsed again.
    A topic's records nearly always repeat its last schema, so that one is tried
    first with a single memcmp, before searching for the payload and hashing the
    schema text (several microseconds for a 5 KB schema).
    """
    if with_plan:
        recent = _recent_heads.get((topic, what))
        if recent is not None and data.startswith(recent[0]) and data.endswith(b"}"):
            # still cached? (the bytes' hash is computed once, so this is one memcmp)
            plan = _bytes_plans.get(recent[1])
            if plan is not None:
                body = data[len(recent[0]) : -1]
                try:
                    payload = _parse_fast(body, what) if fast else _parse(body, what)
                    return payload, plan
                except Invalid:
                    pass  # odd layout: the full parse below reports precisely
    cut = -1
    if with_plan and data.startswith(_SCHEMA_HEAD) and data.endswith(b"}"):
        cut = data.find(_PAYLOAD_SEP)
        if cut > 0:
            schema_bytes = data[len(_SCHEMA_HEAD) : cut]
            plan = _bytes_plans.get(schema_bytes)
            if plan is not None:
                body = data[cut + len(_PAYLOAD_SEP) : -1]
                try:
                    payload = _parse_fast(body, what) if fast else _parse(body, what)
                except Invalid:
                    pass  # odd layout: the full parse below reports precisely
                else:
                    _remember_head(topic, what, data, cut, schema_bytes)
                    return payload, plan
    doc = _parse_fast(data, what) if fast else _parse_bytes(data, what)
    loaded = _load_doc(doc, what, with_plan)
    if loaded[1] is not None and cut > 0:
        schema_bytes = data[len(_SCHEMA_HEAD) : cut]
        try:
            same = _parse_bytes(schema_bytes, what) == _load_doc_schema(doc)
        except Invalid:
            same = False
        if same:
            _remember(_bytes_plans, schema_bytes, loaded[1])
            _remember_head(topic, what, data, cut, schema_bytes)
    return loaded


def _remember_head(topic: str, what: str, data: bytes, cut: int, schema_bytes: bytes) -> None:
    """Note the document head of a topic's known schema (bytes cache their hash once made)."""
    head = data[: cut + len(_PAYLOAD_SEP)]
    _remember(_recent_heads, (topic, what), (head, schema_bytes))


def _load_doc_schema(doc: Any) -> Any:
    return doc.get("schema") if type(doc) is dict else None


def _load_doc(doc: Any, what: str, with_plan: bool) -> _Doc:
    if type(doc) is dict and "schema" in doc and "payload" in doc:
        if len(doc) != 2:
            extra = sorted(k for k in doc if k not in ("schema", "payload"))
            raise Invalid(f"{what} has 'schema' and 'payload' plus unexpected keys {extra}")
        if not with_plan or doc["payload"] is None:
            return doc["payload"], None
        try:
            return doc["payload"], _plan_for_doc(doc["schema"])
        except Invalid as exc:
            raise exc.under(f"{what} schema") from None
    return doc, None


# --- record kinds ---------------------------------------------------------------------


def decode_record(
    position: RecordPosition, key: bytes | None, value: bytes | None, options: DecodeOptions
) -> DecodedRecord:
    """Decode one Kafka record as it came off the wire (JsonConverter bytes)."""
    limits = options.limits
    _limits.activate(limits)
    most = limits.max_record_bytes
    if (value is not None and len(value) > most) or (key is not None and len(key) > most):
        big, what = (value, "value") if value is not None and len(value) > most else (key, "key")
        assert big is not None
        raise DecodeError(
            position, f"{what} of {len(big)} bytes exceeds {most} (limits.max_record_bytes)"
        )
    try:
        try:
            return _decode_bytes(position, key, value, options, fast=True)
        except ExactNumbersNeeded:
            token = fast_floats.set(False)
            try:
                return _decode_bytes(position, key, value, options, fast=False)
            finally:
                fast_floats.reset(token)
    except Invalid as exc:
        raise DecodeError(position, exc.message()) from None
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(position, "record nested too deeply to decode") from None
    except Exception as exc:  # a bug must not turn a poison record into a crash loop
        raise DecodeError(position, f"malformed record ({reason_of(exc)})") from exc


def _decode_bytes(
    position: RecordPosition,
    key: bytes | None,
    value: bytes | None,
    options: DecodeOptions,
    fast: bool,
) -> DecodedRecord:
    topic = position.topic
    if value is None:
        key_doc = None if key is None else _load_bytes(key, "key", True, fast, topic)
        return Tombstone(position, _key_row(key_doc, options))
    special = options.is_special_topic(topic)
    value_doc = _load_bytes(value, "value", not special, fast, topic)
    if key is None:
        return _decode(position, _no_key, value_doc, options, special)

    def key_row() -> Row | None:
        # parsed only when asked for: a quiet update or a probed new row never asks
        return _key_row(_load_bytes(key, "key", True, fast, topic), options)

    return _decode(position, key_row, value_doc, options, special)


def _no_key() -> Row | None:
    return None


def decode_json(
    position: RecordPosition, key_doc: Any, value_doc: Any, options: DecodeOptions
) -> DecodedRecord:
    """Decode a record whose key and value documents were already parsed from JSON."""
    token = fast_floats.set(False)  # a float here is the caller's: convert it as it is
    _limits.activate(options.limits)
    try:
        check_no_lone_surrogates(key_doc, "key")
        check_no_lone_surrogates(value_doc, "value")
        key = None if key_doc is None else _load_doc(key_doc, "key", with_plan=True)
        if value_doc is None:
            return Tombstone(position, _key_row(key, options))
        special = options.is_special_topic(position.topic)
        value = _load_doc(value_doc, "value", with_plan=not special)
        return _decode(position, lambda: _key_row(key, options), value, options, special)
    except Invalid as exc:
        raise DecodeError(position, exc.message()) from None
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(position, "record nested too deeply to decode") from None
    except Exception as exc:
        raise DecodeError(position, f"malformed record ({reason_of(exc)})") from exc
    finally:
        fast_floats.reset(token)


#: The record's key row, converted when first called (each caller calls it at most once).
KeyRow: TypeAlias = Callable[[], Row | None]


def _decode(
    position: RecordPosition,
    key: KeyRow,
    value: _Doc,
    options: DecodeOptions,
    special: bool,
) -> DecodedRecord:
    """`special`: `options.is_special_topic(position.topic)`, which the caller knows."""
    payload, plan = value
    if plan is not None and plan.within[0] is not (limits := _limits.current()):
        plan.check(limits)
    if payload is None:
        return Tombstone(position, key())
    if special:
        if options.is_heartbeat_topic(position.topic):
            return _heartbeat(position, payload)
        return _transaction(position, payload)
    if type(payload) is not dict:
        raise Invalid(f"value is a JSON {_json_kind(payload)}, expected a change-event object")
    if (plan is not None and plan.envelope) or (plan is None and "op" in payload):
        return _envelope(position, key, payload, plan, options)
    return _flattened(position, key(), payload, plan, options)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | Decimal | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _key_row(key: _Doc | None, options: DecodeOptions) -> Row | None:
    if key is None or key[0] is None:
        return None
    payload, plan = key
    if type(payload) is not dict:
        raise Invalid(f"key is a JSON {_json_kind(payload)}, expected an object (the primary key)")
    try:
        if plan is not None:
            if plan.within[0] is not (limits := _limits.current()):
                plan.check(limits)
            if plan.envelope or plan.fields is None:
                raise Invalid("key schema looks like a change-event envelope")
            return plan.fields.convert(payload)
        return _schemaless_row(payload)
    except Invalid as exc:
        raise exc.under("key") from None


def _heartbeat(position: RecordPosition, payload: Any) -> Heartbeat:
    if type(payload) is not dict:
        kind = _json_kind(payload)
        raise Invalid(f'heartbeat value is a JSON {kind}, expected {{"ts_ms": ...}}')
    ts_ms = payload.get("ts_ms")
    if type(ts_ms) is not int:
        raise Invalid("heartbeat without an integer 'ts_ms'")
    return Heartbeat(position, ts_ms)


def _transaction(position: RecordPosition, payload: Any) -> TransactionMarker:
    if type(payload) is not dict:
        raise Invalid(f"transaction record is a JSON {_json_kind(payload)}, expected an object")
    status = payload.get("status")
    if status not in ("BEGIN", "END"):
        raise Invalid(f"transaction record with status {status!r}, expected 'BEGIN' or 'END'")
    tx_id = payload.get("id")
    if type(tx_id) is not str or not tx_id:
        raise Invalid("transaction record without a string 'id'")
    tx_id = stable_transaction_id(tx_id)
    count = payload.get("event_count")
    if count is not None and type(count) is not int:
        raise Invalid("transaction 'event_count' is not an integer")
    raw_collections = payload.get("data_collections")
    collections: list[tuple[str, int]] = []
    if raw_collections is not None:
        if type(raw_collections) is not list:
            raise Invalid("transaction 'data_collections' is not an array")
        for entry in raw_collections:
            if type(entry) is not dict:
                raise Invalid("transaction 'data_collections' entry is not an object")
            name = entry.get("data_collection")
            entry_count = entry.get("event_count")
            if type(name) is not str or type(entry_count) is not int:
                raise Invalid(
                    "'data_collections' entry needs a string 'data_collection' "
                    "and an integer 'event_count'"
                )
            collections.append((name, entry_count))
    return TransactionMarker(position, status, tx_id, count, tuple(collections))


# --- change events ----------------------------------------------------------------------


def _envelope(
    position: RecordPosition,
    key_row: KeyRow,
    payload: dict[str, Any],
    plan: SchemaPlan | None,
    options: DecodeOptions,
) -> ChangeEvent | QuietUpdate | ProbedChange:
    op_text = payload.get("op")
    if op_text is None:
        raise Invalid("change event without 'op'")
    op = _OPS.get(op_text) if type(op_text) is str else None
    if op is None:
        raise Invalid(f"unknown op {op_text!r} (expected one of c, u, d, r, t, m)")
    source = payload.get("source")
    if source is None:
        raise Invalid("change event without a 'source' block")
    if type(source) is not dict:
        raise Invalid(f"'source' is a JSON {_json_kind(source)}, expected an object")
    table = _source_table(source, required=op is not _MESSAGE)
    if op is _UPDATE and options.quiet_update_columns and plan is not None:
        quiet = options.quiet_update_columns.get(table)
        if quiet is not None and plan.before is plan.after:
            changed = _quiet_changes(payload.get("before"), payload.get("after"), quiet)
            if changed is not None:
                return QuietUpdate(
                    position, table, changed, _optional_int(source, "ts_ms", "source.ts_ms")
                )
    declared = options.declared_decimals.get(table)
    schemaless = plan is None
    before_plan = None if plan is None else plan.before
    after_plan = None if plan is None else plan.after
    before_wire = payload.get("before")
    probe = None
    if (
        (op is _CREATE or op is _READ)
        and options.probe_columns
        and before_wire is None
        and after_plan is not None
    ):
        probe = options.probe_columns.get(table)
    before: Row | None
    after: Row | None
    key: Row | None = None  # not decoded for a probe: the probed columns must name the row
    if probe is not None and after_plan is not None:
        before = None
        after = _probe_row(payload.get("after"), after_plan, probe, declared, table)
    else:
        key = key_row()
        before = _row(before_wire, before_plan, declared, schemaless, table, "before")
        # an update's after image mostly repeats its before image: let it reuse its values
        like: Sibling | None = None
        if before is not None and after_plan is not None and after_plan is before_plan:
            assert type(before_wire) is dict  # the plan converted it into `before`
            like = (before_wire, before)
        after = _row(payload.get("after"), after_plan, declared, schemaless, table, "after", like)
    if (op is _UPDATE or op is _CREATE or op is _READ) and after is None:
        raise Invalid(f"op {op.value!r} without an 'after' row")
    if op is _DELETE and after is not None:
        raise Invalid("op 'd' with an 'after' row")
    if op is _MESSAGE:
        after = _message(payload.get("message"))
    transaction = payload.get("transaction")
    tx_id: str | None = None
    if type(transaction) is dict and type(transaction.get("id")) is str:
        tx_id = stable_transaction_id(transaction["id"])
    elif transaction is not None and type(transaction) is not dict:
        raise Invalid("'transaction' is not an object")
    elif type(source.get("txId")) is int:
        tx_id = str(source["txId"])
    event = ChangeEvent(
        position=position,
        op=op,
        table=table,
        key=key,
        before=before,
        after=after,
        source_ts_ms=_optional_int(source, "ts_ms", "source.ts_ms"),
        snapshot=_snapshot(source.get("snapshot")),
        transaction_id=tx_id,
        lsn=_optional_int(source, "lsn", "source.lsn"),
        source=source,
    )
    return event if probe is None else ProbedChange(event)


def _probe_row(
    value: Any,
    fields: StructPlan,
    columns: tuple[str, ...],
    declared: Mapping[str, int | None] | None,
    table: str,
) -> dict[str, ColumnValue] | None:
    """The `columns` of a row with a schema (see `DecodeOptions.probe_columns`)."""
    if value is None:
        return None
    try:
        row = fields.convert_only(value, columns)
        if declared:
            _apply_declared_decimals(row, declared, False, table)
        return row
    except Invalid as exc:
        raise exc.under("after") from None


def _quiet_changes(before: Any, after: Any, quiet: frozenset[str]) -> frozenset[str] | None:
    """The columns whose wire values differ between two images of one schema, when all of
    them are `quiet`; None when another one differs, or the images cannot be compared so
    (missing, or different columns).

    Converters are pure, so equal wire values decode to equal values: a column not in
    this set did not change. (The reverse need not hold; a column whose wire value
    changed but is not quiet sends the record to the full decode.)
    """
    if type(before) is not dict or type(after) is not dict or before.keys() != after.keys():
        return None
    changed = []
    for column, value in after.items():
        if before[column] != value:
            if column not in quiet:
                return None  # e.g. a confirmation: its status changed
            changed.append(column)
    return frozenset(changed)


def stable_transaction_id(raw: str) -> str:
    """The part of a transaction id that is the same on BEGIN, every event and END.

    Debezium's Postgres connector (3.6.1, observed in the golden fixtures) writes
    `<txId>:<lsn>` where the LSN is that of the record, so BEGIN, the events and END
    of one transaction carry different strings; only `txId` identifies the
    transaction. Other connectors' ids (MySQL GTIDs `uuid:n`, `file:pos`) are kept.
    """
    head, colon, tail = raw.partition(":")
    if colon and head.isdigit() and tail.isdigit() and head.isascii() and tail.isascii():
        return head
    return raw


def _message(message: Any) -> Row | None:
    """A logical decoding message (op 'm'): its prefix and content bytes, as the row."""
    if message is None:
        return None
    if type(message) is not dict:
        raise Invalid("'message' is not an object")
    prefix = message.get("prefix")
    content = message.get("content")
    if prefix is not None and type(prefix) is not str:
        raise Invalid("message 'prefix' is not a string")
    try:
        raw = None if content is None else b64(content)
    except Invalid as exc:
        raise exc.under("message.content") from None
    return {"prefix": prefix, "content": raw}


def _source_table(source: Mapping[str, Any], *, required: bool) -> str:
    """`schema.table` for Postgres (source has `schema`), `db.table` for MySQL."""
    table = source.get("table")
    if type(table) is not str or not table:
        if required:
            raise Invalid("source block without a 'table'")
        return ""
    schema = source.get("schema")
    if type(schema) is str and schema:
        return f"{schema}.{table}"
    db = source.get("db")
    if type(db) is str and db:
        return f"{db}.{table}"
    raise Invalid("source block names neither 'schema' nor 'db' for the table")


def _snapshot(value: Any) -> bool:
    """`source.snapshot`: a string in Debezium 2+/3 (`true|first|last|...|false`), or null."""
    if value is None or value == "false":
        return False
    if type(value) is str:
        return True
    if type(value) is bool:
        return value
    raise Invalid(f"source.snapshot is a JSON {_json_kind(value)}, expected a string")


def _optional_int(block: Mapping[str, Any], name: str, label: str) -> int | None:
    value = block.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise Invalid(f"{label} is not an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise Invalid(f"{label} is outside the 64-bit range Debezium writes")
    return value


def _row(
    value: Any,
    fields: StructPlan | None,
    declared: Mapping[str, int | None] | None,
    schemaless: bool,
    table: str,
    name: str,
    like: Sibling | None = None,
) -> dict[str, ColumnValue] | None:
    """`like`: the sibling image (see `StructPlan.convert`), same plan and declarations."""
    if value is None:
        return None
    try:
        if schemaless:
            if declared and type(value) is dict:
                for column in declared:
                    if type(value.get(column)) is float:
                        exact_decimal(value[column])  # re-parse exactly if it was a fast float
            row = _schemaless_row(value)
        else:
            if fields is None:
                raise Invalid("row present but the schema has no such field")
            row = fields.convert(value, like)
        if declared:
            _apply_declared_decimals(row, declared, schemaless, table)
        return row
    except Invalid as exc:
        raise exc.under(name) from None


def _schemaless_row(value: Any) -> dict[str, ColumnValue]:
    if type(value) is not dict:
        raise Invalid(f"row is a JSON {_json_kind(value)}, expected an object")
    converted = schemaless_value(value)
    assert isinstance(converted, dict)
    return converted


def _apply_declared_decimals(
    row: dict[str, ColumnValue], declared: Mapping[str, int | None], schemaless: bool, table: str
) -> None:
    """Columns the config declares as decimals, where the record itself cannot say so."""
    for column, scale in declared.items():
        value = row.get(column)
        if value is None or value is UNAVAILABLE or type(value) is Decimal:
            continue
        try:
            row[column] = _declared_decimal(value, scale, schemaless, f"{table}.{column}")
        except Invalid as exc:
            raise exc.under(column) from None


def _declared_decimal(
    value: ColumnValue, scale: int | None, schemaless: bool, column: str
) -> Decimal:
    if type(value) is int or type(value) is float:
        return exact_decimal(value)
    if type(value) is not str:
        raise Invalid(f"declared decimal column holds a {type(value).__name__}")
    looks_base64 = (
        schemaless and bool(value) and len(value) % 4 == 0 and _BASE64_CHARS.issuperset(value)
    )
    if not looks_base64:
        return decimal_string(value)
    if scale is not None:
        return unscaled_to_decimal(b64(value), scale)
    if value.isdigit():
        return decimal_string(value)  # an integral string-mode value, not base64 bytes
    raise Invalid(
        f"{column} arrives as a precise decimal (base64 {value!r}) without a schema, so its "
        "scale is unknown: set value.converter.schemas.enable=true, or "
        "decimal.handling.mode=string on the connector, or configure the column's scale "
        f"(decimal_scales / --decimal-scale {column}=N)"
    )


def _flattened(
    position: RecordPosition,
    key: Row | None,
    payload: dict[str, Any],
    plan: SchemaPlan | None,
    options: DecodeOptions,
) -> ChangeEvent:
    """An `ExtractNewRecordState` record: the row itself plus `__`-prefixed metadata."""
    meta = {k: v for k, v in payload.items() if k.startswith(_FLAT_PREFIX)}
    if not meta and plan is None and ("source" in payload or "before" in payload):
        raise Invalid("change event without 'op'")
    columns = {k: v for k, v in payload.items() if not k.startswith(_FLAT_PREFIX)}
    table = _flat_table(position.topic, meta)
    deleted = meta.get("__deleted")
    if deleted is None or deleted == "false" or deleted is False:
        is_delete = False
    elif deleted == "true" or deleted is True:
        is_delete = True
    else:
        raise Invalid(f"__deleted is {deleted!r}, expected 'true' or 'false'")
    op_text = meta.get("__op")
    if op_text is None:
        if not is_delete:
            raise Invalid(
                "flattened record (ExtractNewRecordState) without '__op': cannot tell an insert "
                "from an update; configure the SMT with add.fields=op,table,lsn,source.ts_ms"
            )
        op = Op.DELETE
    else:
        found = _OPS.get(op_text) if type(op_text) is str else None
        if found is None:
            raise Invalid(f"unknown __op {op_text!r} (expected one of c, u, d, r, t, m)")
        op = Op.DELETE if is_delete else found
    fields = None if plan is None else plan.fields
    declared = options.declared_decimals.get(table)
    row = _row(columns, fields, declared, plan is None, table, "row")
    assert row is not None
    snapshot_flag = meta.get("__snapshot")
    return ChangeEvent(
        position=position,
        op=op,
        table=table,
        key=key,
        before=row if op is Op.DELETE else None,
        after=None if op is Op.DELETE else row,
        source_ts_ms=_optional_int(meta, "__source_ts_ms", "__source_ts_ms"),
        snapshot=op is Op.READ if snapshot_flag is None else _snapshot(snapshot_flag),
        transaction_id=_flat_tx(meta),
        lsn=_optional_int(meta, "__lsn", "__lsn"),
        source=meta,
    )


def _flat_tx(meta: Mapping[str, Any]) -> str | None:
    for name in ("__transaction_id", "__txId"):
        value = meta.get(name)
        if type(value) is str:
            return value
        if type(value) is int:
            return str(value)
    return None


def _flat_table(topic: str, meta: Mapping[str, Any]) -> str:
    """Table of a flattened record: `__schema`/`__db` + `__table`, else from the topic name."""
    table = meta.get("__table")
    parts = topic.split(".")
    if table is not None and (type(table) is not str or not table):
        raise Invalid("__table is not a non-empty string")
    if table is None:
        if len(parts) < 3:
            raise Invalid(
                f"cannot tell the table of flattened record on topic {topic!r}: configure the "
                "SMT with add.fields=op,table,lsn,source.ts_ms (and schema or db)"
            )
        return f"{parts[-2]}.{parts[-1]}"
    schema = meta.get("__schema")
    if type(schema) is str and schema:
        return f"{schema}.{table}"
    if len(parts) >= 3 and parts[-1] == table:
        return f"{parts[-2]}.{table}"  # <prefix>.<schema>.<table>
    db = meta.get("__db")
    if type(db) is str and db:
        return f"{db}.{table}"
    raise Invalid(
        f"cannot tell the schema of table {table!r}: add 'schema' (or 'db') to add.fields"
    )
