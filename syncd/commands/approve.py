"""`syncd approve|reject -c CONFIG --document KEY --reason TEXT`: a person's decision on a
document waiting in AWAITING_APPROVAL.

The command only records the decision (`syncd.ledger.repository.record_approval`), as the
login it connects with: run it with your own DSN (`SYNCD_DATABASE__DSN`), as a member of
the approver role. PostgreSQL refuses anyone else, and stamps the login on the decision.
The daemon owning the document's partition carries the decision out within about 10 s:
approved, the document is sent under its frozen serial; rejected, it is REJECTED with the
reason written back to the ERP. Both are audited with the login, the OS user and the
reason.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

HELP = "approve (or reject) a document waiting in AWAITING_APPROVAL; run as an approver"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--document",
        required=True,
        metavar="KEY",
        help='ledger id, serial, or <document_type>:<json key> such as sales_order:{"id":42}',
    )
    parser.add_argument(
        "--reason", required=True, metavar="TEXT", help="why (kept in the audit trail)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    """Exit 0 decided; 1 nothing waits for approval (or already decided); 2 usage; 3 no
    such document; 4 the database unreachable; 7 refused by the database (not an
    approver) or another database error."""
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from syncd.commands import (
        EXIT_DATABASE,
        EXIT_FAILED,
        EXIT_NO,
        EXIT_NOT_FOUND,
        EXIT_USAGE,
        database_reason,
        database_unreachable,
        emit_json,
        fail,
        is_connection_error,
        load_config_or_exit,
    )
    from syncd.ledger import repository as repo
    from syncd.ledger.engine import ledger_engine
    from syncd.lifecycle import DocumentState
    from syncd.pipeline.redrive import DocumentRefError, find, parse_document_ref

    command = str(args.command)
    approve = command == "approve"
    as_json = bool(args.json)
    config = load_config_or_exit(args.config, command)
    reason = str(args.reason).strip()
    if not reason:
        return fail(command, EXIT_USAGE, "--reason must say why", as_json=as_json)
    try:
        ref = parse_document_ref(args.document)
    except DocumentRefError as exc:
        return fail(command, EXIT_USAGE, str(exc), as_json=as_json)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        with engine.begin() as conn:
            try:
                rows = find(conn, config, ref)
            except DocumentRefError as exc:
                return fail(command, EXIT_USAGE, str(exc), as_json=as_json)
            if not rows:
                return fail(
                    command,
                    EXIT_NOT_FOUND,
                    f"no ledger document matches {args.document}",
                    as_json=as_json,
                )
            waiting = [r for r in rows if r.state is DocumentState.AWAITING_APPROVAL]
            if not waiting:
                states = ", ".join(f"{r.id} is {r.state.value}" for r in rows)
                return fail(
                    command,
                    EXIT_NO,
                    f"nothing awaits approval: {states}",
                    as_json=as_json,
                    details={"documents": [{"id": r.id, "state": r.state.value} for r in rows]},
                )
            row = waiting[-1]
            earlier = repo.approval_of(conn, row.id)
            if earlier is not None:
                return fail(
                    command,
                    EXIT_NO,
                    f"document {row.id} was already {earlier.decision}d by {earlier.who} at "
                    f"{earlier.decided_at:%Y-%m-%d %H:%M:%S %Z} ({earlier.reason}); the daemon "
                    "carries the decision out within about 10 s",
                    as_json=as_json,
                )
            decision = repo.record_approval(
                conn, row.id, approve=approve, reason=reason, os_user=_os_user()
            )
    except IntegrityError as exc:
        return fail(
            command,
            EXIT_NO,
            f"not recorded: {database_reason(exc)} (decided already, or moved meanwhile)",
            as_json=as_json,
        )
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(command, EXIT_DATABASE, database_unreachable(config, exc), as_json=as_json)
        hint = ""
        if "permission denied" in str(getattr(exc, "orig", exc)):
            hint = " (only members of the approver role may decide; see `syncd grants --people`)"
        return fail(
            command,
            EXIT_FAILED,
            f"refused by the database: {database_reason(exc)}{hint}",
            as_json=as_json,
        )
    finally:
        engine.dispose()
    verb = "approved" if approve else "rejected"
    out: dict[str, Any] = {
        "ok": True,
        "exit_code": 0,
        "id": row.id,
        "document": row.identity.document_type,
        "key": row.identity.source_key,
        "serial": row.serial,
        "decision": decision.decision,
        "reason": decision.reason,
        "db_session_user": decision.db_session_user,
        "db_current_user": decision.db_current_user,
        "os_user": decision.os_user,
    }
    if as_json:
        emit_json(out)
        return 0
    then = (
        "the daemon sends it under its frozen serial"
        if approve
        else "the daemon marks it REJECTED and writes the reason back"
    )
    print(
        f"document {row.id} {row.identity.document_type} {row.identity.source_key} serial "
        f"{row.serial}: {verb} by {decision.who} (OS user {decision.os_user}): "
        f"{decision.reason}; {then} within about 10 s"
    )
    return 0


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
