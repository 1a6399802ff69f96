"""`syncd files get|fetch|status`: the archive of issued invoices' files.

`get` hands out an archived file by invoice number and format, checked against the
SHA-256 recorded when it was archived (a damaged or swapped file is refused, never
handed out). `fetch` runs the archiver in the foreground until nothing is due (for a
CronJob or after an outage; the daemon does the same in the background). `status`
counts the files per state.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from syncd.config import SyncdConfig

HELP = "get an archived invoice file (PDF, OFD, XML), or fetch the pending ones"

#: `files get`: the file is known but not (yet) in the archive: pending, failed, not offered.
EXIT_NOT_ARCHIVED = 1
#: `files get`: the archived bytes do not match the recorded SHA-256 (or are gone).
EXIT_DAMAGED = 8


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="files_command", metavar="ACTION", required=True)
    get = sub.add_parser(
        "get",
        help="write an archived file to --output (or stdout), checked against its SHA-256",
        description="Exit 0 written; 1 not archived (yet); 2 usage; 3 no such file; "
        "4 database unreachable; 7 database error; 8 the archived copy is damaged or gone.",
    )
    get.add_argument("--invoice", required=True, metavar="NO", help="the invoice number")
    get.add_argument("--format", required=True, choices=("pdf", "ofd", "xml"))
    get.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    fetch = sub.add_parser(
        "fetch",
        help="archive the pending files now, until none is due",
        description="Run the file archiver in the foreground until no file is due.",
    )
    fetch.add_argument("--owner", help="claimant name (default: hostname-pid)")
    status = sub.add_parser("status", help="files per state (pending, done, failed, ...)")
    for p in (get, fetch, status):
        p.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    status.add_argument("--json", action="store_true", help="answer with one JSON object")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import (
        EXIT_DATABASE,
        EXIT_FAILED,
        EXIT_USAGE,
        database_reason,
        database_unreachable,
        fail,
        is_connection_error,
        load_config_or_exit,
    )

    command = f"files {args.files_command}"
    config = load_config_or_exit(args.config, command)
    if config.files.archive is None and args.files_command == "fetch":
        return fail(command, EXIT_USAGE, "files.archive is not set in the config")
    try:
        if args.files_command == "get":
            return _get(config, args)
        if args.files_command == "fetch":
            return _fetch(config, args)
        return _status(config, args)
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(command, EXIT_DATABASE, database_unreachable(config, exc))
        return fail(command, EXIT_FAILED, f"database error: {database_reason(exc)}")


def _engine(config: SyncdConfig) -> Engine:
    from syncd.ledger.engine import ledger_engine

    return ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=2, max_overflow=0
    )


def _get(config: SyncdConfig, args: argparse.Namespace) -> int:
    from syncd.commands import EXIT_NOT_FOUND, EXIT_USAGE, fail
    from syncd.ledger import files as ledger_files
    from syncd.ledger.archive import DirectoryArchive

    command = "files get"
    engine = _engine(config)
    try:
        with engine.connect() as conn:
            found = ledger_files.find(conn, args.invoice, args.format)
    finally:
        engine.dispose()
    if found is None:
        return fail(
            command, EXIT_NOT_FOUND, f"no {args.format} file of invoice {args.invoice} is known"
        )
    if found.state != ledger_files.DONE:
        why = f" ({found.last_error})" if found.last_error else ""
        return fail(
            command,
            EXIT_NOT_ARCHIVED,
            f"the {args.format} file of invoice {args.invoice} is {found.state.lower()}"
            f" after {found.attempts} attempt(s){why}",
        )
    if found.content is not None:
        data = found.content
    elif found.location is not None:
        if config.files.directory is None:
            return fail(
                command, EXIT_USAGE, "the file is in a directory archive: set files.directory"
            )
        try:
            data = DirectoryArchive(config.files.directory).read(found.location)
        except (OSError, ValueError) as exc:
            return fail(command, EXIT_DAMAGED, f"archived file {found.location} unreadable: {exc}")
    else:
        return fail(command, EXIT_DAMAGED, "the archive record names no file")
    if hashlib.sha256(data).hexdigest() != found.sha256:
        return fail(
            command,
            EXIT_DAMAGED,
            f"archived {args.format} file of invoice {args.invoice} does not match its "
            "recorded SHA-256: refusing to hand it out",
        )
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    target = Path(args.output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        return fail(command, EXIT_USAGE, f"cannot write {args.output}: {exc.strerror or exc}")
    return 0


def _fetch(config: SyncdConfig, args: argparse.Namespace) -> int:
    import socket

    from syncd.commands import say
    from syncd.commands.run import create_accounts
    from syncd.ledger import files as ledger_files
    from syncd.pipeline.files import FileArchiver

    owner = args.owner or f"{socket.gethostname()}-{os.getpid()}"
    engine = _engine(config)
    issuer = create_accounts(config, engine, 1)  # every account: a serial is known to one
    try:
        archiver = FileArchiver(config, engine=engine, issuer=issuer, owner=owner)
        archiver.sweep_partials()
        total = 0
        while True:
            done = archiver.run_once()
            total += done
            if not done:
                break
        with engine.connect() as conn:
            counts = ledger_files.counts(conn)
    finally:
        issuer.close()
        engine.dispose()
    say(
        "files fetch",
        f"{total} file(s) finished; now {counts['DONE']} archived, {counts['PENDING']} "
        f"pending, {counts['FAILED']} failed, {counts['UNAVAILABLE']} not offered",
    )
    return 0


def _status(config: SyncdConfig, args: argparse.Namespace) -> int:
    from syncd.commands import emit_json
    from syncd.ledger import files as ledger_files

    engine = _engine(config)
    try:
        with engine.connect() as conn:
            counts = ledger_files.counts(conn)
    finally:
        engine.dispose()
    if args.json:
        emit_json({"ok": True, "files": {k.lower(): v for k, v in counts.items()}})
    else:
        for state, n in counts.items():
            print(f"{state.lower():12} {n}")
    return 0
