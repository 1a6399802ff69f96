"""Column value conversion: Kafka Connect JSON wire values -> `syncd.changes.ColumnValue`.

A record's schema is turned once into a *plan* (a tree of small converter
functions); the plan is cached by the caller and applied to every record with
the same schema. Converters never look at the schema again at run time and use
no regular expressions: the hot path is a dict walk plus one call per field.

Converters raise `Invalid` (cheap, position-free); the record-level code turns it
into `DecodeError` with the record position and the field path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from syncd.changes import UNAVAILABLE, ColumnValue
from syncd.debezium import limits as _limits

# --- the TOAST placeholder in every shape Debezium's Postgres connector sends it ---
PLACEHOLDER: Final = "__debezium_unavailable_value"
_PLACEHOLDER_BYTES: Final = PLACEHOLDER.encode("ascii")
PLACEHOLDER_BASE64: Final = base64.b64encode(_PLACEHOLDER_BYTES).decode("ascii")
_TEXT_ARRAY_PLACEHOLDER: Final = [PLACEHOLDER]
_BINARY_ARRAY_PLACEHOLDER: Final = [PLACEHOLDER_BASE64]
_INT_ARRAY_PLACEHOLDER: Final = list(_PLACEHOLDER_BYTES)
# Java's UUID.nameUUIDFromBytes: an MD5 (version 3) UUID of the bare bytes.
_UUID_ARRAY_PLACEHOLDER: Final = [
    str(uuid.UUID(bytes=hashlib.md5(_PLACEHOLDER_BYTES).digest(), version=3))  # noqa: S324
]
_HSTORE_PLACEHOLDER: Final = {PLACEHOLDER: PLACEHOLDER}
_ARRAY_PLACEHOLDERS: Final = (
    _TEXT_ARRAY_PLACEHOLDER,
    _BINARY_ARRAY_PLACEHOLDER,
    _INT_ARRAY_PLACEHOLDER,
    _UUID_ARRAY_PLACEHOLDER,
)

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_EPOCH: Final = datetime(1970, 1, 1)  # Debezium's Timestamp types carry no zone
_US_PER_DAY: Final = 86_400_000_000

Converter = Callable[[Any], ColumnValue]


class Invalid(Exception):  # noqa: N818 - internal, never escapes the package
    """A value or schema that cannot be decoded; `path` grows as it propagates outwards."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def under(self, name: str) -> Invalid:
        self.path = f"{name}.{self.path}" if self.path else name
        return self

    def message(self) -> str:
        path = self.path
        if len(path) > 120:  # a value nested deep: the rule broken matters more than the way
            path = f"{path[:60]}...{path[-40:]}"
        return f"{path}: {self.reason}" if path else self.reason


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _expected(what: str, value: object) -> Invalid:
    return Invalid(f"expected {what}, got {_kind(value)}")


# --- primitive checks -------------------------------------------------------------


def _int(value: Any) -> ColumnValue:
    if type(value) is int:
        return value
    raise _expected("an integer", value)


def _bool(value: Any) -> ColumnValue:
    if type(value) is bool:
        return value
    raise _expected("a boolean", value)


def _string(value: Any) -> ColumnValue:
    if type(value) is str:
        return UNAVAILABLE if value == PLACEHOLDER else value
    raise _expected("a string", value)


def to_decimal_number(value: Any) -> Decimal:
    """A JSON number as an exact Decimal within the decode limits; floats go through their
    shortest repr."""
    t = type(value)
    if t is Decimal:
        return bounded_decimal(value)
    if t is int:
        return bounded_decimal(Decimal(value))
    if t is float:
        return Decimal(repr(value))  # a double: at most 17 digits, exponent within +-308
    raise _expected("a number", value)


def bounded_decimal(value: Decimal) -> Decimal:
    """`value`, if its digits and scale are within the active decode limits."""
    problem = _limits.decimal_problem(value, _limits.current())
    if problem is not None:
        raise Invalid(problem)
    return value


def _float(value: Any) -> ColumnValue:
    if type(value) is str and value == PLACEHOLDER:
        return UNAVAILABLE
    return to_decimal_number(value)


# What base64.b64decode(validate=True) accepts, checked on the str without encoding it.
_BASE64_TEXT: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64(value: Any) -> bytes:
    """Strict base64 (as `base64.b64decode(value, validate=True)`), minus its wrapper cost."""
    if type(value) is not str:
        raise _expected("a base64 string", value)
    if _BASE64_TEXT.fullmatch(value) is not None:
        try:
            return binascii.a2b_base64(value)
        except (binascii.Error, ValueError):
            pass
    raise Invalid(f"invalid base64 {_clip(value)}")


def _clip(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bytes(value: Any) -> ColumnValue:
    if value in (PLACEHOLDER_BASE64, PLACEHOLDER):
        return UNAVAILABLE
    return b64(value)


# --- decimals -----------------------------------------------------------------------


def unscaled_to_decimal(raw: bytes, scale: int) -> Decimal:
    """Big-endian two's-complement unscaled integer (Java BigInteger bytes) at `scale`."""
    if not raw:
        raise Invalid("empty decimal bytes")
    limits = _limits.current()
    # checked before any digit is made: scale -999999999 is a billion digits when printed
    problem = _limits.scale_problem(scale, limits)
    if problem is not None:
        raise Invalid(problem)
    if len(raw) > limits.max_unscaled_bytes:
        raise Invalid(
            f"decimal of {len(raw)} bytes has more than {limits.max_decimal_digits} "
            "digits (limits.max_decimal_digits)"
        )
    digits = str(int.from_bytes(raw, "big", signed=True))
    problem = _limits.digits_problem(len(digits) - (digits[0] == "-"), limits)
    if problem is not None:
        raise Invalid(problem)
    return Decimal(f"{digits}E{-scale}")


class ExactNumbersNeeded(Exception):  # noqa: N818 - a signal, not an error
    """A float reached a decimal column while parsing with the fast (float) parser.

    The fast JSON parser turns numbers into binary floats; for a decimal column
    written as a JSON number (`decimal.format=NUMERIC`, or a declared schemaless
    decimal) that could lose digits, so the record is parsed again exactly.
    """


# Whether a float met in a decimal column may come from the fast parser (and so asks for
# an exact re-parse). True by default, so the per-record path need not set it; the exact
# parser never yields floats (it reads numbers as Decimal), and `decode_json`, whose
# documents someone else parsed, sets it False. Read only when a float hits a decimal
# column.
fast_floats: ContextVar[bool] = ContextVar("syncd_debezium_fast_floats", default=True)


def exact_decimal(value: Any) -> Decimal:
    """A JSON number for a decimal column: exact, or a request to re-parse exactly."""
    if type(value) is float and fast_floats.get():
        raise ExactNumbersNeeded
    return to_decimal_number(value)


def precise_decimal(value: Any, scale: int) -> ColumnValue:
    """Connect Decimal: base64 unscaled bytes, or a JSON number (`decimal.format=NUMERIC`)."""
    if type(value) is str:
        if value in (PLACEHOLDER, PLACEHOLDER_BASE64):
            return UNAVAILABLE
        return unscaled_to_decimal(b64(value), scale)
    return exact_decimal(value)


def _fixed_decimal(schema: Mapping[str, Any]) -> Converter:
    params = schema.get("parameters")
    raw_scale = params.get("scale") if isinstance(params, dict) else None
    try:
        scale = int(raw_scale) if isinstance(raw_scale, str | int) else None
    except ValueError:
        scale = None
    if scale is None or isinstance(raw_scale, bool):
        raise Invalid("Decimal schema without an integer 'scale' parameter")
    return lambda value: precise_decimal(value, scale)


def variable_scale_decimal(value: Any) -> ColumnValue:
    """`io.debezium.data.VariableScaleDecimal`: `{"scale": s, "value": base64}`."""
    if type(value) is not dict:
        if value == PLACEHOLDER:
            return UNAVAILABLE
        raise _expected("a {scale, value} object", value)
    scale = value.get("scale")
    raw = value.get("value")
    if type(scale) is not int or len(value) != 2:
        raise Invalid("VariableScaleDecimal needs exactly an integer 'scale' and a 'value'")
    return unscaled_to_decimal(b64(raw), scale)


def decimal_string(value: str) -> Decimal:
    """`decimal.handling.mode=string`: Java BigDecimal.toPlainString() text."""
    if len(value) > _limits.current().max_decimal_digits + 32:
        raise Invalid(
            f"decimal text of {len(value)} characters is longer than any number "
            "within limits.max_decimal_digits"
        )
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise Invalid(f"not a decimal number: {_clip(value)}") from None
    if not result.is_finite() and value.strip().lower() not in ("nan", "infinity", "-infinity"):
        raise Invalid(f"not a decimal number: {_clip(value)}")
    return bounded_decimal(result)


# --- temporal -----------------------------------------------------------------------


def _days(value: Any) -> ColumnValue:
    if type(value) is not int:
        raise _expected("an integer day count", value)
    try:
        return date.fromordinal(_EPOCH_ORDINAL + value)
    except (ValueError, OverflowError):
        raise Invalid(f"date out of range: {value} days since 1970-01-01") from None


def _timestamp(per_second: int) -> Converter:
    factor = 1_000_000 // per_second if per_second <= 1_000_000 else 0

    def convert(value: Any) -> ColumnValue:
        if type(value) is not int:
            raise _expected("an integer timestamp", value)
        micros = value * factor if factor else value // 1000
        try:
            # positional timedelta(days, seconds, microseconds): keywords cost a third more
            return _EPOCH + timedelta(0, 0, micros)
        except OverflowError:
            raise Invalid(f"timestamp out of range: {value}") from None

    return convert


def _time_of_day(per_second: int) -> Converter:
    def convert(value: Any) -> ColumnValue:
        if type(value) is not int:
            raise _expected("an integer time of day", value)
        micros = value * (1_000_000 // per_second) if per_second <= 1_000_000 else value // 1000
        if not 0 <= micros < _US_PER_DAY:
            # Postgres allows 24:00:00, which Python's time cannot hold.
            raise Invalid(f"time of day out of range 00:00-24:00 (exclusive): {value}")
        seconds, micro = divmod(micros, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return time(hour, minute, second, micro)

    return convert


def _iso(parse: Callable[[str], ColumnValue], what: str) -> Converter:
    def convert(value: Any) -> ColumnValue:
        if type(value) is not str:
            raise _expected(f"an ISO-8601 {what} string", value)
        if value == PLACEHOLDER:
            return UNAVAILABLE
        try:
            return parse(value)
        except ValueError:
            raise Invalid(f"not an ISO-8601 {what}: {_clip(value)}") from None

    return convert


def _zoned_datetime(text: str) -> ColumnValue:
    result = datetime.fromisoformat(text)
    if result.tzinfo is None:
        raise ValueError("no zone offset")
    return result


def _zoned_time(text: str) -> ColumnValue:
    result = time.fromisoformat(text)
    if result.tzinfo is None:
        raise ValueError("no zone offset")
    return result


# --- schema compilation -----------------------------------------------------------

# JsonConverter's names ("float"/"double") plus Connect's own, which some tools write.
_PRIMITIVES: Final[dict[str, Converter]] = {
    "int8": _int,
    "int16": _int,
    "int32": _int,
    "int64": _int,
    "float": _float,
    "double": _float,
    "float32": _float,
    "float64": _float,
    "boolean": _bool,
    "string": _string,
    "bytes": _bytes,
}

# Logical types whose value needs converting; keyed by schema name.
_LOGICAL: Final[dict[str, Callable[[Mapping[str, Any]], Converter]]] = {
    "org.apache.kafka.connect.data.Decimal": _fixed_decimal,
    "io.debezium.data.VariableScaleDecimal": lambda _s: variable_scale_decimal,
    "org.apache.kafka.connect.data.Date": lambda _s: _days,
    "io.debezium.time.Date": lambda _s: _days,
    "org.apache.kafka.connect.data.Time": lambda _s: _time_of_day(1000),
    "io.debezium.time.Time": lambda _s: _time_of_day(1000),
    "io.debezium.time.MicroTime": lambda _s: _time_of_day(1_000_000),
    "io.debezium.time.NanoTime": lambda _s: _time_of_day(1_000_000_000),
    "org.apache.kafka.connect.data.Timestamp": lambda _s: _timestamp(1000),
    "io.debezium.time.Timestamp": lambda _s: _timestamp(1000),
    "io.debezium.time.MicroTimestamp": lambda _s: _timestamp(1_000_000),
    "io.debezium.time.NanoTimestamp": lambda _s: _timestamp(1_000_000_000),
    "io.debezium.time.ZonedTimestamp": lambda _s: _iso(_zoned_datetime, "timestamp with offset"),
    "io.debezium.time.ZonedTime": lambda _s: _iso(_zoned_time, "time with offset"),
    "io.debezium.time.IsoDate": lambda _s: _iso(date.fromisoformat, "date"),
    "io.debezium.time.IsoTime": lambda _s: _iso(time.fromisoformat, "time"),
    "io.debezium.time.IsoTimestamp": lambda _s: _iso(datetime.fromisoformat, "timestamp"),
}

# Debezium semantic types whose wire value already is the value (kept as given):
# JSON/XML/UUID/enum text, bit strings as bytes, a year number, an ISO-8601
# interval string, durations as integer micro/nanoseconds, geometry structs,
# pgvector arrays/structs.
_AS_GIVEN: Final = frozenset(
    {
        "io.debezium.data.Json",
        "io.debezium.data.Uuid",
        "io.debezium.data.Xml",
        "io.debezium.data.Ltree",
        "io.debezium.data.Enum",
        "io.debezium.data.EnumSet",
        "io.debezium.data.Bits",
        "io.debezium.time.Year",
        "io.debezium.time.Interval",
        "io.debezium.time.MicroDuration",
        "io.debezium.time.NanoDuration",
        "io.debezium.data.geometry.Geometry",
        "io.debezium.data.geometry.Geography",
        "io.debezium.data.geometry.Point",
        "io.debezium.data.DoubleVector",
        "io.debezium.data.FloatVector",
        "io.debezium.data.SparseDoubleVector",
    }
)

_SELF_DESCRIBING_TYPES: Final = frozenset({"string", "boolean"})


def compile_schema(schema: Any, *, top: bool = False) -> Converter:
    """Build the converter for one Connect schema (as JsonConverter writes it).

    `top` marks a record's own row struct, whose name is the table's (any text).
    """
    if type(schema) is not dict:
        raise _expected("a schema object", schema)
    kind = schema.get("type")
    name = schema.get("name")
    if type(kind) is not str:
        raise Invalid("schema without a string 'type'")
    if name is not None and type(name) is not str:
        raise Invalid("schema 'name' is not a string")
    if name is not None and not top:
        factory = _LOGICAL.get(name)
        if factory is not None:
            return factory(schema)
        if (
            name.startswith("io.debezium.")
            and name not in _AS_GIVEN
            and kind not in _SELF_DESCRIBING_TYPES
        ):
            raise Invalid(
                f"unsupported Debezium semantic type {name!r} (wire type {kind!r}): syncd "
                "does not know how to convert it; exclude the column "
                "(column.exclude.list) or report it"
            )
    primitive = _PRIMITIVES.get(kind)
    if primitive is not None:
        return primitive
    if kind == "struct":
        return _struct(compile_fields(schema))
    if kind == "array":
        return _array(compile_schema(schema.get("items")))
    if kind == "map":
        return _map(compile_schema(schema.get("values")))
    raise Invalid(f"unknown schema type {kind!r}")


def compile_fields(schema: Mapping[str, Any]) -> StructPlan:
    fields = schema.get("fields")
    if type(fields) is not list:
        raise Invalid("struct schema without a 'fields' list")
    plan: dict[str, Converter] = {}
    for field_schema in fields:
        if type(field_schema) is not dict or type(field_schema.get("field")) is not str:
            raise Invalid("struct field schema without a 'field' name")
        field_name = field_schema["field"]
        try:
            plan[field_name] = compile_schema(field_schema)
        except Invalid as exc:
            raise exc.under(field_name) from None
    return StructPlan(plan)


# Converters that return a value of this exact type unchanged (strings: unless it is
# the placeholder, which the struct fast path checks for once per struct).
_PASS_THROUGH: Final[dict[Converter, type]] = {_int: int, _bool: bool, _string: str}

# Results a struct may share with a sibling row: immutable, so sharing is invisible.
_SHAREABLE: Final = frozenset({Decimal, date, datetime, time, bytes, type(UNAVAILABLE)})
# Wire types for which equal values are the same input (not floats: 0.0 == -0.0, and
# Decimal("1.0") == Decimal("1.00"), yet each converts to a different Decimal).
_SAME_RESULT_WIRE: Final = frozenset({str, int})

# A sibling struct value: its wire dict, and the row converted from it by the same plan.
Sibling = tuple[Mapping[str, Any], Mapping[str, ColumnValue]]

# Structs of at most this many fields skip the shape cache (see StructPlan.__init__).
_SMALL_STRUCT: Final = 3

# Distinct struct value shapes remembered per struct plan before starting afresh.
_SHAPE_LIMIT: Final = 64

# (field names in order, value types in order) of one struct value.
_ShapeKey = tuple[tuple[str, ...], tuple[type, ...]]


class _Shape:
    """What a struct value of one shape needs beyond a dict copy.

    `work` lists, in field order, the fields whose converter changes the value or
    must reject its type; every other field is a type-checked pass-through.
    """

    __slots__ = ("strings", "work")

    def __init__(self, work: tuple[tuple[str, Converter], ...], strings: bool) -> None:
        self.work = work
        self.strings = strings


class StructPlan:
    """A struct's field converters, plus a per-shape cache that makes most fields free.

    Debezium sends each row with the same field names and mostly the same JSON types
    (a column is its type or null), so the types are checked once per shape: a value
    of a known shape is copied at C speed and only its temporal, decimal, bytes and
    nested fields are converted. A shape with an unknown field is never cached and
    takes the field-by-field path, which blames the first bad field.
    """

    __slots__ = ("_shapes", "_small", "fields")

    def __init__(self, fields: dict[str, Converter]) -> None:
        self.fields: Final = fields
        self._shapes: dict[_ShapeKey, _Shape] = {}
        # a key's one or two fields convert faster one by one than through a shape
        self._small: Final = len(fields) <= _SMALL_STRUCT

    def convert(self, value: Any, like: Sibling | None = None) -> dict[str, ColumnValue]:
        """Convert one struct value; `like` may lend results for equal wire values.

        `like` is another value of this plan (wire dict, and the row this plan made of
        it): an update's `before`, when converting its `after`. A field whose wire
        text or integer is the same there reuses the immutable result (a Decimal,
        date, time, bytes) instead of decoding it again; converters are pure, so the
        value is the same either way.
        """
        if self._small or type(value) is not dict:
            return convert_struct(self.fields, value)
        shape = self._shapes.get((tuple(value), tuple(map(type, value.values()))))
        if shape is None:
            shape = self._learn(value)
            if shape is None:
                return convert_struct(self.fields, value)
        if shape.strings and PLACEHOLDER in value.values():
            return convert_struct(self.fields, value)
        out: dict[str, ColumnValue] = value.copy()
        name = ""
        try:
            if like is None:
                for name, converter in shape.work:
                    out[name] = converter(value[name])
            else:
                wire, done = like
                for name, converter in shape.work:
                    item = value[name]
                    known = done.get(name)
                    if (
                        type(known) in _SHAREABLE
                        and type(item) in _SAME_RESULT_WIRE
                        and type(wire.get(name)) is type(item)
                        and wire[name] == item
                    ):
                        out[name] = known
                    else:
                        out[name] = converter(item)
        except Invalid as exc:
            raise exc.under(name) from None
        return out

    def convert_only(self, value: Any, columns: tuple[str, ...]) -> dict[str, ColumnValue]:
        """The `columns` of one struct value that it has, converted as `convert` would;
        the other fields are neither converted nor checked."""
        if type(value) is not dict:
            raise _expected("an object", value)
        out: dict[str, ColumnValue] = {}
        fields = self.fields
        for name in columns:
            if name not in value:
                continue
            item = value[name]
            converter = fields.get(name)
            if converter is None:
                raise Invalid("field not in the schema").under(name)
            try:
                out[name] = None if item is None else converter(item)
            except Invalid as exc:
                raise exc.under(name) from None
        return out

    def _learn(self, value: dict[str, Any]) -> _Shape | None:
        """Classify each field of a new shape once; None if a field is not in the schema."""
        work: list[tuple[str, Converter]] = []
        strings = False
        for name, item in value.items():
            converter = self.fields.get(name)
            if converter is None:
                return None
            if item is None:
                continue
            kind = type(item)
            if _PASS_THROUGH.get(converter) is kind:
                strings = strings or kind is str
            else:
                work.append((name, converter))
        shape = _Shape(tuple(work), strings)
        if len(self._shapes) >= _SHAPE_LIMIT:
            self._shapes.clear()
        self._shapes[(tuple(value), tuple(map(type, value.values())))] = shape
        return shape


def convert_struct(plan: Mapping[str, Converter], value: Any) -> dict[str, ColumnValue]:
    """Field by field: the reference behaviour, and the path for unusual values."""
    if type(value) is not dict:
        raise _expected("an object", value)
    try:
        return {k: None if v is None else plan[k](v) for k, v in value.items()}
    except (Invalid, KeyError):
        pass
    # slow path, only for a bad record: find the field to blame
    name = ""
    try:
        for name, item in value.items():
            converter = plan.get(name)
            if converter is None:
                raise Invalid("field not in the schema")
            if item is not None:
                converter(item)
    except Invalid as exc:
        raise exc.under(name) from None
    raise Invalid("inconsistent struct value")  # pragma: no cover - both paths agree


def _struct(plan: StructPlan) -> Converter:
    convert_value = plan.convert

    def convert(value: Any) -> ColumnValue:
        if value == PLACEHOLDER:
            return UNAVAILABLE
        return convert_value(value)

    return convert


def _is_array_placeholder(value: list[Any]) -> bool:
    return value in _ARRAY_PLACEHOLDERS


def _array(items: Converter) -> Converter:
    def convert(value: Any) -> ColumnValue:
        if type(value) is not list:
            if value == PLACEHOLDER:
                return UNAVAILABLE
            raise _expected("an array", value)
        if _is_array_placeholder(value):
            return UNAVAILABLE
        out: list[ColumnValue] = []
        for index, item in enumerate(value):
            try:
                out.append(None if item is None else items(item))
            except Invalid as exc:
                raise exc.under(f"[{index}]") from None
        return out

    return convert


def _map(values: Converter) -> Converter:
    """Connect maps: a JSON object (string keys) or an array of [key, value] pairs."""

    def convert(value: Any) -> ColumnValue:
        if value in (_HSTORE_PLACEHOLDER, PLACEHOLDER):
            return UNAVAILABLE
        if type(value) is dict:
            pairs = list(value.items())
        elif type(value) is list:
            pairs = []
            for pair in value:
                if type(pair) is not list or len(pair) != 2:
                    raise Invalid("map entry is not a [key, value] pair")
                pairs.append((pair[0], pair[1]))
        else:
            raise _expected("a map", value)
        out: dict[str, ColumnValue] = {}
        for key, item in pairs:
            if isinstance(key, dict | list) or key is None:
                raise Invalid("map key is not a scalar")
            text_key = key if type(key) is str else str(key)
            try:
                out[text_key] = None if item is None else values(item)
            except Invalid as exc:
                raise exc.under(text_key) from None
        return out

    return convert


# --- schemaless values ----------------------------------------------------------------


def schemaless_value(value: Any, depth: int = 1) -> ColumnValue:
    """A value from a record without a schema: JSON types only, no semantic types.

    Temporal values stay the integers/strings they are on the wire; the only
    structure recognised is VariableScaleDecimal's `{"scale", "value"}`. `depth` is
    the nesting level of `value` (a row's columns are level 1), bounded by the limits.
    """
    t = type(value)
    if t is str:
        return UNAVAILABLE if value == PLACEHOLDER else value
    if t is int or t is bool:
        return value  # type: ignore[no-any-return]
    if t is Decimal:
        return bounded_decimal(value)
    if t is float:
        return Decimal(repr(value))
    if t is not list and t is not dict:
        raise _expected("a JSON value", value)
    limits = _limits.current()
    if depth > limits.max_nesting_depth:
        raise Invalid(
            f"value nested more than {limits.max_nesting_depth} levels deep "
            "(limits.max_nesting_depth)"
        )
    if t is list:
        if _is_array_placeholder(value):
            return UNAVAILABLE
        out_list: list[ColumnValue] = []
        for index, item in enumerate(value):
            try:
                out_list.append(None if item is None else schemaless_value(item, depth + 1))
            except Invalid as exc:
                raise exc.under(f"[{index}]") from None
        return out_list
    if value == _HSTORE_PLACEHOLDER:
        return UNAVAILABLE
    if len(value) == 2 and type(value.get("scale")) is int and type(value.get("value")) is str:
        return variable_scale_decimal(value)
    if len(value) > limits.max_fields:
        raise Invalid(
            f"object of {len(value)} fields exceeds {limits.max_fields} (limits.max_fields)"
        )
    out: dict[str, ColumnValue] = {}
    for key, item in value.items():
        try:
            out[key] = None if item is None else schemaless_value(item, depth + 1)
        except Invalid as exc:
            raise exc.under(key) from None
    return out
