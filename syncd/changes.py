"""Typed records produced by the Debezium decoder (`syncd.debezium`).

These types are the contract between decoding and everything downstream
(decision rules, mapping, the pipeline). They carry no I/O and no Kafka client
objects, so the pure logic can be tested with plain values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Final, TypeAlias

from syncd._speedups import quick_init
from syncd.errors import RecordError


class _Unavailable:
    """Marker for a value Debezium did not send (unchanged TOASTed column).

    It is a distinct object, never a string, so it can never be written anywhere
    by accident: `str()` of it is not the placeholder text.
    """

    _instance: _Unavailable | None = None

    def __new__(cls) -> _Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False


UNAVAILABLE: Final = _Unavailable()

ColumnValue: TypeAlias = (
    bool
    | int
    | Decimal
    | str
    | bytes
    | date
    | datetime
    | time
    | list["ColumnValue"]
    | dict[str, "ColumnValue"]
    | _Unavailable
    | None
)
Row: TypeAlias = Mapping[str, ColumnValue]


@quick_init
@dataclass(frozen=True, slots=True)
class RecordPosition:
    """Where a record came from; attached to every error and log line about it."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Op(enum.StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot read
    TRUNCATE = "t"
    MESSAGE = "m"


@quick_init
@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change. `table` is `schema.table` (MySQL: `database.table`)."""

    position: RecordPosition
    op: Op
    table: str
    key: Row | None
    before: Row | None
    after: Row | None
    source_ts_ms: int | None  # database commit time, from source.ts_ms
    snapshot: bool  # True for snapshot reads (source.snapshot true/first/last/...)
    transaction_id: str | None = None
    lsn: int | None = None
    source: Mapping[str, object] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class Tombstone:
    """The null-valued record Debezium sends after a delete (log compaction marker)."""

    position: RecordPosition
    key: Row | None


@quick_init
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A Debezium heartbeat: proves the source is alive although no table changed."""

    position: RecordPosition
    ts_ms: int


@dataclass(frozen=True, slots=True)
class TransactionMarker:
    """A record of the `<prefix>.transaction` topic (BEGIN/END of a DB transaction)."""

    position: RecordPosition
    status: str  # "BEGIN" | "END"
    transaction_id: str
    event_count: int | None
    data_collections: tuple[tuple[str, int], ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class QuietUpdate:
    """An update that changed only columns the caller declared quiet for its table.

    Produced only when `DecodeOptions.quiet_update_columns` names the table (the
    daemon's classifier passes each document's own write-back columns): such an
    update is recognised from its wire values -- equal wire values decode to equal
    values -- and its row images are not converted. `changed` may be empty (an update
    that changed nothing).
    """

    position: RecordPosition
    table: str
    changed: frozenset[str]
    source_ts_ms: int | None


@quick_init
@dataclass(frozen=True, slots=True)
class ProbedChange:
    """An insert or snapshot read decoded for a first look only.

    Produced only when `DecodeOptions.probe_columns` names the table (the daemon's
    classifier passes the columns its rules read): `event.after` holds just those
    columns, converted; the others are neither converted nor checked, and the record's
    key is not decoded (`event.key` is None: the probed columns must name the row).
    Most inserts of an ERP are drafts the rules ignore, and a first look at a few
    columns says so. The event is not a whole row: decode the record again without the
    option before using it for anything but deciding.
    """

    event: ChangeEvent

    @property
    def position(self) -> RecordPosition:
        return self.event.position


DecodedRecord: TypeAlias = (
    ChangeEvent | QuietUpdate | ProbedChange | Tombstone | Heartbeat | TransactionMarker
)


class DecodeError(RecordError):
    """The one error the decoder raises: says which record and precisely what is wrong."""

    def __init__(self, position: RecordPosition | None, reason: str) -> None:
        self.position = position
        self.reason = reason
        where = str(position) if position is not None else "<unknown record>"
        super().__init__(f"{where}: {reason}")
