"""`syncd backfill -c CONFIG --document TYPE --where CONDITION --reason TEXT`: invoice (or
reverse) existing rows that no change event will bring -- a migration, the time before
syncd was deployed, rows changed while the connector was down.

Each selected row goes through the daemon's own intake as the snapshot read of that row
would (`syncd.pipeline.backfill`): same identity, same serial, one ledger document however
it races with live CDC. The backfill records intent; the running daemon issues. See
docs/operations.md, "Backfill".
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TextIO

from syncd.commands._operator import add_reason_argument

HELP = "issue (or reverse) existing ERP rows CDC will never replay, at a bounded rate"

_EPILOG = """\
CONDITION is the config's condition language (what `qualifies` takes), as YAML, e.g.
  --where '{column: status, equals: CONFIRMED}'
  --where '{all: [{column: id, at_least: 1000}, {column: currency, in: [CNY, USD]}]}'
It is compiled to parameterised SQL over the table's own columns; `changed` and
`row: before` (two images of a change) do not apply to rows as they are now.
Rows the condition selects are then decided by the document type's own `reverses` and
`qualifies` (read as a snapshot: `becomes: X` holds for a row whose value is X).
exit codes: 0 done (or nothing to do); 1 another process moved the same run;
2 bad flags, config or condition; 4 the database unreachable; 7 a database error
(e.g. the ledger not migrated, a permission refused)."""

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_EVERY = 5.0


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--document", required=True, metavar="TYPE", help="document type (a key of `documents`)"
    )
    parser.add_argument(
        "--where",
        required=True,
        metavar="CONDITION",
        help="which rows: a condition in the config's condition language (YAML)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be issued/reversed, with totals; write nothing",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="N",
        help="at most N documents recorded per second (default 20, a tenth of the daemon's "
        "measured throughput)",
    )
    add_reason_argument(parser)
    parser.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="output: text (default), json (one object), csv (one line per document)",
    )
    parser.add_argument("--json", action="store_true", help="the same as --format json")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import (
        EXIT_DATABASE,
        EXIT_FAILED,
        EXIT_NO,
        EXIT_USAGE,
        database_reason,
        database_unreachable,
        fail,
        is_connection_error,
        load_config_or_exit,
    )
    from syncd.commands._operator import actor as operator_actor
    from syncd.commands._operator import operator_from
    from syncd.erp.backfill import WhereError, parse_where
    from syncd.ledger.backfills import RunMovedError
    from syncd.ledger.engine import ledger_engine
    from syncd.pipeline.backfill import DEFAULT_RATE

    fmt = "json" if args.json else str(args.format)
    as_json = fmt == "json"
    config = load_config_or_exit(args.config, "backfill")
    doc = config.documents.get(args.document)
    if doc is None:
        known = ", ".join(sorted(config.documents))
        return fail(
            "backfill",
            EXIT_USAGE,
            f"no document type {args.document!r} in the config (known: {known})",
            as_json=as_json,
        )
    rate = DEFAULT_RATE if args.rate is None else float(args.rate)
    if not rate > 0 or rate == float("inf"):
        return fail("backfill", EXIT_USAGE, "--rate must be a positive number", as_json=as_json)
    try:
        condition = parse_where(args.where)
        operator = operator_from(args)
    except (WhereError, ValueError) as exc:
        return fail("backfill", EXIT_USAGE, str(exc), as_json=as_json)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    job = _Job(args, config, doc, condition, operator, operator_actor(), rate, fmt)
    try:
        return job.run(engine)
    except WhereError as exc:
        return fail("backfill", EXIT_USAGE, str(exc), as_json=as_json)
    except RunMovedError as exc:
        return fail("backfill", EXIT_NO, str(exc), as_json=as_json)
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(
                "backfill", EXIT_DATABASE, database_unreachable(config, exc), as_json=as_json
            )
        return fail(
            "backfill", EXIT_FAILED, f"database error: {database_reason(exc)}", as_json=as_json
        )
    finally:
        engine.dispose()


class _Job:
    """One invocation: reads pages, records (or plans) them, reports progress."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: Any,
        doc: Any,
        condition: Any,
        operator: Any,
        actor: str,
        rate: float,
        fmt: str,
    ) -> None:
        self.args = args
        self.config = config
        self.doc = doc
        self.condition = condition
        self.operator = operator
        self.actor = actor
        self.rate = rate
        self.fmt = fmt

    def run(self, engine: Any) -> int:
        from sqlalchemy import func, select

        from syncd.erp.backfill import (
            canonical_condition,
            compile_where,
            count_rows,
            cursor_of,
            read_page,
            reflect_table,
        )
        from syncd.ledger import audit
        from syncd.ledger import backfills as runs
        from syncd.ledger.schema import partition_leases
        from syncd.pipeline.backfill import Backfill, Pacer, Planned, Totals, page_size_for

        doc, config, dry = self.doc, self.config, bool(self.args.dry_run)
        topic = doc.topic or f"{config.kafka.topic_prefix}.{doc.table}"
        condition_text = canonical_condition(self.condition)
        with engine.connect() as conn:
            table = reflect_table(conn, doc.table)
            where = compile_where(self.condition, table)
            partitions = [
                int(p)
                for p in conn.execute(
                    select(partition_leases.c.partition).where(
                        partition_leases.c.consumer_group == config.kafka.group_id,
                        partition_leases.c.topic == topic,
                    )
                ).scalars()
            ]
        run = None
        resumed = False
        if not dry:
            with engine.begin() as conn:
                run = runs.find_unfinished(conn, doc.name, doc.table, condition_text)
                resumed = run is not None
                if run is None:
                    run = runs.start(
                        conn,
                        document_type=doc.name,
                        source_table=doc.table,
                        condition=condition_text,
                        actor=self.actor,
                        operator=self.operator,
                    )
                audit.record_action(
                    conn,
                    "backfill resumed" if resumed else "backfill started",
                    actor=self.actor,
                    operator=self.operator,
                    details={
                        "run": run.id,
                        "document_type": doc.name,
                        "where": condition_text,
                        "rate": self.rate,
                        "after_key": run.last_key,
                    },
                )
            if resumed:
                _say(
                    f"resuming backfill run {run.id} (started {run.started_at:%Y-%m-%d %H:%M} "
                    f"by {run.os_user or run.actor}) after key {run.last_key}"
                )
        with engine.connect() as conn:
            after = None if run is None else run.last_key
            total = count_rows(conn, table, doc.key_columns, where, after=after)
        backfill = Backfill(
            config,
            doc,
            self.condition,
            actor=self.actor,
            operator=self.operator,
            topic=topic,
            partitions=partitions,
            run_id=None if run is None else run.id,
        )
        page_size = page_size_for(self.rate)
        pacer = Pacer(self.rate)
        totals = Totals()
        progress = _Progress(total, sys.stderr)
        cursor: list[Any] | None = run.last_key if run is not None else None
        pages = run.pages if run is not None else 0
        listed: list[Planned] = []
        while True:
            with engine.begin() as conn:
                read_ms = int(
                    conn.execute(
                        select(func.floor(func.extract("epoch", func.now()) * 1000))
                    ).scalar_one()
                )
                rows = read_page(conn, table, doc.key_columns, where, after=cursor, limit=page_size)
                if not rows:
                    break
                if dry:
                    planned = backfill.plan(conn, rows, read_ms)
                else:
                    assert run is not None
                    planned = backfill.record(conn, rows, read_ms)
                    page = Totals()
                    page.add(planned)
                    runs.advance(
                        conn,
                        run.id,
                        expected_pages=pages,
                        last_key=cursor_of(rows[-1], doc.key_columns),
                        counts=page.ledger_counts(),
                    )
            pages += 1
            cursor = cursor_of(rows[-1], doc.key_columns)
            totals.add(planned)
            if dry or self.fmt != "text":
                listed.extend(planned)
            progress.update(totals)
            recorded = sum(1 for p in planned if p.action != "skip")
            if not dry and recorded:
                pacer.wait(recorded)
        progress.close(totals)
        finished = None
        if run is not None:
            with engine.begin() as conn:
                finished = runs.finish(conn, run.id, expected_pages=pages)
                audit.record_action(
                    conn,
                    "backfill finished",
                    actor=self.actor,
                    operator=self.operator,
                    details={"run": run.id, "document_type": doc.name, **finished.counts},
                )
        self._report(totals, listed, dry, run_id=None if run is None else run.id, finished=finished)
        return 0

    def _report(
        self, totals: Any, listed: Sequence[Any], dry: bool, *, run_id: int | None, finished: Any
    ) -> None:
        from syncd.commands import emit_json

        summary = totals.as_dict()
        if self.fmt == "json":
            emit_json(
                {
                    "ok": True,
                    "exit_code": 0,
                    "dry_run": dry,
                    "document_type": self.doc.name,
                    "run": run_id,
                    "run_totals": None if finished is None else finished.counts,
                    "totals": summary,
                    "documents": [p.as_dict() for p in listed],
                }
            )
            return
        if self.fmt == "csv":
            _write_csv(sys.stdout, listed)
            return
        out = sys.stdout
        verb = "would" if dry else "did"
        for p in listed if dry else ():
            amounts = "" if p.gross is None else f" net {p.net} tax {p.tax} gross {p.gross}"
            serial = f" serial {p.serial}" if p.serial else ""
            out.write(f"{p.action:8} {self.doc.name} {_key(p.key)}{serial}{amounts}: {p.reason}\n")
        counts = summary["counts"]
        out.write(
            f"backfill {self.doc.name}{'' if run_id is None else f' run {run_id}'}: "
            f"{summary['scanned']} row(s) scanned; {verb} issue {counts['issue']}, "
            f"reverse {counts['reverse']}, record {counts['invalid']} invalid, "
            f"skip {counts['skip']}\n"
        )
        for action, amounts in summary["amounts"].items():
            out.write(
                f"  {action}: net {amounts['net']} tax {amounts['tax']} gross {amounts['gross']}\n"
            )
        if not dry and (counts["issue"] or counts["reverse"]):
            out.write(
                "  recorded as READY / REVERSAL_PENDING: the running daemon issues them "
                "(`syncd status` shows the ledger)\n"
            )


def _key(key: dict[str, Any]) -> str:
    return (
        "{"
        + ",".join(
            f'"{k}":{v!r}' if not isinstance(v, str) else f'"{k}":"{v}"' for k, v in key.items()
        )
        + "}"
    )


def _write_csv(out: TextIO, listed: Sequence[Any]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "action", "serial", "state", "net", "tax", "gross", "reason"])
    for p in listed:
        writer.writerow(
            [
                _key(p.key),
                p.action,
                p.serial or "",
                p.state or "",
                _d(p.net),
                _d(p.tax),
                _d(p.gross),
                p.reason,
            ]
        )
    out.write(buffer.getvalue())


def _d(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def _say(message: str) -> None:
    print(f"syncd backfill: {message}", file=sys.stderr)


class _Progress:
    """A progress bar on a terminal, else a line every PROGRESS_EVERY seconds (stderr)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._stream = stream
        self._clock = clock
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._start = clock()
        self._last = self._start

    def update(self, totals: Any) -> None:
        now = self._clock()
        if not self._tty and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        line = progress_line(totals.scanned, self._total, totals.counts, now - self._start)
        if self._tty:
            self._stream.write("\r" + bar(totals.scanned, self._total) + " " + line + "\x1b[K")
        else:
            self._stream.write(f"syncd backfill: {line}\n")
        self._stream.flush()

    def close(self, totals: Any) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def bar(done: int, total: int, width: int = 30) -> str:
    """`[#######.......]` for done/total."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(share * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(done: int, total: int, counts: dict[str, int], elapsed: float) -> str:
    """`120/500 rows (24%), issue 100, reverse 0, invalid 0, skip 20, 19.8 rows/s, ~19 s left`."""
    pct = f" ({done * 100 // total}%)" if total > 0 else ""
    speed = done / elapsed if elapsed > 0 else 0.0
    left = ""
    if speed > 0 and total > done:
        left = f", ~{int((total - done) / speed)} s left"
    parts = ", ".join(f"{a} {counts.get(a, 0)}" for a in ("issue", "reverse", "invalid", "skip"))
    return f"{done}/{total} rows{pct}, {parts}, {speed:.1f} rows/s{left}"
