"""`syncd retry -c CONFIG --document KEY`: hand a parked document back to the daemon."""

from __future__ import annotations

import argparse
from typing import Any

from syncd.commands._operator import actor as operator_actor
from syncd.commands._operator import add_reason_argument, operator_from

HELP = "re-drive a DEAD/BLOCKED (or waiting) document: the daemon queries it by serial first"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--document",
        required=True,
        metavar="KEY",
        help='ledger id, serial, or <document_type>:<json key> such as sales_order:{"id":42}',
    )
    add_reason_argument(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout: what was retried, or why not (with its exit code)",
    )


def run(args: argparse.Namespace) -> int:
    """Exit 0 retried; 1 not retryable (or the daemon moved it meanwhile); 2 a malformed
    reference; 3 no such document; 4 the database unreachable; 7 another database error."""
    from sqlalchemy.exc import DBAPIError

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
    from syncd.ledger.errors import StaleStateError
    from syncd.ledger.models import TopicPartition
    from syncd.pipeline.redrive import (
        RETRYABLE_STATES,
        DocumentRefError,
        find,
        parse_document_ref,
        redrive,
    )

    config = load_config_or_exit(args.config, "retry")
    as_json = bool(args.json)
    try:
        ref = parse_document_ref(args.document)
    except DocumentRefError as exc:
        return fail("retry", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    try:
        operator = operator_from(args)
    except ValueError as exc:
        return fail("retry", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"})
    actor = operator_actor()
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        with engine.begin() as conn:
            try:
                rows = find(conn, config, ref)
            except DocumentRefError as exc:
                return fail(
                    "retry", EXIT_USAGE, str(exc), as_json=as_json, details={"reason": "usage"}
                )
            if not rows:
                return fail(
                    "retry",
                    EXIT_NOT_FOUND,
                    f"no ledger document matches {args.document}",
                    as_json=as_json,
                    details={"reason": "not_found"},
                )
            targets = [r for r in rows if r.state in RETRYABLE_STATES]
            if not targets:
                states = ", ".join(
                    f"{r.id} ({r.kind.value} r{r.identity.revision}) is {r.state.value}"
                    for r in rows
                )
                return fail(
                    "retry",
                    EXIT_NO,
                    f"nothing to retry: {states}; only DEAD, BLOCKED, RETRY_WAIT and "
                    "OUTCOME_UNKNOWN documents can be retried",
                    as_json=as_json,
                    details={
                        "reason": "not_retryable",
                        "documents": [{"id": r.id, "state": r.state.value} for r in rows],
                    },
                )
            done = [redrive(conn, config, row, actor=actor, operator=operator) for row in targets]
            tps = {
                TopicPartition(r.source_topic, r.source_partition)
                for r in targets
                if r.source_topic is not None and r.source_partition is not None
            }
            leases = repo.lease_epochs(conn, config.kafka.group_id, tps)
    except StaleStateError as exc:
        return fail(
            "retry",
            EXIT_NO,
            f"the daemon moved the document meanwhile ({exc}); nothing changed, "
            "look at `syncd status` and try again",
            as_json=as_json,
            details={"reason": "moved_meanwhile"},
        )
    except DBAPIError as exc:
        if is_connection_error(exc):
            return fail(
                "retry",
                EXIT_DATABASE,
                database_unreachable(config, exc),
                as_json=as_json,
                details={"reason": "unreachable", "dependency": "database"},
            )
        return fail(
            "retry",
            EXIT_FAILED,
            f"database error: {database_reason(exc)}",
            as_json=as_json,
            details={"reason": "database_error"},
        )
    finally:
        engine.dispose()
    retried: list[dict[str, Any]] = []
    for d in done:
        b, a = d.before, d.after
        lease = None
        if b.source_topic is not None and b.source_partition is not None:
            lease = leases.get(TopicPartition(b.source_topic, b.source_partition))
        retried.append(
            {
                "id": b.id,
                "document": b.identity.document_type,
                "key": b.identity.source_key,
                "kind": b.kind.value,
                "revision": b.identity.revision,
                "serial": b.serial,
                "from_state": b.state.value,
                "to_state": a.state.value,
                "attempts_before": b.attempts,
                "attempts_after": a.attempts,
                "last_error_code": b.last_error_code,
                "last_error": b.last_error,
                "writeback_problem": d.writeback_problem,
                "lease_owner": lease[1] if lease else None,
                "lease_epoch": lease[0] if lease else None,
            }
        )
        if as_json:
            continue
        print(
            f"document {b.id} {b.identity.document_type} {b.identity.source_key} "
            f"{b.kind.value} r{b.identity.revision} serial {b.serial}: "
            f"{b.state.value} -> {a.state.value}, attempts {b.attempts} -> {a.attempts}, "
            f'due now (audit: {actor}, "operator retry", why: {operator.why!r})'
        )
        if b.last_error:
            print(f"  last error was: [{b.last_error_code}] {b.last_error}")
        if d.writeback_problem:
            print(f"  ERP write-back not updated: {d.writeback_problem}")
        holder = f"{lease[1]} (epoch {lease[0]})" if lease and lease[1] else "nobody"
        print(
            f"  partition lease held by {holder}; the daemon owning the partition picks the "
            "document up within about 10 s and queries the provider by serial before any "
            "re-send"
        )
    if as_json:
        emit_json({"ok": True, "exit_code": 0, "actor": actor, "retried": retried})
    return 0
