"""Bounds on the work one record may cause: no input makes the decoder allocate, compute
or print more than a small multiple of its own size.

A record written to a captured topic by a buggy upstream (or by anyone with write access)
can carry values that are cheap to send and ruinous to use: a decimal with scale
-999999999 is 8 bytes on the wire and a billion digits when printed; a schema nested a
thousand levels deep exhausts the interpreter's stack. Each limit turns such a record into
a `DecodeError` (and so a dead letter) before that work starts.

The defaults are PostgreSQL's own bounds where it has them (NUMERIC precision up to 1000
digits, scale -1000..1000; at most 1600 columns a table), so no row a real ERP on
PostgreSQL can hold is refused; every limit is configurable (`limits:` in the config) for
sources that need more.

The decoder reads the limits of the record it is decoding from a context variable set by
`decode_record`/`decode_json`, so the value converters (compiled once per schema and
shared) stay free of parameters.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

#: bits per decimal digit, rounded up: bytes of a two's-complement integer of N digits
_BITS_PER_DIGIT: Final = 3.3219280948873626


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one record may ask of the decoder."""

    #: key or value bytes of one Kafka record
    max_record_bytes: int = 8 * 1024 * 1024
    #: levels of nested structs/arrays/maps in a schema or a schemaless value
    max_nesting_depth: int = 32
    #: fields of one struct (schema or schemaless object)
    max_fields: int = 1600
    #: significant digits of one decimal value
    max_decimal_digits: int = 1000
    #: scale (digits after the point; negative: zeros before it) of one decimal value
    min_decimal_scale: int = -1000
    max_decimal_scale: int = 1000

    #: bytes of a big-endian two's-complement integer of `max_decimal_digits` digits
    max_unscaled_bytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_record_bytes", "max_nesting_depth", "max_fields", "max_decimal_digits"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be at least 1")
        if self.min_decimal_scale > self.max_decimal_scale:
            raise ValueError("limits.min_decimal_scale is above limits.max_decimal_scale")
        object.__setattr__(
            self, "max_unscaled_bytes", int(self.max_decimal_digits * _BITS_PER_DIGIT) // 8 + 2
        )


DEFAULT_LIMITS: Final = DecodeLimits()

_ACTIVE: ContextVar[DecodeLimits] = ContextVar("syncd_decode_limits", default=DEFAULT_LIMITS)


def current() -> DecodeLimits:
    """The limits of the record being decoded on this thread."""
    return _ACTIVE.get()


def activate(limits: DecodeLimits) -> None:
    """Make `limits` the ones this thread's decoding obeys (cheap when unchanged)."""
    if _ACTIVE.get() is not limits:
        _ACTIVE.set(limits)


def decimal_problem(value: Decimal, limits: DecodeLimits) -> str | None:
    """Why `value` is out of bounds, or None. Non-finite values (NaN, Infinity) pass:
    PostgreSQL NUMERIC holds them, and what reads the value decides what they mean."""
    if not value.is_finite():
        return None
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return scale_problem(-exponent, limits) or digits_problem(len(digits), limits)


def scale_problem(scale: int, limits: DecodeLimits) -> str | None:
    """Why a decimal `scale` is out of bounds, or None (checkable before any digit is made)."""
    if limits.min_decimal_scale <= scale <= limits.max_decimal_scale:
        return None
    return (
        f"decimal scale {_short(scale)} is outside {limits.min_decimal_scale}.."
        f"{limits.max_decimal_scale} (limits.min_decimal_scale/max_decimal_scale)"
    )


def digits_problem(count: int, limits: DecodeLimits) -> str | None:
    """Why a decimal of `count` significant digits is out of bounds, or None."""
    if count <= limits.max_decimal_digits:
        return None
    return (
        f"decimal of {count} digits exceeds {limits.max_decimal_digits} (limits.max_decimal_digits)"
    )


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"
