"""`syncd status -c CONFIG [--json]`: what the ledger, the partitions and the dead letters say.

`syncd status -c CONFIG --document REF [--json]`: the history of one source document --
every revision with its blue invoice and, when reversed, its red one (REF as for `retry`).

Read-only and safe while the daemon runs: plain SELECTs on the ledger, watermark and
committed-offset look-ups in Kafka (the consumer never subscribes, so it never joins the
daemon's group).

A part that cannot be read is reported as unknown, never as zero: with the database down
the report does not say "0 documents", it says the ledger was not read, and the command
exits with the code of the unreachable dependency (`syncd.commands.EXIT_*`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import SyncdConfig
    from syncd.ledger.models import DocumentRow

HELP = "ledger counts, stuck and parked documents, partition lag and leases, dead letters"

PARKED_LIMIT = 100


@dataclass(slots=True)
class DocumentLine:
    id: int
    document: str
    key: str
    kind: str
    revision: int
    serial: str
    state: str
    attempts: int
    last_error_code: str | None
    last_error: str | None
    updated_at: str
    next_attempt_at: str | None


@dataclass(slots=True)
class PartitionLine:
    topic: str
    partition: int
    stored_offset: int | None
    kafka_committed: int | None
    high_watermark: int | None
    lag: int | None
    lease_owner: str | None
    lease_epoch: int | None
    #: non-terminal documents of this partition in the ledger (None: ledger not read)
    open_documents: int | None = None
    #: why the daemon holds this partition paused, as far as the ledger shows it
    paused: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DeadLetterTopic:
    topic: str
    exists: bool
    messages: int | None


@dataclass(slots=True)
class StatusReport:
    group: str
    schema: str
    stuck_after_seconds: float
    #: documents per state; None when the ledger could not be read (unknown, not zero)
    counts: dict[str, int] | None = None
    stuck: list[DocumentLine] = field(default_factory=list)
    parked: list[DocumentLine] = field(default_factory=list)
    invalid: list[DocumentLine] = field(default_factory=list)
    awaiting_approval: list[DocumentLine] = field(default_factory=list)
    partitions: list[PartitionLine] = field(default_factory=list)
    dead_letter: DeadLetterTopic | None = None
    #: dependency ("database", "kafka") -> the one line that says it is unreachable
    unreachable: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ledger_read(self) -> bool:
        return self.counts is not None

    @property
    def kafka_read(self) -> bool:
        return "kafka" not in self.unreachable

    def exit_code(self) -> int:
        from syncd.commands import EXIT_FAILED, EXIT_OK, unreachable_exit

        if self.unreachable:
            return unreachable_exit(self.unreachable)
        return EXIT_FAILED if self.errors else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = sum(self.counts.values()) if self.counts is not None else None
        data["paused_partitions"] = [
            {"topic": p.topic, "partition": p.partition, "reasons": p.paused}
            for p in self.partitions
            if p.paused
        ]
        data["ok"] = not (self.unreachable or self.errors)
        data["exit_code"] = self.exit_code()
        return data


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a non-terminal document not updated for this long is stuck (default 300)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--document",
        metavar="REF",
        help="show one document's revisions and invoices instead: ledger id, serial, or "
        '<document_type>:<json key> such as sales_order:{"id":42}',
    )
    parser.add_argument(
        "--kafka-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="timeout of each Kafka look-up (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit, say

    config = load_config_or_exit(args.config, "status")
    if getattr(args, "document", None):
        return run_document(config, args.document, as_json=bool(args.json))
    report = collect(config, stuck_after=args.stuck_after, kafka_timeout=args.kafka_timeout)
    for line in report.unreachable.values():
        say("status", line)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    elif report.ledger_read or report.kafka_read:
        sys.stdout.write(render_text(report))
    return report.exit_code()


# --------------------------------------------------------------------------- collecting


def _line(row: DocumentRow) -> DocumentLine:
    return DocumentLine(
        id=row.id,
        document=row.identity.document_type,
        key=row.identity.source_key,
        kind=row.kind.value,
        revision=row.identity.revision,
        serial=row.serial,
        state=row.state.value,
        attempts=row.attempts,
        last_error_code=row.last_error_code,
        last_error=row.last_error,
        updated_at=_iso(row.updated_at),
        next_attempt_at=_iso(row.next_attempt_at) if row.next_attempt_at else None,
    )


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def collect(config: SyncdConfig, *, stuck_after: float, kafka_timeout: float = 5.0) -> StatusReport:
    """Gather everything; a part that cannot be read becomes an entry in `unreachable`
    (its dependency is down) or `errors` (it answered, but not as expected)."""
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import (
        DATABASE,
        database_reason,
        database_unreachable,
        is_connection_error,
    )
    from syncd.ledger.engine import ledger_engine
    from syncd.ledger.models import TopicPartition

    group = config.kafka.group_id
    report = StatusReport(
        group=group, schema=config.database.schema_name, stuck_after_seconds=stuck_after
    )
    kafka = _kafka_view(config, kafka_timeout, report)
    tps = [TopicPartition(t, p) for t, p in sorted(kafka)]
    ledger = _LedgerView()
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        _read_ledger(engine, config, report, tps, stuck_after, ledger)
    except DBAPIError as exc:
        report.counts = None
        if is_connection_error(exc):
            report.unreachable[DATABASE] = database_unreachable(config, exc)
        else:
            report.errors.append(
                f"ledger: {database_reason(exc)} (is the schema migrated? "
                "`syncd migrate -c CONFIG --check`)"
            )
    finally:
        engine.dispose()
    for tp in tps:
        high, committed = kafka[(tp.topic, tp.partition)]
        position = ledger.stored.get(tp)
        base = position if position is not None else committed
        lag = None
        if high is not None:
            lag = max(0, high - base) if base is not None else high
        lease = ledger.leases.get(tp)
        report.partitions.append(
            PartitionLine(
                tp.topic,
                tp.partition,
                position,
                committed,
                high,
                lag,
                lease[1] if lease else None,
                lease[0] if lease else None,
                ledger.open_by_tp.get((tp.topic, tp.partition), 0) if report.ledger_read else None,
            )
        )
    if report.ledger_read:
        mark_paused(
            report.partitions,
            max_in_flight=config.pipeline.max_in_flight,
            per_partition=config.pipeline.max_in_flight_per_partition,
        )
    return report


@dataclass(slots=True)
class _LedgerView:
    stored: dict[Any, int] = field(default_factory=dict)
    leases: dict[Any, tuple[int, str | None]] = field(default_factory=dict)
    open_by_tp: dict[tuple[str, int], int] = field(default_factory=dict)


def _read_ledger(
    engine: Any,
    config: SyncdConfig,
    report: StatusReport,
    tps: list[Any],
    stuck_after: float,
    out: _LedgerView,
) -> None:
    import sqlalchemy as sa

    from syncd.ledger import repository as repo
    from syncd.ledger.schema import documents
    from syncd.lifecycle import TERMINAL_STATES, WAITING_FOR_PEOPLE, DocumentState

    group = config.kafka.group_id
    with engine.connect() as conn:
        counts = {s.value: n for s, n in repo.count_by_state(conn).items()}
        report.stuck = [
            _line(r)
            for r in repo.stuck_documents(conn, timedelta(seconds=stuck_after), limit=PARKED_LIMIT)
        ]
        report.parked = [
            _line(r)
            for r in repo.documents_in_states(
                conn, [DocumentState.DEAD, DocumentState.BLOCKED], limit=PARKED_LIMIT
            )
        ]
        report.invalid = [
            _line(r)
            for r in repo.documents_in_states(conn, [DocumentState.INVALID], limit=PARKED_LIMIT)
        ]
        report.awaiting_approval = [
            _line(r)
            for r in repo.documents_in_states(
                conn, [DocumentState.AWAITING_APPROVAL], limit=PARKED_LIMIT
            )
        ]
        q = (
            sa.select(documents.c.source_topic, documents.c.source_partition, sa.func.count())
            .where(
                # waiting for a person holds no in-flight slot of the daemon
                documents.c.state.not_in([s.value for s in TERMINAL_STATES | WAITING_FOR_PEOPLE]),
                documents.c.source_topic.is_not(None),
            )
            .group_by(documents.c.source_topic, documents.c.source_partition)
        )
        out.open_by_tp = {(str(t), int(p)): int(n) for t, p, n in conn.execute(q) if p is not None}
        out.stored = dict(repo.load_offsets(conn, group, tps))
        out.leases = dict(repo.lease_epochs(conn, group, tps))
    report.counts = counts


def mark_paused(
    partitions: list[PartitionLine], *, max_in_flight: int, per_partition: int | None
) -> None:
    """Set each partition's `paused` reasons as the daemon's own rules would pause it, from
    what the ledger shows (the daemon's pause flags live in its memory; its
    `syncd_partitions_paused` gauge counts them per pod):

    * no replica holds the partition's lease while records wait: nobody consumes it;
    * its open documents reach `pipeline.max_in_flight_per_partition`;
    * the open documents of the replica holding it reach `pipeline.max_in_flight`: that
      replica pauses all its partitions.
    """
    per_owner: dict[str, int] = {}
    for p in partitions:
        if p.lease_owner is not None:
            per_owner[p.lease_owner] = per_owner.get(p.lease_owner, 0) + (p.open_documents or 0)
    for p in partitions:
        reasons: list[str] = []
        waiting = (p.lag or 0) > 0 or (p.open_documents or 0) > 0
        if p.lease_owner is None and waiting:
            reasons.append("no replica holds its lease: nobody consumes it")
        if per_partition is not None and (p.open_documents or 0) >= per_partition:
            reasons.append(
                f"{p.open_documents} open documents reach "
                f"pipeline.max_in_flight_per_partition ({per_partition})"
            )
        if p.lease_owner is not None and per_owner[p.lease_owner] >= max_in_flight:
            reasons.append(
                f"replica {p.lease_owner} holds {per_owner[p.lease_owner]} open documents, "
                f"pipeline.max_in_flight is {max_in_flight}: it pauses all its partitions"
            )
        p.paused = reasons


def _kafka_view(
    config: SyncdConfig, timeout: float, report: StatusReport
) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """(topic, partition) -> (high watermark, Kafka committed offset of the group)."""
    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    from syncd.commands import KAFKA, is_kafka_unreachable, kafka_reason, kafka_unreachable
    from syncd.kafka.client import operator_config

    out: dict[tuple[str, int], tuple[int | None, int | None]] = {}
    consumer = Consumer(
        operator_config(
            config.kafka,
            client_id="syncd-status",
            timeout=timeout,
            consumer=True,
            overrides={"group.id": config.kafka.group_id, "enable.auto.commit": False},
        )
    )
    dlq = config.kafka.dead_letter_topic
    try:
        md = consumer.list_topics(timeout=timeout)
        for topic in config.topics():
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                report.warnings.append(f"kafka: topic {topic} does not exist (yet)")
                continue
            parts = [KafkaTopicPartition(topic, p) for p in sorted(meta.partitions)]
            committed = {
                (c.topic, c.partition): c.offset for c in consumer.committed(parts, timeout=timeout)
            }
            for p in parts:
                _low, high = consumer.get_watermark_offsets(p, timeout=timeout, cached=False)
                c = committed.get((p.topic, p.partition))
                out[(p.topic, p.partition)] = (
                    int(high),
                    int(c) if c is not None and c >= 0 else None,
                )
        meta = md.topics.get(dlq)
        if meta is None or meta.error is not None:
            report.dead_letter = DeadLetterTopic(dlq, False, 0)
        else:
            total = 0
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    KafkaTopicPartition(dlq, p), timeout=timeout, cached=False
                )
                total += int(high) - int(low)
            report.dead_letter = DeadLetterTopic(dlq, True, total)
    except KafkaException as exc:
        if is_kafka_unreachable(exc):
            report.unreachable[KAFKA] = kafka_unreachable(config, exc)
            out.clear()
        else:
            report.errors.append(f"kafka: {kafka_reason(exc)}")
    finally:
        consumer.close()
    return out


# --------------------------------------------------------------------------- rendering


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join("  " + line for line in lines) + "\n"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _doc_rows(docs: list[DocumentLine]) -> list[list[str]]:
    return [
        [
            str(d.id),
            d.document,
            d.key,
            f"{d.kind}/r{d.revision}",
            d.serial,
            d.state,
            str(d.attempts),
            d.updated_at,
            _short(f"[{d.last_error_code}] {d.last_error}" if d.last_error else None),
        ]
        for d in docs
    ]


DOC_HEADERS = ["ID", "DOCUMENT", "KEY", "KIND", "SERIAL", "STATE", "ATT", "UPDATED", "LAST ERROR"]


def render_text(report: StatusReport) -> str:
    out = [f"syncd status  (group {report.group}, ledger schema {report.schema})\n\n"]
    if report.unreachable or report.errors:
        out.append("INCOMPLETE -- what follows is not the whole picture:\n")
        out += [f"  {line}\n" for line in report.unreachable.values()]
        out += [f"  {e}\n" for e in report.errors]
        out.append("\n")
    if report.counts is None:
        out.append("Documents by state: UNKNOWN (the ledger was not read)\n")
    else:
        total = sum(report.counts.values())
        out.append(f"Documents by state ({total} total):\n")
        nonzero = [[s, str(n)] for s, n in report.counts.items() if n]
        out.append(_table(["STATE", "COUNT"], nonzero) if nonzero else "  (none)\n")
    sections = (
        (f"Stuck (not terminal, untouched for {report.stuck_after_seconds:.0f} s)", report.stuck),
        ("Dead / blocked (need an operator; `syncd retry --document ID`)", report.parked),
        ("Invalid (the ERP data is wrong: correct the ERP row; not retryable)", report.invalid),
        (
            "Awaiting approval (`syncd approve|reject --document ID --reason TEXT`)",
            report.awaiting_approval,
        ),
    )
    for title, docs in sections:
        if report.counts is None:
            out.append(f"\n{title}: UNKNOWN\n")
            continue
        more = "+" if len(docs) >= PARKED_LIMIT else ""
        out.append(f"\n{title}: {len(docs)}{more}\n")
        if docs:
            out.append(_table(DOC_HEADERS, _doc_rows(docs)))
    out.append("\nPartitions:\n")
    if not report.kafka_read:
        out.append("  UNKNOWN (Kafka was not read)\n")
    elif report.partitions:
        out.append(
            _table(
                [
                    "TOPIC",
                    "PART",
                    "STORED",
                    "KAFKA COMMITTED",
                    "HIGH",
                    "LAG",
                    "LEASE OWNER",
                    "EPOCH",
                    "OPEN",
                    "PAUSED",
                ],
                [
                    [
                        p.topic,
                        str(p.partition),
                        _opt(p.stored_offset),
                        _opt(p.kafka_committed),
                        _opt(p.high_watermark),
                        _opt(p.lag),
                        p.lease_owner or "-",
                        _opt(p.lease_epoch),
                        _opt(p.open_documents),
                        "yes" if p.paused else ("?" if p.open_documents is None else "no"),
                    ]
                    for p in report.partitions
                ],
            )
        )
    else:
        out.append("  (none found)\n")
    paused = [p for p in report.partitions if p.paused]
    if paused:
        out.append(f"\nPaused partitions: {len(paused)}\n")
        out += [f"  {p.topic}[{p.partition}]: {'; '.join(p.paused)}\n" for p in paused]
    if report.dead_letter is not None:
        d = report.dead_letter
        size = f"{d.messages} record(s)" if d.exists else "does not exist yet (no dead letters)"
        out.append(f"\nDead-letter topic {d.topic}: {size}\n")
    if report.warnings:
        out.append("\nNotes:\n" + "".join(f"  {w}\n" for w in report.warnings))
    return "".join(out)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------- one document


@dataclass(slots=True)
class InvoiceLine:
    """One ledger row of a document's history: a blue invoice or the red one reversing it."""

    id: int
    kind: str
    serial: str
    state: str
    invoice_no: str | None
    issued_at: str | None
    last_error: str | None


@dataclass(slots=True)
class RevisionLine:
    revision: int
    blue: InvoiceLine | None = None
    red: InvoiceLine | None = None
    #: partial red invoices (rows of the return table) against this revision's blue one
    returns: list[InvoiceLine] = field(default_factory=list)


@dataclass(slots=True)
class DocumentHistory:
    document: str
    key: str
    revisions: list[RevisionLine] = field(default_factory=list)

    @property
    def current_invoice_no(self) -> str | None:
        """The number the ERP row carries: the newest revision's blue invoice."""
        for rev in reversed(self.revisions):
            if rev.blue is not None and rev.blue.invoice_no is not None:
                return rev.blue.invoice_no
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["current_invoice_no"] = self.current_invoice_no
        data["ok"] = True
        data["exit_code"] = 0
        return data


def _invoice_line(row: DocumentRow) -> InvoiceLine:
    return InvoiceLine(
        id=row.id,
        kind=row.kind.value,
        serial=row.serial,
        state=row.state.value,
        invoice_no=row.invoice_no,
        issued_at=_iso(row.issued_at) if row.issued_at else None,
        last_error=row.last_error,
    )


def history_of(
    rows: list[DocumentRow], returns: dict[int, list[DocumentRow]] | None = None
) -> DocumentHistory:
    """The ledger rows of one source document, grouped by revision; `returns`: issue row
    id -> its partial reversal rows (returns)."""
    first = rows[0].identity
    out = DocumentHistory(first.document_type, first.source_key)
    by_revision: dict[int, RevisionLine] = {}
    for row in rows:
        rev = by_revision.get(row.identity.revision)
        if rev is None:
            rev = by_revision[row.identity.revision] = RevisionLine(row.identity.revision)
            out.revisions.append(rev)
        line = _invoice_line(row)
        if row.kind.value == "issue":
            rev.blue = line
            rev.returns = [_invoice_line(r) for r in (returns or {}).get(row.id, [])]
        else:
            rev.red = line
    return out


def run_document(config: SyncdConfig, ref_text: str, *, as_json: bool) -> int:
    """`status --document`: 0 shown, 2 a malformed reference, 3 no such document, 4 the
    database unreachable, 7 another database error."""
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import (
        EXIT_FAILED,
        EXIT_NOT_FOUND,
        EXIT_USAGE,
        database_reason,
        database_unreachable,
        emit_json,
        fail,
        is_connection_error,
    )
    from syncd.ledger import repository as repo
    from syncd.ledger.engine import ledger_engine
    from syncd.pipeline.redrive import DocumentRefError, find, parse_document_ref

    try:
        ref = parse_document_ref(ref_text)
    except DocumentRefError as exc:
        return fail("status", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        with engine.connect() as conn:
            try:
                found = find(conn, config, ref)
            except DocumentRefError as exc:
                return fail(
                    "status", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"}
                )
            if not found:
                return fail(
                    "status",
                    EXIT_NOT_FOUND,
                    f"no ledger document matches {ref_text}",
                    as_json=as_json,
                    details={"reason": "not_found"},
                )
            ident = found[0].identity
            rows = repo.document_history(
                conn, ident.document_type, ident.source_table, ident.source_key
            )
            returns = {
                r.id: [
                    p
                    for p in repo.reversals_of(conn, r.id)
                    if p.identity.source_table != ident.source_table
                ]
                for r in rows
                if r.kind.value == "issue"
            }
    except DBAPIError as exc:
        if is_connection_error(exc):
            from syncd.commands import EXIT_DATABASE

            return fail("status", EXIT_DATABASE, database_unreachable(config, exc), as_json=as_json)
        return fail("status", EXIT_FAILED, f"ledger: {database_reason(exc)}", as_json=as_json)
    finally:
        engine.dispose()
    history = history_of(rows, returns)
    if as_json:
        emit_json(history.to_json())
    else:
        sys.stdout.write(render_history(history))
    return 0


def render_history(history: DocumentHistory) -> str:
    out = [f"{history.document} {history.key}: {len(history.revisions)} revision(s)"]
    current = history.current_invoice_no
    out.append(f", current invoice {current}\n" if current else ", no invoice yet\n")
    rows: list[list[str]] = []
    for rev in history.revisions:
        labelled = [("blue", rev.blue), *(("return", r) for r in rev.returns), ("red", rev.red)]
        for label, line in labelled:
            if line is None:
                continue
            rows.append(
                [
                    f"r{rev.revision}",
                    label,
                    str(line.id),
                    line.serial,
                    line.state,
                    line.invoice_no or "-",
                    line.issued_at or "-",
                    _short(line.last_error, 50),
                ]
            )
    headers = ["REV", "INVOICE", "ID", "SERIAL", "STATE", "NUMBER", "ISSUED", "LAST ERROR"]
    out.append(_table(headers, rows))
    return "".join(out)
