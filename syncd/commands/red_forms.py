"""`syncd red-forms list|confirm|reject`: red-letter forms buyers raised against our invoices."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from syncd.commands._operator import actor as operator_actor
from syncd.commands._operator import add_reason_argument, operator_from
from syncd.errors import OperatorError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from syncd.config import SyncdConfig
    from syncd.ledger.models import Operator
    from syncd.ledger.redforms import FormRow
    from syncd.pipeline.redforms import RedFormDesk

HELP = "list, confirm or reject red-letter forms buyers raised against our invoices"

COMMAND = "red-forms"


ACCOUNT_HELP = (
    "the issuer account (`issuers:` in the config) whose platform is asked; needed when "
    "the config has several"
)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="red_forms_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list",
        help="the forms waiting for a decision (or waiting for their red invoice)",
        description="Forms recorded in the ledger, the one expiring first on top. By default "
        "the open ones (PENDING: decide before the deadline; CONFIRMED: the red invoice is "
        "on its way).",
    )
    listing.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    listing.add_argument("--all", action="store_true", help="every form, decided ones too")
    listing.add_argument(
        "--refresh",
        action="store_true",
        help="ask the e-invoice platform first (what the daemon does every poll interval)",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    listing.add_argument("--account", metavar="NAME", help=ACCOUNT_HELP)
    for verb, text in (
        ("confirm", "agree to the buyer's form: the platform issues the red invoice"),
        ("reject", "refuse the buyer's form: the invoice stands"),
    ):
        p = sub.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("-c", "--config", required=True, help="path of the YAML config file")
        p.add_argument("form_id", metavar="FORM_ID", help="the form's id (see `list`)")
        p.add_argument("--account", metavar="NAME", help=ACCOUNT_HELP)
        add_reason_argument(p)
        p.add_argument(
            "--json",
            action="store_true",
            help="one JSON object on stdout: what was decided, or why not (with its exit code)",
        )


def form_json(row: FormRow, now: datetime) -> dict[str, Any]:
    return {
        "form_id": row.form_id,
        "provider": row.provider,
        "status": row.status,
        "original_invoice_no": row.original_invoice_no,
        "document": row.document_type,
        "key": row.document_key,
        "ledger_document_id": row.document_id,
        "reason": row.reason,
        "gross_amount": None if row.gross_amount is None else str(row.gross_amount),
        "raised_at": row.raised_at.isoformat() if row.raised_at else None,
        "deadline": row.deadline.isoformat(),
        "seconds_left": max(0, int((row.deadline - now).total_seconds()))
        if row.status == "PENDING"
        else None,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "decided_by": row.decided_by,
        "decision_reason": row.decision_reason,
        "red_invoice_no": row.red_invoice_no,
        "red_issued_at": row.red_issued_at.isoformat() if row.red_issued_at else None,
    }


def _left(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m left"


def run(args: argparse.Namespace) -> int:
    """Exit 0 listed / decided; 1 nothing changed (decided the same way already, decided
    otherwise, or expired: the message says which); 2 usage; 3 no such form; 4 the database
    unreachable; 7 another database error; 8 the e-invoice platform did not take the call."""
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
    from syncd.ledger.engine import ledger_engine

    config = load_config_or_exit(args.config, COMMAND)
    as_json = bool(args.json)
    verb = args.red_forms_command
    operator = None
    if verb in ("confirm", "reject"):
        try:
            operator = operator_from(args)
        except ValueError as exc:
            return fail(COMMAND, EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        if verb == "list":
            return _list(args, config, engine)
        assert operator is not None
        return _decide(args, config, engine, confirm=verb == "confirm", operator=operator)
    except AccountChoiceError as exc:
        return fail(COMMAND, EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(
                COMMAND,
                EXIT_DATABASE,
                database_unreachable(config, exc),
                as_json=as_json,
                details={"reason": "unreachable", "dependency": "database"},
            )
        return fail(
            COMMAND,
            EXIT_FAILED,
            f"database error: {database_reason(exc)}",
            as_json=as_json,
            details={"reason": "database_error"},
        )
    finally:
        engine.dispose()


class AccountChoiceError(OperatorError):
    """`--account` names no account, or is missing while the config has several."""


def _account(config: SyncdConfig, account: str | None) -> str:
    names = list(config.accounts())
    if account is None and len(names) == 1:
        return names[0]
    if account is None:
        raise AccountChoiceError(
            f"the config has several issuer accounts ({', '.join(names)}): name one with --account"
        )
    if account not in names:
        raise AccountChoiceError(
            f"--account {account}: no such issuer account ({', '.join(names)})"
        )
    return account


def _desk(config: SyncdConfig, engine: Engine, account: str | None) -> RedFormDesk | None:
    """The desk over the chosen account's provider; None when it has no buyer forms."""
    from syncd.commands.run import issuer_dependencies, issuer_settings
    from syncd.issuers.redforms import BuyerRedForms
    from syncd.issuers.registry import create_issuer
    from syncd.pipeline.redforms import RedFormDesk

    name = _account(config, account)
    provider = config.accounts()[name].provider
    dependencies = issuer_dependencies(config, engine) if provider == "nuonuo" else {}
    issuer = create_issuer(provider, issuer_settings(config, 1, account=name), **dependencies)
    if not isinstance(issuer, BuyerRedForms):
        issuer.close()
        return None
    return RedFormDesk(engine, issuer, config)


def _list(args: argparse.Namespace, config: SyncdConfig, engine: Engine) -> int:
    from syncd.commands import EXIT_PLATFORM, emit_json, fail
    from syncd.ledger import redforms as ledger

    as_json = bool(args.json)
    refreshed: dict[str, Any] | None = None
    if args.refresh:
        desk = _desk(config, engine, args.account)
        if desk is None:
            return _unsupported(config, as_json)
        try:
            report = desk.poll_once()
        finally:
            desk.issuer.close()
        if report.unavailable is not None:
            return fail(
                COMMAND,
                EXIT_PLATFORM,
                f"the e-invoice platform did not list the forms: {report.unavailable}",
                as_json=as_json,
                details={"reason": "unreachable", "dependency": "issuer"},
            )
        refreshed = {
            "listed": report.listed,
            "discovered": len(report.discovered),
            "issued": len(report.issued),
            "closed": len(report.closed),
        }
    statuses = None if args.all else ("PENDING", "CONFIRMED")
    with engine.begin() as conn:
        rows = ledger.listing(conn, statuses=statuses)
    now = datetime.now(UTC)
    if as_json:
        emit_json(
            {
                "ok": True,
                "exit_code": 0,
                "refreshed": refreshed,
                "forms": [form_json(r, now) for r in rows],
            }
        )
        return 0
    if refreshed is not None:
        print(
            f"platform lists {refreshed['listed']} waiting form(s); {refreshed['discovered']} "
            f"new, {refreshed['issued']} red invoice(s) recorded, {refreshed['closed']} closed"
        )
    if not rows:
        print("no open red-letter forms" if statuses else "no red-letter forms")
        return 0
    print(f"{'FORM':<18} {'STATUS':<9} {'INVOICE':<21} {'DOCUMENT':<28} {'AMOUNT':>12}  DEADLINE")
    for r in rows:
        doc = f"{r.document_type}:{r.document_key}" if r.document_type else "-"
        amount = "-" if r.gross_amount is None else str(r.gross_amount)
        when = r.deadline.isoformat(timespec="minutes")
        if r.status == "PENDING":
            when += f" ({_left(max(0, int((r.deadline - now).total_seconds())))})"
        elif r.red_invoice_no:
            when = f"red invoice {r.red_invoice_no}"
        print(
            f"{r.form_id:<18} {r.status:<9} {r.original_invoice_no:<21} {doc:<28} "
            f"{amount:>12}  {when}"
        )
    return 0


def _unsupported(config: SyncdConfig, as_json: bool) -> int:
    from syncd.commands import EXIT_USAGE, fail

    return fail(
        COMMAND,
        EXIT_USAGE,
        f"issuer provider {config.primary_issuer.provider} has no buyer-raised red-letter forms",
        as_json=as_json,
        details={"reason": "unsupported"},
    )


def _decide(
    args: argparse.Namespace,
    config: SyncdConfig,
    engine: Engine,
    *,
    confirm: bool,
    operator: Operator,
) -> int:
    from syncd.commands import EXIT_NO, EXIT_NOT_FOUND, EXIT_PLATFORM, emit_json, fail

    as_json = bool(args.json)
    desk = _desk(config, engine, args.account)
    if desk is None:
        return _unsupported(config, as_json)
    actor = operator_actor()
    try:
        decision = desk.decide(args.form_id, confirm=confirm, operator=operator, actor=actor)
    finally:
        desk.issuer.close()
    now = datetime.now(UTC)
    form = form_json(decision.row, now) if decision.row is not None else None
    if decision.kind == "not_found":
        return fail(
            COMMAND,
            EXIT_NOT_FOUND,
            f"{decision.message} (`syncd red-forms list --refresh` asks the platform)",
            as_json=as_json,
            details={"reason": "not_found"},
        )
    if decision.kind == "unavailable":
        return fail(
            COMMAND,
            EXIT_PLATFORM,
            decision.message,
            as_json=as_json,
            details={"reason": "unreachable", "dependency": "issuer", "form": form},
        )
    if decision.kind in ("already", "refused"):
        reason = "already" if decision.kind == "already" else (decision.code or "refused").lower()
        return fail(
            COMMAND,
            EXIT_NO,
            decision.message,
            as_json=as_json,
            details={"reason": reason, "form": form},
        )
    if as_json:
        emit_json({"ok": True, "exit_code": 0, "actor": actor, "form": form})
        return 0
    row = decision.row
    assert row is not None
    print(
        f"form {row.form_id} against invoice {row.original_invoice_no}: {row.status} "
        f"(audit: {actor}, why: {operator.why!r})"
    )
    if row.red_invoice_no:
        print(f"  red invoice {row.red_invoice_no} recorded")
    elif row.status == "CONFIRMED":
        print(
            "  the platform issues the red invoice; the daemon records it and writes it back "
            "at its next poll (`syncd red-forms list` shows it)"
        )
    return 0
