"""`syncd export`: the period's issued invoices as CSV, JSON or UBL 2.1 XML in a zip.

Reads the ledger in one REPEATABLE READ, read-only transaction (safe while the daemon
runs, never writes), streams every invoice through one writer (`syncd.invoice.export`),
and with `--output` writes a temporary file beside PATH that is renamed into place only
when complete: an interrupted export leaves no half file under the name asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from syncd.commands._period import add_period_arguments

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from syncd.config import SyncdConfig

HELP = "export the period's issued invoices as CSV, JSON or UBL 2.1 XML (zip)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    add_period_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("csv", "json", "ubl"),
        default="csv",
        help="csv or json: one row per invoice; ubl: a zip of one UBL 2.1 XML per invoice "
        "and manifest.csv (needs --output)",
    )
    parser.add_argument("--output", metavar="PATH", help="write here instead of stdout")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout (needs --output)"
    )


def run(args: argparse.Namespace) -> int:
    """Exit 0 written; 2 usage or config; 4 the database unreachable; 7 a database error;
    1 an invoice that cannot be rendered as UBL (nothing written)."""
    from syncd.commands import EXIT_USAGE, fail, load_config_or_exit

    as_json = bool(args.json)
    if args.format == "ubl" and args.output is None:
        return fail("export", EXIT_USAGE, "--format ubl writes a zip: give --output PATH")
    if as_json and args.output is None:
        return fail("export", EXIT_USAGE, "--json prints a summary: give --output PATH")
    config = load_config_or_exit(args.config, "export")
    return _with_snapshot(config, args)


def _with_snapshot(config: SyncdConfig, args: argparse.Namespace) -> int:
    from sqlalchemy import text
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
    )
    from syncd.commands._period import PeriodError
    from syncd.invoice.ubl import UblError
    from syncd.ledger.engine import ledger_engine

    as_json = bool(args.json)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
        with snapshot.begin() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            return _export(conn, args)
    except PeriodError as exc:
        return fail("export", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    except UblError as exc:
        return fail(
            "export",
            EXIT_NO,
            f"cannot write UBL: {exc} (nothing written)",
            as_json=as_json,
            details={"reason": "ubl"},
        )
    except OSError as exc:
        return fail(
            "export",
            EXIT_USAGE,
            f"cannot write {args.output}: {exc.strerror or exc}",
            as_json=as_json,
            details={"reason": "output"},
        )
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(
                "export",
                EXIT_DATABASE,
                database_unreachable(config, exc),
                as_json=as_json,
                details={"reason": "unreachable", "dependency": "database"},
            )
        return fail(
            "export",
            EXIT_FAILED,
            f"database error: {database_reason(exc)}",
            as_json=as_json,
            details={"reason": "database_error"},
        )
    finally:
        engine.dispose()


@contextlib.contextmanager
def _target(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file beside `path` renamed onto it once complete."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _export(conn: Connection, args: argparse.Namespace) -> int:
    from syncd.commands import emit_json, say
    from syncd.commands._period import parse_period, zone
    from syncd.invoice.export import CsvWriter, JsonWriter, UblZipWriter, text_stream
    from syncd.ledger.export import invoices

    period = parse_period(args.date_from, args.date_to, args.tz)
    ubl = args.format == "ubl"
    skipped = 0
    with _target(args.output) as out:
        if ubl:
            with (
                tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as scratch,
                tempfile.TemporaryFile("w+b") as directory,
            ):
                zipped = UblZipWriter(out, scratch, directory, tz=zone(args.tz))
                for record in invoices(conn, period.start, period.end, with_payload=True):
                    zipped.add(record)
                zipped.close()
                count, skipped = zipped.count, zipped.skipped
        else:
            stream = text_stream(out)
            writer = CsvWriter(stream) if args.format == "csv" else JsonWriter(stream)
            for record in invoices(conn, period.start, period.end):
                writer.add(record)
            writer.close()
            stream.flush()
            stream.detach()
            count = writer.count
    if args.json:
        emit_json(
            {
                "ok": True,
                "exit_code": 0,
                "format": args.format,
                "output": args.output,
                "invoices": count,
                "skipped_payload_pruned": skipped,
                "from": period.start.isoformat(),
                "to": period.end.isoformat(),
            }
        )
    elif args.output is not None:
        line = f"{count} invoice(s) of {period.describe()} written to {args.output}"
        if skipped:
            line += f"; {skipped} without XML (payload pruned, listed in manifest.csv)"
        say("export", line)
    return 0
