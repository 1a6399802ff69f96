"""JSON on the sandbox's hot path: orjson wherever it gives exactly what `json` gives.

Every signed request is parsed, and every reply and every stored invoice's
canonical text (which is also hashed into `payload_hash`) is written, as JSON.
The stdlib does that in pure-C-but-generic code; orjson is 3-8x faster, which
matters because the sandbox shares the benchmark machine with the daemon it
measures. But the sandbox's replies and stored texts must not change, and
orjson is not a drop-in replacement:

* parsing, it turns integers beyond 64 bits into *floats* (silently), and it
  refuses NaN/Infinity, 1e400, lone surrogates, a UTF-8 BOM and UTF-16/32;
* writing, it turns NaN/Infinity into null, writes exponents unpadded (1e-5 where
  `json` writes 1e-05), and refuses integers beyond 64 bits, lone surrogates and
  non-string keys.

For *plain* values -- exact dicts, lists, str, int, bool and None, no float
anywhere -- the two agree byte for byte (tests/unit/sandbox/test_sandbox_fastjson.py
holds them to that), so orjson is used exactly there and everything else goes
the stdlib way, with the stdlib's results and errors. Invoice payloads carry
their amounts as strings, so the fast path is the usual one.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

# Built once: json.dumps with non-default arguments builds a new encoder on every call.
_REPLY: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SCALARS: Final = (str, int, bool, type(None))


def is_plain(value: object) -> bool:
    """True when `value` is made of exact dict/list/str/int/bool/None only (no float).

    Iterative, so a deeply nested value cannot hit the recursion limit here.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, child in item.items():
                if type(key) is not str:
                    return False
                stack.append(child)
        elif type(item) is list:
            stack.extend(item)
        elif type(item) not in _SCALARS:
            return False
    return True


#: Levels of nested objects/arrays a request body may have (an invoice needs 3).
MAX_NESTING: Final = 32


class NestingTooDeepError(ValueError):
    """The body nests objects/arrays beyond `MAX_NESTING` (refused with 422, not parsed by
    the recursive stdlib parser, which would exhaust the stack)."""


def loads_request(body: bytes) -> Any:
    """A request body: what `loads` gives, but `NestingTooDeepError` for one nested beyond
    `MAX_NESTING` levels, before the recursive stdlib parser could see it.

    The usual body costs one walk of the parsed value, as `loads` does (depth and
    plainness in the same walk); the byte scan runs only when orjson refused the text."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        if nesting_depth(body) > MAX_NESTING:
            raise NestingTooDeepError(_TOO_DEEP) from None
        return json.loads(body)
    plain, depth = _plain_depth(value)
    if depth > MAX_NESTING:
        raise NestingTooDeepError(_TOO_DEEP)
    return value if plain else json.loads(body)


_TOO_DEEP: Final = f"the body nests objects/arrays beyond {MAX_NESTING} levels"


def _plain_depth(value: object) -> tuple[bool, int]:
    """(`is_plain(value)`, deepest nesting of dicts/lists), iteratively."""
    plain, deepest = True, 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            depth += 1
            deepest = max(deepest, depth)
            if kind is dict:
                for key, child in item.items():  # type: ignore[attr-defined]
                    plain = plain and type(key) is str
                    stack.append((child, depth))
            else:
                stack.extend((child, depth) for child in item)  # type: ignore[attr-defined]
        elif kind not in _SCALARS:
            plain = False
    return plain, deepest


def nesting_depth(body: bytes) -> int:
    """The deepest `{`/`[` nesting of a JSON text, brackets inside strings not counted.

    A linear scan without parsing, so an absurdly nested body is refused before any
    recursive parser sees it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return deepest


def loads(body: bytes) -> Any:
    """`json.loads(body)`: the same value, or the same exception.

    orjson's result is kept only when it is plain: a float in it may have been an
    integer beyond 64 bits in the text, so then the stdlib parses the body again.
    Whatever orjson refuses, the stdlib parses (or refuses) as it always did.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)
    return value if is_plain(value) else json.loads(body)


def reply_bytes(payload: object) -> bytes:
    """`json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()`."""
    if is_plain(payload):
        try:
            return orjson.dumps(payload)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, a lone surrogate
            pass
    return _REPLY.encode(payload).encode()


def canonical(payload: object) -> str:
    """`json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`."""
    if is_plain(payload):
        try:
            return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:
            pass
    return _CANONICAL.encode(payload)
