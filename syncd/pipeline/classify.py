"""Classify: what one Kafka record means, before any database work (pure, the hot path).

Decode (`syncd.debezium`), route by table to its document type, decide (`syncd.rules`):
every record becomes exactly one `Classified` -- ISSUE, REVERSE, IGNORE, HEARTBEAT or
DEAD_LETTER with a reason. `Classifier.classify` never raises: a record that makes any stage
fail, in any way, is DEAD_LETTER (see `syncd.pipeline.poison`), so one record can never stop
the consumer loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from syncd._speedups import quick_init
from syncd.changes import (
    ChangeEvent,
    DecodedRecord,
    DecodeError,
    Heartbeat,
    ProbedChange,
    QuietUpdate,
    RecordPosition,
    Tombstone,
    TransactionMarker,
)
from syncd.config import DocumentConfig, SyncdConfig
from syncd.debezium import DecodeOptions, decode_record
from syncd.debezium.limits import DecodeLimits
from syncd.rules.decide import (
    NOTHING_CHANGED,
    OWN_WRITE_BACK,
    Action,
    Decision,
    DocumentRules,
    decide,
    decide_return,
)
from syncd.safetext import printable, reason_of


class Kind(enum.StrEnum):
    """What one record turned out to be, before any database work."""

    ISSUE = "issue"
    REVERSE = "reverse"
    RETURN = "return"  # a partial red invoice from a return table
    CREDIT = "credit"  # a credit note row: a red invoice for the document it credits
    IGNORE = "ignore"
    HEARTBEAT = "heartbeat"
    DEAD_LETTER = "dead_letter"


_IGNORE: Final = Action.IGNORE

#: What a decision's action means for the intake (any other action is dead-lettered);
#: a dict lookup, because matching on enum members is slow on Python 3.11.
_KIND_OF_ACTION: dict[Action, Kind] = {
    Action.ISSUE: Kind.ISSUE,
    Action.REVERSE: Kind.REVERSE,
    Action.IGNORE: Kind.IGNORE,
    Action.RETURN: Kind.RETURN,
    Action.CREDIT: Kind.CREDIT,
}


@quick_init
@dataclass(frozen=True, slots=True)
class Classified:
    position: RecordPosition
    kind: Kind
    reason: str
    key: bytes | None = None
    value: bytes | None = None
    event: ChangeEvent | None = None
    doc: DocumentConfig | None = None
    decision: Decision | None = None
    heartbeat_ts_ms: int | None = None
    #: short machine label for metrics/headers (dead letters)
    code: str = ""
    #: source commit time of a change recognised without a ChangeEvent (a quiet update)
    source_ts_ms: int | None = None


class Classifier:
    """Decode + route + decide, pure and fast (the hot path of the consumer loop)."""

    def __init__(self, config: SyncdConfig) -> None:
        self._config = config
        self._by_table: dict[str, DocumentConfig] = {d.table: d for d in config.documents.values()}
        # what `decide` reads from each document, derived once (not per event)
        self._rules: dict[str, DocumentRules] = {
            d.table: DocumentRules.of(d) for d in config.documents.values()
        }
        # An update of a document table that changed only syncd's own write-back columns
        # (every write-back echoes as one) is ignored by `decide` whatever else it holds:
        # the decoder recognises it from the wire values, without converting its rows.
        quiet = {table: r.own_columns for table, r in self._rules.items() if r.own_columns}
        # rows of return tables: decided by `decide_return` against their document type
        self._returns: dict[str, DocumentConfig] = config.return_tables()
        for table, owner in self._returns.items():
            assert owner.returns is not None
            quiet[table] = frozenset(owner.returns.own_columns())
        # A new row (insert, snapshot read) is decided from the few columns the rules
        # read; only one they act on is decoded in full (see `_classify_probed`).
        probe = {d.table: _probe_columns(d) for d in config.documents.values()}
        self._full_options = decode_options(config)
        self._options = replace(self._full_options, quiet_update_columns=quiet, probe_columns=probe)
        self._line_tables = {d.lines.table for d in config.documents.values()}

    def classify(
        self, position: RecordPosition, key: bytes | None, value: bytes | None
    ) -> Classified:
        """What one record means; never raises (see `syncd.pipeline.poison`): a record
        that makes any stage fail, in any way, is classified DEAD_LETTER with the failure
        as its reason."""
        try:
            try:
                record: DecodedRecord = decode_record(position, key, value, self._options)
            except DecodeError:
                return self._classify_full(position, key, value)  # the full decode's words
            if type(record) is ChangeEvent:  # the common case, before the pattern match
                return self._classify_change(record, key, value)
            return self._classify_record(record, key, value)
        except Exception as exc:  # poison: whatever this record raised, it alone is bad
            return Classified(
                position, Kind.DEAD_LETTER, reason_of(exc), key, value, code="unprocessable"
            )

    def _classify_record(
        self, record: DecodedRecord, key: bytes | None, value: bytes | None
    ) -> Classified:
        position = record.position
        if type(record) is ProbedChange:
            return self._classify_probed(record.event, key, value)
        if type(record) is QuietUpdate:
            # the reasons `decide` gives for the same update
            reason = OWN_WRITE_BACK if record.changed else NOTHING_CHANGED
            return Classified(position, Kind.IGNORE, reason, source_ts_ms=record.source_ts_ms)
        match record:
            case Heartbeat(ts_ms=ts):
                return Classified(position, Kind.HEARTBEAT, "heartbeat", heartbeat_ts_ms=ts)
            case Tombstone() | TransactionMarker():
                return Classified(position, Kind.IGNORE, type(record).__name__.lower())
            case ChangeEvent():
                return self._classify_change(record, key, value)
        raise AssertionError(f"unhandled record {record!r}")  # pragma: no cover

    def _classify_full(
        self, position: RecordPosition, key: bytes | None, value: bytes | None
    ) -> Classified:
        """Decode without shortcuts: for records the rules act on, and bad records."""
        try:
            record = decode_record(position, key, value, self._full_options)
        except DecodeError as exc:
            return Classified(
                position, Kind.DEAD_LETTER, printable(exc.reason), key, value, code="undecodable"
            )
        return self._classify_record(record, key, value)

    def _classify_probed(
        self, event: ChangeEvent, key: bytes | None, value: bytes | None
    ) -> Classified:
        """A new row whose after image holds only the columns `decide` reads: ignoring it
        is decided here; anything else is decided again on the whole row."""
        doc = self._by_table[event.table]
        try:
            decision = decide(event, doc, self._rules[event.table])
        except (ValueError, TypeError, ArithmeticError):
            decision = None
        if decision is None or decision.action is not _IGNORE:
            return self._classify_full(event.position, key, value)
        return Classified(
            event.position,
            Kind.IGNORE,
            decision.reason,
            doc=doc,
            decision=decision,
            source_ts_ms=event.source_ts_ms,
        )

    def _classify_change(
        self, event: ChangeEvent, key: bytes | None, value: bytes | None
    ) -> Classified:
        position = event.position
        doc = self._by_table.get(event.table)
        if doc is None:
            owner = self._returns.get(event.table)
            if owner is not None:
                return self._classify_return(event, owner, key, value)
            if event.table in self._line_tables:
                return Classified(
                    position,
                    Kind.IGNORE,
                    "line table change (lines are read from the database at issue time)",
                    event=event,
                )
            return Classified(
                position,
                Kind.DEAD_LETTER,
                f"no document type is configured for table {event.table}",
                key,
                value,
                event=event,
                code="unroutable",
            )
        return _verdict(
            event, doc, key, value, lambda: decide(event, doc, self._rules[event.table])
        )

    def _classify_return(
        self, event: ChangeEvent, doc: DocumentConfig, key: bytes | None, value: bytes | None
    ) -> Classified:
        return _verdict(event, doc, key, value, lambda: decide_return(event, doc))


def decode_options(config: SyncdConfig) -> DecodeOptions:
    """Decoder settings from the config: scales of schemaless precise decimals, and the
    decoder's share of the `limits`."""
    scales = {
        f"{table}.{column}": scale
        for table, columns in config.decimal_scales.items()
        for column, scale in columns.items()
    }
    limits = DecodeLimits(**config.limits.model_dump(exclude={"max_lines_per_document"}))
    return DecodeOptions(decimal_scales=scales, limits=limits)


def _probe_columns(doc: DocumentConfig) -> tuple[str, ...]:
    """Every column `decide` reads from a new row of `doc.table`."""
    columns = set(doc.qualifies.columns()) | set(doc.key_columns)
    if doc.reverses is not None:
        columns |= doc.reverses.columns()
    if doc.reissues is not None:
        columns |= doc.reissues.columns()
    columns.add(doc.write_back.columns.invoice_no)
    return tuple(sorted(columns))


def _verdict(
    event: ChangeEvent,
    doc: DocumentConfig,
    key: bytes | None,
    value: bytes | None,
    decide_now: Callable[[], Decision],
) -> Classified:
    """The record's kind from a decision: a decision that raises (e.g. a key column
    missing) or names no action the pipeline acts on is a dead letter (`undecidable` /
    `undecided`), never an exception."""
    try:
        decision = decide_now()
    except (ValueError, TypeError, ArithmeticError) as exc:
        return Classified(
            event.position,
            Kind.DEAD_LETTER,
            printable(str(exc)),
            key,
            value,
            event=event,
            doc=doc,
            code="undecidable",
        )
    kind = _KIND_OF_ACTION.get(decision.action)
    if kind is None:
        return Classified(
            event.position,
            Kind.DEAD_LETTER,
            decision.reason,
            key,
            value,
            event=event,
            doc=doc,
            decision=decision,
            code="undecided",
        )
    return Classified(
        event.position, kind, decision.reason, key, value, event=event, doc=doc, decision=decision
    )
