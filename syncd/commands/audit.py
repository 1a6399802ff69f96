"""`syncd audit show|export|verify|prune`: read, export, verify and prune the audit trail.

`verify` replays every hash chain of the trail in one REPEATABLE READ snapshot and exits
1 naming the first broken link (a row edited, deleted or moved, rows cut from the end,
an unsigned or forged checkpoint), whoever did it: the database cannot stop a superuser,
but the chain shows what was done. `prune` keeps the chains verifiable: it verifies
first, deletes each chain's oldest rows and leaves a (signed) checkpoint in their place.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from syncd.commands._operator import add_reason_argument
from syncd.commands._period import add_period_arguments

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from syncd.config import SyncdConfig
    from syncd.ledger.chain import ChainReport
    from syncd.ledger.models import AuditEntry

HELP = "show, export, verify or prune the audit trail (who did what, when and why)"

#: Columns of `export --format csv` (and keys of every JSON entry).
FIELDS = (
    "id",
    "at",
    "document_id",
    "from_state",
    "to_state",
    "reason",
    "actor",
    "db_user",
    "db_session_user",
    "os_user",
    "why",
    "details",
    "chain",
    "seq",
    "hash",
)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        help="a document's audit rows, oldest first",
        description="Every audit row of a document (its issue and reversal rows, every "
        "revision), oldest first.",
    )
    show.add_argument(
        "--document",
        required=True,
        metavar="KEY",
        help='ledger id, serial, or <document_type>:<json key> such as sales_order:{"id":42}',
    )
    export = sub.add_parser(
        "export",
        help="audit rows of a period as JSON lines or CSV",
        description="Audit rows with `at` in the period, oldest first, streamed.",
    )
    add_period_arguments(export)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    verify = sub.add_parser(
        "verify",
        help="check every hash chain: exit 0 intact, 1 with the first broken link",
        description="Replay every chain of the trail in one snapshot; exit 1 names the first "
        "broken link (edited, deleted or reordered rows, a bad checkpoint).",
    )
    prune = sub.add_parser(
        "prune",
        help="delete rows older than audit.retention_days, leaving signed checkpoints",
        description="Verify, then delete each chain's rows older than the cut-off and record "
        "a checkpoint (HMAC-signed with audit.checkpoint_key_file when configured).",
    )
    prune.add_argument(
        "--before",
        metavar="DATE",
        help="cut-off (YYYY-MM-DD, UTC, or ISO 8601); default: now - audit.retention_days",
    )
    add_reason_argument(prune)
    prune.add_argument("--dry-run", action="store_true", help="say what would be pruned")
    for p in (show, export, verify, prune):
        p.add_argument("-c", "--config", required=True, help="path of the YAML config file")
        p.add_argument("--json", action="store_true", help="answer with one JSON object")


def run(args: argparse.Namespace) -> int:
    """Exit 0 done (intact); 1 broken chain (`verify`, `prune`); 2 usage or config; 3 no
    such document; 4 the database unreachable; 7 another database error."""
    from syncd.commands import load_config_or_exit

    command = f"audit {args.audit_command}"
    config = load_config_or_exit(args.config, command)
    action: Callable[[SyncdConfig, argparse.Namespace, Connection], int] = {
        "show": _show,
        "export": _export,
        "verify": _verify,
        "prune": _prune,
    }[args.audit_command]
    return _with_database(config, args, command, action)


def _with_database(
    config: SyncdConfig,
    args: argparse.Namespace,
    command: str,
    action: Callable[[SyncdConfig, argparse.Namespace, Connection], int],
) -> int:
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import (
        EXIT_DATABASE,
        EXIT_FAILED,
        EXIT_USAGE,
        database_reason,
        database_unreachable,
        fail,
        is_connection_error,
    )
    from syncd.commands._period import PeriodError
    from syncd.ledger.engine import ledger_engine

    as_json = bool(args.json)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    read_only = args.audit_command in ("show", "export", "verify")
    try:
        conn_engine = engine.execution_options(isolation_level="REPEATABLE READ")
        with conn_engine.begin() as conn:
            if read_only:
                from sqlalchemy import text

                conn.execute(text("SET TRANSACTION READ ONLY"))
            return action(config, args, conn)
    except (PeriodError, ValueError) as exc:
        return fail(command, EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(
                command,
                EXIT_DATABASE,
                database_unreachable(config, exc),
                as_json=as_json,
                details={"reason": "unreachable", "dependency": "database"},
            )
        return fail(
            command,
            EXIT_FAILED,
            f"database error: {database_reason(exc)}",
            as_json=as_json,
            details={"reason": "database_error"},
        )
    finally:
        engine.dispose()


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.astimezone(UTC).isoformat(),
        "document_id": e.document_id,
        "from_state": None if e.from_state is None else e.from_state.value,
        "to_state": None if e.to_state is None else e.to_state.value,
        "reason": e.reason,
        "actor": e.actor,
        "db_user": e.db_user,
        "db_session_user": e.db_session_user,
        "os_user": e.os_user,
        "why": e.why,
        "details": e.details,
        "chain": e.chain,
        "seq": e.seq,
        "hash": e.hash,
    }


def _show(config: SyncdConfig, args: argparse.Namespace, conn: Connection) -> int:
    from syncd.commands import EXIT_NOT_FOUND, EXIT_USAGE, emit_json, fail
    from syncd.ledger import audit
    from syncd.pipeline.redrive import DocumentRefError, find, parse_document_ref

    as_json = bool(args.json)
    try:
        rows = find(conn, config, parse_document_ref(args.document))
    except DocumentRefError as exc:
        return fail("audit show", EXIT_USAGE, str(exc), as_json=as_json, details={})
    if not rows:
        return fail(
            "audit show",
            EXIT_NOT_FOUND,
            f"no ledger document matches {args.document}",
            as_json=as_json,
            details={"reason": "not_found"},
        )
    trail = audit.entries(conn, [r.id for r in rows])
    if as_json:
        emit_json(
            {
                "ok": True,
                "documents": [
                    {
                        "id": r.id,
                        "document": r.identity.document_type,
                        "key": r.identity.source_key,
                        "kind": r.kind.value,
                        "revision": r.identity.revision,
                        "serial": r.serial,
                        "state": r.state.value,
                        "invoice_no": r.invoice_no,
                    }
                    for r in rows
                ],
                "entries": [entry_dict(e) for e in trail],
            }
        )
        return 0
    for r in rows:
        print(
            f"document {r.id} {r.identity.document_type} {r.identity.source_key} "
            f"{r.kind.value} r{r.identity.revision} serial {r.serial}: {r.state.value}"
            + (f", invoice {r.invoice_no}" if r.invoice_no else "")
        )
    for e in trail:
        move = f"{e.from_state.value if e.from_state else '-'} -> "
        move += e.to_state.value if e.to_state else "-"
        who = e.actor + (f" (db {e.db_user}" + (f", os {e.os_user}" if e.os_user else "") + ")")
        line = f"  {e.at.astimezone(UTC).isoformat()}  doc {e.document_id}  {move}  "
        line += f"{e.reason}  by {who}"
        if e.why:
            line += f"  why: {e.why}"
        print(line)
    return 0


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as fh:
        yield fh


def _export(config: SyncdConfig, args: argparse.Namespace, conn: Connection) -> int:
    from syncd.commands import say
    from syncd.commands._period import parse_period
    from syncd.ledger import audit

    period = parse_period(args.date_from, args.date_to, args.tz)
    count = 0
    with _output(args.output) as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS) if args.format == "csv" else None
        if writer is not None:
            writer.writeheader()
        for e in audit.entries_between(conn, period.start, period.end):
            row = entry_dict(e)
            if writer is not None:
                row["details"] = (
                    "" if e.details is None else json.dumps(e.details, ensure_ascii=False)
                )
                writer.writerow(row)
            else:
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            count += 1
    if args.output is not None or args.json:
        say("audit export", f"{count} row(s) of {period.describe()}")
    return 0


def chain_dict(r: ChainReport) -> dict[str, Any]:
    return {
        "chain": r.chain,
        "rows": r.rows,
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "last_hash": r.last_hash,
        "checkpoint_through": r.checkpoint_through,
        "broken": None
        if r.broken is None
        else {
            "kind": r.broken.kind.value,
            "seq": r.broken.seq,
            "audit_id": r.broken.audit_id,
            "message": r.broken.message,
        },
    }


def _verify(config: SyncdConfig, args: argparse.Namespace, conn: Connection) -> int:
    from syncd.commands import EXIT_NO, emit_json
    from syncd.ledger import audit

    key = config.audit.key_bytes()
    result = audit.verify(conn, key=key)
    broken = result.broken
    first = broken[0].broken if broken else None
    if args.json:
        emit_json(
            {
                "ok": not broken,
                "exit_code": EXIT_NO if broken else 0,
                "rows": result.rows,
                "chains": [chain_dict(c) for c in result.chains],
                "first_break": None if first is None else chain_dict(broken[0])["broken"],
                "checkpoints_signed": key is not None,
            }
        )
    else:
        for c in broken:
            assert c.broken is not None
            print(f"BROKEN {c.broken.kind.value}: {c.broken.message}")
        used = sum(1 for c in result.chains if c.rows or c.last_seq)
        state = f"{len(broken)} chain(s) BROKEN" if broken else "intact"
        print(
            f"audit trail {state}: {result.rows} row(s) in {used} chain(s)"
            + ("" if key is not None else " (checkpoint signatures not checked: no key)")
        )
    return EXIT_NO if broken else 0


def _prune(config: SyncdConfig, args: argparse.Namespace, conn: Connection) -> int:
    from syncd.commands import EXIT_NO, EXIT_USAGE, emit_json, fail
    from syncd.commands._operator import actor, operator_from
    from syncd.commands._period import parse_instant
    from syncd.ledger import audit

    as_json = bool(args.json)
    operator = operator_from(args)
    if args.before is not None:
        before = parse_instant(args.before, "--before")
    elif config.audit.retention_days is not None:
        before = datetime.now(UTC) - timedelta(days=config.audit.retention_days)
    else:
        return fail(
            "audit prune",
            EXIT_USAGE,
            "no cut-off: give --before DATE or set audit.retention_days in the config",
            as_json=as_json,
            details={"reason": "usage"},
        )
    try:
        made = audit.prune(
            conn,
            before,
            actor=actor(),
            operator=operator,
            key=config.audit.key_bytes(),
            dry_run=bool(args.dry_run),
        )
    except audit.ChainBrokenError as exc:
        return fail("audit prune", EXIT_NO, str(exc), as_json=as_json, details={"reason": "broken"})
    rows = sum(c.pruned_rows for c in made)
    verb = "would prune" if args.dry_run else "pruned"
    if as_json:
        emit_json(
            {
                "ok": True,
                "exit_code": 0,
                "dry_run": bool(args.dry_run),
                "before": before.isoformat(),
                "rows": rows,
                "signed": config.audit.key_bytes() is not None,
                "checkpoints": [
                    {"chain": c.chain, "through_seq": c.through_seq, "rows": c.pruned_rows}
                    for c in made
                ],
            }
        )
    else:
        print(
            f"{verb} {rows} audit row(s) older than {before.isoformat()} from {len(made)} "
            f"chain(s)"
            + ("" if config.audit.key_bytes() is not None else " (checkpoints not signed)")
        )
    return 0
