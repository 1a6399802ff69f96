"""Deterministic invoice serials: the idempotency key sent to the platform.

Public API:
    DocumentIdentity          -- document type, source table, key, kind, revision
    DocumentKind              -- ISSUE | REVERSAL
    serial_for(identity)      -> str, 26 characters of [A-Z0-9]
    canonical_identity(identity) -> bytes   -- what is hashed (versioned)
    source_ref(identity)      -> SourceRef  -- the invoice's `source` block
    SERIAL_LENGTH, SERIAL_PATTERN

Why deterministic: the platforms refuse a repeated serial instead of answering
with the first invoice, and a fresh serial after an unknown outcome is how
duplicate invoices are made. Deriving the serial from the document identity
means every replica, restart and replay asks about the *same* serial.

The value is "S" + the first 25 Crockford base32 characters (125 bits) of
SHA-256 over a versioned canonical encoding. **The encoding must never change**
(serials of documents already issued would change): tests pin known values.
Key columns are sorted by name and values reduced to text (`42`, `Decimal("42")`
and `"42"` give the same serial), so neither the primary key's column order in
the config nor how a decoder typed a numeric key can mint a second serial.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeAlias

from syncd._speedups import quick_init
from syncd.invoice.model import SourceRef

__all__ = [
    "SERIAL_LENGTH",
    "SERIAL_PATTERN",
    "DocumentIdentity",
    "DocumentKind",
    "KeyValue",
    "canonical_identity",
    "serial_for",
    "source_ref",
]

SERIAL_LENGTH: Final = 26
SERIAL_PATTERN: Final = re.compile(r"[A-Z0-9]{8,32}")
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# RFC 4648 base32 reads 5-bit groups most significant first, like `_crockford`; only the
# alphabet differs, so a byte translation turns its output into Crockford's.
_FROM_RFC4648: Final = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
_VERSION: Final = "syncd.serial/v1"
# What json.dumps(parts, ensure_ascii=False, separators=(",", ":")) builds on every call.
_IDENTITY_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

KeyValue: TypeAlias = int | str | Decimal


class DocumentKind(enum.StrEnum):
    ISSUE = "issue"
    REVERSAL = "reversal"


def _key_text(column: str, value: KeyValue) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise TypeError(f"key column {column!r}: unsupported key value type {type(value).__name__}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"key column {column!r}: key value must be finite, got {value}")
        return "0" if value.is_zero() else format(value.normalize(), "f")
    return str(value)


@quick_init
@dataclass(frozen=True, slots=True)
class DocumentIdentity:
    """What makes one invoice request unique. `key` holds (column, value) pairs."""

    document_type: str
    source_table: str
    key: tuple[tuple[str, KeyValue], ...]
    kind: DocumentKind
    revision: int = 0

    def __post_init__(self) -> None:
        # built for every issue/reverse decision: the usual key (one int or text column,
        # `type` rules out bool) is checked without the general path
        key = self.key
        if not key:
            raise ValueError("a document identity needs at least one key column")
        if len(key) > 1:
            names = [name for name, _ in key]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate key column in {names}")
        for name, value in key:
            if type(value) is not int and type(value) is not str:
                _key_text(name, value)
        revision = self.revision
        if type(revision) is not int and (
            isinstance(revision, bool) or not isinstance(revision, int)
        ):
            raise TypeError("revision must be an int")
        if revision < 0:
            raise ValueError(f"revision must be >= 0, got {revision}")
        if type(self.kind) is not DocumentKind:
            raise TypeError("kind must be a DocumentKind")

    @classmethod
    def of(
        cls,
        document_type: str,
        source_table: str,
        key: Iterable[tuple[str, KeyValue]],
        kind: DocumentKind = DocumentKind.ISSUE,
        revision: int = 0,
    ) -> DocumentIdentity:
        return cls(document_type, source_table, tuple(key), kind, revision)


def canonical_identity(identity: DocumentIdentity) -> bytes:
    """The exact bytes hashed into the serial (version tag first; keys sorted by name)."""
    key = sorted((name, _key_text(name, value)) for name, value in identity.key)
    parts = [
        _VERSION,
        identity.document_type,
        identity.source_table,
        [[name, text] for name, text in key],
        identity.kind.value,
        identity.revision,
    ]
    return _IDENTITY_JSON.encode(parts).encode("utf-8")


def _crockford(data: bytes, length: int) -> str:
    """The first `length` Crockford base32 digits of `data`, most significant first: the
    definition (`_crockford_prefix` computes the same, faster; a test holds them equal)."""
    number = int.from_bytes(data, "big")
    bits = len(data) * 8
    chars = []
    for i in range(length):
        shift = bits - 5 * (i + 1)
        chars.append(_CROCKFORD[(number >> shift) & 0x1F])
    return "".join(chars)


def _crockford_prefix(data: bytes, length: int) -> str:
    """`_crockford(data, length)` through the C base32 encoder (the per-invoice path)."""
    needed = (5 * length + 7) // 8  # whole bytes covering the first `length` groups
    encoded = base64.b32encode(data[:needed])[:length]
    return encoded.translate(_FROM_RFC4648).decode("ascii")


def serial_for(identity: DocumentIdentity) -> str:
    """The serial for `identity`: same input, same serial, forever."""
    digest = hashlib.sha256(canonical_identity(identity)).digest()
    return "S" + _crockford_prefix(digest, SERIAL_LENGTH - 1)


def source_ref(identity: DocumentIdentity) -> SourceRef:
    """The invoice's `source` block for `identity` (key values as int or text)."""
    return SourceRef(
        document=identity.document_type,
        table=identity.source_table,
        key={
            name: value if isinstance(value, int) else _key_text(name, value)
            for name, value in identity.key
        },
        revision=identity.revision,
    )
