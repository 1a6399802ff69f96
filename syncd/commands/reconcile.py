"""`syncd reconcile`: compare the ERP, the ledger and the platform's list for a period.

Exit 0 clean, 1 with exceptions, 2 on any error (usage, config, a dependency down or
refusing): the contract finance scripts and the CronJob rely on. Every error is one line.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from syncd.commands._period import add_period_arguments
from syncd.errors import OperatorError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from syncd.commands._period import Period
    from syncd.config import SyncdConfig
    from syncd.issuers.base import PlatformInvoice
    from syncd.reconcile.sources import PlatformList

HELP = "compare ERP, ledger and the platform's invoices for a period; list the exceptions"

EXIT_CLEAN = 0
EXIT_EXCEPTIONS = 1
EXIT_ERROR = 2


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare the ERP's qualifying rows (the config's own qualifies/reverses conditions), "
        "syncd's ledger and the platform's list of issued invoices over a period, and list "
        "every exception by class with its document key, serial, invoice number(s) and "
        "amounts. Reads one repeatable-read snapshot; never writes to the ERP. "
        "Exit 0 clean, 1 with exceptions, 2 on error."
    )
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    add_period_arguments(parser, required=False)
    parser.add_argument(
        "--days",
        type=int,
        metavar="N",
        help="instead of --from/--to: the N whole days before today (in --tz), as the "
        "daily CronJob runs it",
    )
    parser.add_argument("--document", metavar="TYPE", help="one document type (default: all)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--output", metavar="FILE", help="write the report here, not stdout")
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="do not record the run in the ledger (for a read-only database role); the "
        "daemon's syncd_reconcile_* metrics then do not see it",
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit

    config = load_config_or_exit(args.config, "reconcile")
    return _run(config, args)


def _error(message: str) -> int:
    from syncd.commands import say

    say("reconcile", message)
    return EXIT_ERROR


def _run(config: SyncdConfig, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from syncd.commands import database_reason, database_unreachable, is_connection_error
    from syncd.commands._operator import os_user
    from syncd.commands._period import PeriodError
    from syncd.ledger.engine import ledger_engine
    from syncd.reconcile.report import render
    from syncd.reconcile.run import ReconcileUsageError, Request, now, reconcile, record

    try:
        period = _period_of(args)
    except PeriodError as exc:
        return _error(str(exc))
    request = Request(period.start, period.end, args.document, args.tz)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=1
    )
    started = now()
    try:
        platform = _platform(config, engine)
        report = reconcile(engine, config, request, platform)
        if not args.no_record:
            record(engine, report, request, started, os_user())
    except ReconcileUsageError as exc:
        return _error(str(exc))
    except DBAPIError as exc:
        if is_connection_error(exc):
            return _error(database_unreachable(config, exc))
        return _error(f"database error: {database_reason(exc)}")
    except PlatformUnavailableError as exc:
        return _error(str(exc))
    finally:
        engine.dispose()
    code = EXIT_CLEAN if report.clean else EXIT_EXCEPTIONS
    text = render(report, args.format, exit_code=code)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as exc:
            return _error(f"cannot write {args.output}: {exc.strerror or exc}")
        summary = "clean" if report.clean else f"{len(report.exceptions)} exception(s)"
        print(f"syncd reconcile: {summary}; report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return code


def _period_of(args: argparse.Namespace) -> Period:
    from syncd.commands._period import PeriodError, parse_period, zone

    if args.days is not None:
        if args.date_from or args.date_to:
            raise PeriodError("give either --days or --from/--to, not both")
        if args.days < 1:
            raise PeriodError(f"--days {args.days}: give 1 or more")
        today = datetime.now(zone(args.tz)).date()
        first = today - timedelta(days=args.days)
        return parse_period(first.isoformat(), (today - timedelta(days=1)).isoformat(), args.tz)
    if not (args.date_from and args.date_to):
        raise PeriodError("give the period: --from DATE --to DATE, or --days N")
    return parse_period(args.date_from, args.date_to, args.tz)


class PlatformUnavailableError(OperatorError):
    """The platform's list could not be read (completely): one line, exit 2."""


#: The platform's calendar (`InvoiceListQuery` dates): Chinese platforms keep Beijing days.
PLATFORM_ZONE = "Asia/Shanghai"


def _platform(config: SyncdConfig, engine: Engine) -> PlatformList:
    """The platform's own list of issued invoices, from the period's first day until today,
    for every seller the config issues for (through the provider's `list_invoices`)."""
    from zoneinfo import ZoneInfo

    from syncd.commands.run import issuer_dependencies, issuer_settings
    from syncd.config.accounts import AccountSettings
    from syncd.issuers.base import InvoiceLister, InvoiceListQuery, ListingError
    from syncd.issuers.registry import create_issuer

    identities = [doc.seller or config.seller for doc in config.documents.values()]
    sellers = sorted({s.tax_id for s in identities if s is not None})

    def listed(since: datetime) -> list[PlatformInvoice]:
        tz = ZoneInfo(PLATFORM_ZONE)
        first, today = since.astimezone(tz).date(), datetime.now(tz).date()
        start = max(first, today - timedelta(days=LIST_DAYS))
        out: list[PlatformInvoice] = []
        for name, account in config.accounts().items():
            # an account of `issuers:` lists its own company; `issuer:` every seller
            own = account.seller if isinstance(account, AccountSettings) else None
            wanted = [own.tax_id] if own is not None else sellers
            dependencies = (
                issuer_dependencies(config, engine) if account.provider == "nuonuo" else {}
            )
            issuer = create_issuer(
                account.provider, issuer_settings(config, 1, account=name), **dependencies
            )
            try:
                if not isinstance(issuer, InvoiceLister):
                    raise PlatformUnavailableError(
                        f"provider {account.provider} cannot list its invoices"
                    )
                for seller in wanted:
                    out.extend(issuer.list_invoices(InvoiceListQuery(seller, start, today)))
            except ListingError as exc:
                raise PlatformUnavailableError(f"platform list unavailable: {exc}") from None
            finally:
                issuer.close()
        return out

    return listed


#: The longest listing asked for (the sandbox and real platforms bound a range to a year).
LIST_DAYS = 365


__all__ = ["HELP", "register", "run"]
