"""The sandbox's fast JSON gives exactly what the stdlib gives (values, bytes, errors)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd_sandbox import fastjson
from tests import sandbox_samples as samples

# Text as a client could send it, lone surrogates and control characters included.
_TEXT = st.text(st.characters(codec=None), max_size=12) | st.sampled_from(
    ["", "授信额度", "\u2028\u2029", "\x00\x1f\x7f", '"\\/', "\ud800", "é" * 3, "😀"]
)
_INTS = st.integers() | st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)]
)
_FLOATS = st.floats() | st.sampled_from(
    [1e-5, 1e-7, 1e16, 1e300, 5e-324, -0.0, 0.0, 1.0, 1732771234.123456, math.nan, math.inf]
)
_SCALARS = st.none() | st.booleans() | _INTS | _FLOATS | _TEXT
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


def _stdlib_reply(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _stdlib_canonical(payload: object) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _outcome(fn: Any, arg: object) -> tuple[str, object]:
    """What `fn(arg)` does: its result (NaN made comparable), or the type of its error."""
    try:
        result = fn(arg)
    except Exception as exc:
        return "raises", type(exc)
    return "returns", _typed(result)


def _typed(value: object) -> object:
    """A structure equal only for the same values *and* types (1 != 1.0 != True, NaN == NaN)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


@settings(max_examples=400)
@given(_VALUES)
def test_reply_and_canonical_bytes_are_the_stdlib_bytes(value: object) -> None:
    assert _outcome(fastjson.reply_bytes, value) == _outcome(_stdlib_reply, value)
    assert _outcome(fastjson.canonical, value) == _outcome(_stdlib_canonical, value)


@settings(max_examples=400)
@given(_VALUES, st.booleans())
def test_parsing_gives_the_stdlib_value(value: object, pretty: bool) -> None:
    try:
        text = json.dumps(value, ensure_ascii=not pretty, indent=1 if pretty else None)
        body = text.encode("utf-8", "surrogatepass")
    except ValueError:
        return
    assert _outcome(fastjson.loads, body) == _outcome(json.loads, body)


@pytest.mark.parametrize(
    "body",
    [
        b"123456789012345678901234567890",
        b"-9223372036854775809",
        b"18446744073709551616",
        b'{"line_no": 99999999999999999999}',
        b"1e400",
        b"-1e400",
        b"NaN",
        b"[Infinity]",
        b'"\\ud800"',
        b"\xef\xbb\xbf{}",
        b'"\xff"',
        b"",
        b"{",
        b"[1,]",
        b"01",
        b'{"a":1,"a":2}',
        "{}".encode("utf-16"),
        b"[" * 2000 + b"]" * 2000,
        b" {} \n",
        b"-0",
        b"1.5e-400",
    ],
)
def test_parsing_edge_cases_match_the_stdlib(body: bytes) -> None:
    assert _outcome(fastjson.loads, body) == _outcome(json.loads, body)


def test_the_sample_invoice_takes_the_fast_path_and_keeps_its_canonical_text() -> None:
    doc = samples.invoice("BENCH0000000000", invoice_type="SPECIAL")
    body = json.dumps(doc, ensure_ascii=False).encode()
    assert fastjson.is_plain(doc)
    assert _typed(fastjson.loads(body)) == _typed(json.loads(body))
    assert fastjson.canonical(doc) == _stdlib_canonical(doc)


def test_plain_means_exact_json_types_without_floats() -> None:
    assert fastjson.is_plain({"a": [1, "x", None, True, {"b": []}]})
    assert not fastjson.is_plain({"a": [1.0]})
    assert not fastjson.is_plain({1: "a"})
    assert not fastjson.is_plain(("a",))
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    assert fastjson.is_plain(deep)  # iterative: no RecursionError


@pytest.mark.parametrize(
    "body",
    [b"[" * 33 + b"]" * 33, b'{"a":' * 40 + b"1" + b"}" * 40, b"[" * 200000 + b"]" * 200000],
)
def test_request_bodies_nested_too_deep_are_refused_before_parsing(body: bytes) -> None:
    with pytest.raises(fastjson.NestingTooDeepError):
        fastjson.loads_request(body)


def test_request_bodies_within_the_nesting_limit_parse_as_loads_does() -> None:
    for body in (
        b"[" * 32 + b"]" * 32,
        b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        b"[1.5]",
    ):
        assert fastjson.loads_request(body) == fastjson.loads(body)
    assert fastjson.nesting_depth(b'{"x": "{{{{", "y": [[1]]}') == 3
