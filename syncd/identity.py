"""Which document a change belongs to, and the serial that document is invoiced under.

This module is the one home of a document's identity, for every layer: the rules, the
intake, the ledger and the operator commands all use these definitions, so there is no
second way to tell "the same document" that could disagree with this one.

Public API:
    DocumentIdentity          -- document type, source table, key, kind, revision
    DocumentKind              -- ISSUE | REVERSAL
    read_key(...)             -- THE way a document key is read from a change
    serial_for(identity)      -> str, 26 characters of [A-Z0-9]
    canonical_identity(identity) -> bytes   -- what is hashed (versioned)
    canonical_json(value)     -> str  -- the ledger's source key text and payload hash input
    payload_hash(payload)     -> str  -- "sha256:<hex>" of a frozen payload
    SERIAL_LENGTH, SERIAL_PATTERN

Identity is the source row's key, never the Kafka offset: Debezium re-emits the same
change at new offsets, and several changes of one row must map to one invoice. The
ledger's unique constraint is over (document type, table, `source_key`, kind, revision);
`source_key` is the canonical JSON of the key with whole decimals as integers, so a key
typed `Decimal("42")` by one decoder and `42` by another is one document.

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
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final, TypeAlias

from syncd._speedups import quick_init
from syncd.changes import UNAVAILABLE, ColumnValue, Row
from syncd.errors import RecordError

__all__ = [
    "SERIAL_LENGTH",
    "SERIAL_PATTERN",
    "DocumentIdentity",
    "DocumentKind",
    "IdentityError",
    "KeyValue",
    "canonical_identity",
    "canonical_json",
    "key_text",
    "payload_hash",
    "read_key",
    "serial_for",
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


class IdentityError(RecordError, ValueError):
    """A change whose document key cannot be read (a key column missing or of a type no
    primary key has)."""


def read_key(
    row: Row | None, record_key: Row | None, key_columns: Sequence[str], table: str
) -> tuple[tuple[str, KeyValue], ...]:
    """The document key of a change: each key column from the row image, else from the
    Kafka record's key; a whole decimal becomes an int (the ledger's canonical form).

    Raises IdentityError when a column is missing, NULL, not sent, or not an integer,
    decimal or text."""
    parts: list[tuple[str, KeyValue]] = []
    for column in key_columns:
        value: ColumnValue = None
        if row is not None and column in row:
            value = row[column]
        elif record_key is not None and column in record_key:
            value = record_key[column]
        if value is None or value is UNAVAILABLE:
            raise IdentityError(f"key column {column} missing in the change of {table}")
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            raise IdentityError(
                f"key column {column} has a {type(value).__name__} value; document keys must "
                "be integers, decimals or text"
            )
        if type(value) is Decimal and value.is_finite() and value == value.to_integral_value():
            value = int(value)
        parts.append((column, value))
    return tuple(parts)


def key_text(column: str, value: KeyValue) -> str:
    """A key value as the text the serial hashes (`42`, `Decimal("42.0")`, `"42"`: `42`)."""
    return _key_text(column, value)


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
    """What makes one invoice request unique. `key` holds (column, value) pairs;
    `source_key` is their canonical JSON (the ledger's form), derived when not given.

    Two identities are equal when their type, table, `source_key`, kind and revision are:
    a key read back from the ledger (JSON values) equals the one read from a change."""

    document_type: str
    source_table: str
    key: tuple[tuple[str, KeyValue], ...] = field(compare=False)
    kind: DocumentKind
    revision: int = 0
    source_key: str = ""

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
        if not self.source_key:
            object.__setattr__(self, "source_key", source_key_of(key))

    @classmethod
    def of(
        cls,
        document_type: str,
        source_table: str,
        key: Iterable[tuple[str, KeyValue]] | Mapping[str, KeyValue],
        kind: DocumentKind = DocumentKind.ISSUE,
        revision: int = 0,
    ) -> DocumentIdentity:
        pairs = tuple(key.items()) if isinstance(key, Mapping) else tuple(key)
        return cls(document_type, source_table, pairs, kind, revision)

    @classmethod
    def stored(
        cls,
        document_type: str,
        source_table: str,
        source_key: str,
        kind: DocumentKind,
        revision: int,
    ) -> DocumentIdentity:
        """The identity of a ledger row: `source_key` kept exactly as stored."""
        parsed = json.loads(source_key)
        pairs = tuple(parsed.items()) if isinstance(parsed, dict) and parsed else (("?", "?"),)
        return cls(document_type, source_table, pairs, kind, revision, source_key)

    def for_reversal(self) -> DocumentIdentity:
        """The reversal of this (issue) document: same key and revision."""
        return DocumentIdentity(
            self.document_type,
            self.source_table,
            self.key,
            DocumentKind.REVERSAL,
            self.revision,
            self.source_key,
        )

    def __str__(self) -> str:
        return (
            f"{self.document_type}:{self.source_table}{self.source_key}"
            f"/{self.kind.value}/r{self.revision}"
        )


def source_key_of(key: Iterable[tuple[str, KeyValue]]) -> str:
    """The ledger's text of a key: canonical JSON, whole decimals as integers."""
    if type(key) is tuple and len(key) == 1:
        # the usual key, one integer or text column: the same text canonical_json makes,
        # without its encoder (built for every identity, several per document)
        name, value = key[0]
        if type(value) is int:
            return f"{{{_json_text(name)}:{value}}}"
        if type(value) is str:
            return f"{{{_json_text(name)}:{_json_text(value)}}}"
    values: dict[str, Any] = {}
    for name, value in key:
        if type(value) is Decimal and value.is_finite() and value == value.to_integral_value():
            value = int(value)
        values[name] = value
    return canonical_json(values)


def _json_default(value: object) -> object:
    # Decimals become strings (the wire format's rule for money); the rest are the key
    # types a primary key can have.
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON-serialisable for the ledger: {type(value).__name__}")


#: what json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
#: default=_json_default) would build on every call
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)
json_default: Final = _json_default
#: JSON string literal as canonical_json writes it (ensure_ascii=False)
_json_text: Final = json.encoder.encode_basestring


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is, decimals as text.

    The ledger's source key (part of the unique identity) and the payload hash input:
    the same value always yields the same text. **Never change it**: stored keys and
    hashes were computed with it."""
    return _CANONICAL.encode(value)


def payload_hash(payload: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of a frozen payload's canonical JSON (stored beside the payload;
    proves what is sent is what was frozen)."""
    return "sha256:" + hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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
