"""`syncd retry -c CONFIG --document KEY`: hand a parked document back to the daemon."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys

HELP = "re-drive a DEAD/BLOCKED (or waiting) document: the daemon queries it by serial first"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--document",
        required=True,
        metavar="KEY",
        help='ledger id, serial, or <document_type>:<json key> such as sales_order:{"id":42}',
    )


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError, OperationalError

    from syncd.commands import load_config_or_exit
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
    try:
        ref = parse_document_ref(args.document)
    except DocumentRefError as exc:
        print(f"syncd retry: {exc}", file=sys.stderr)
        return 2
    actor = f"operator:{_user()}@{socket.gethostname()}"
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, pool_size=1, max_overflow=0
    )
    try:
        with engine.begin() as conn:
            try:
                rows = find(conn, config, ref)
            except DocumentRefError as exc:
                print(f"syncd retry: {exc}", file=sys.stderr)
                return 2
            if not rows:
                print(f"syncd retry: no ledger document matches {args.document}", file=sys.stderr)
                return 1
            targets = [r for r in rows if r.state in RETRYABLE_STATES]
            if not targets:
                states = ", ".join(
                    f"{r.id} ({r.kind.value} r{r.identity.revision}) is {r.state.value}"
                    for r in rows
                )
                print(
                    f"syncd retry: nothing to retry: {states}; only DEAD, BLOCKED, "
                    "RETRY_WAIT and OUTCOME_UNKNOWN documents can be retried",
                    file=sys.stderr,
                )
                return 1
            done = [redrive(conn, config, row, actor=actor) for row in targets]
            tps = {
                TopicPartition(r.source_topic, r.source_partition)
                for r in targets
                if r.source_topic is not None and r.source_partition is not None
            }
            leases = repo.lease_epochs(conn, config.kafka.group_id, tps)
    except StaleStateError as exc:
        print(
            f"syncd retry: the daemon moved the document meanwhile ({exc}); nothing changed, "
            "look at `syncd status` and try again",
            file=sys.stderr,
        )
        return 1
    except (OperationalError, DBAPIError) as exc:
        print(f"syncd retry: database error: {type(exc).__name__}: {exc.orig}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    for d in done:
        b, a = d.before, d.after
        print(
            f"document {b.id} {b.identity.document_type} {b.identity.source_key} "
            f"{b.kind.value} r{b.identity.revision} serial {b.serial}: "
            f"{b.state.value} -> {a.state.value}, attempts {b.attempts} -> {a.attempts}, "
            f'due now (audit: {actor}, "operator retry")'
        )
        if b.last_error:
            print(f"  last error was: [{b.last_error_code}] {b.last_error}")
        if d.writeback_problem:
            print(f"  ERP write-back not updated: {d.writeback_problem}")
        lease = None
        if b.source_topic is not None and b.source_partition is not None:
            lease = leases.get(TopicPartition(b.source_topic, b.source_partition))
        holder = f"{lease[1]} (epoch {lease[0]})" if lease and lease[1] else "nobody"
        print(
            f"  partition lease held by {holder}; the daemon owning the partition picks the "
            "document up within about 10 s and queries the provider by serial before any "
            "re-send"
        )
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
