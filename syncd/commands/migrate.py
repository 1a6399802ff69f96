"""`syncd migrate`: create or upgrade syncd's ledger schema.

Safe to run from every replica at start (init container or entrypoint): the upgrade
holds a PostgreSQL advisory lock and runs in one transaction.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from syncd.errors import OperatorError

HELP = "Create or upgrade syncd's ledger schema in the ERP database (safe from every replica)."

ENV_DSN = "SYNCD_DATABASE__DSN"
ENV_SCHEMA = "SYNCD_DATABASE__SCHEMA_NAME"


class MigrateConfigError(OperatorError):
    """Where the database settings should have come from, and what to do about it."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="CONFIG",
        help="syncd YAML config; uses database.dsn (or dsn_file) and database.schema_name",
    )
    parser.add_argument(
        "--dsn",
        help=f"SQLAlchemy URL of the ERP database (overrides the config; ${ENV_DSN} works too)",
    )
    parser.add_argument("--schema", help="ledger schema name (default: from config, else syncd)")
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sql", action="store_true", help="print the SQL the upgrade would run, without connecting"
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="only report the current revision; exit 1 unless at head, 4 when the database "
        "cannot be reached",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout: schema, current/head revision, at_head (or the error)",
    )


def _read_yaml(path: Path) -> Mapping[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MigrateConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MigrateConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise MigrateConfigError(f"{path}: the top level must be a mapping")
    return data


def database_settings(config: Path | None, dsn: str | None, schema: str | None) -> tuple[str, str]:
    """(dsn, schema): the flags, else the database settings exactly as `check-config` and
    the daemon resolve them (`syncd.config.load_database`: the YAML, `SYNCD_DATABASE__*`
    variables incl. `SYNCD_DATABASE__DSN_FILE`, `secrets_dir` files such as
    `database__dsn`), so a config `check-config` accepts is one `migrate` can use."""
    from syncd.config import ConfigError, load_database

    if config is not None:  # the shape first, with the messages an operator can act on
        raw = _read_yaml(config).get("database")
        if raw is not None and not isinstance(raw, Mapping):
            raise MigrateConfigError(f"{config}: `database` must be a mapping")
    if dsn:
        resolved_schema = schema or os.environ.get(ENV_SCHEMA)
        if not resolved_schema and config is not None:
            section = _read_yaml(config).get("database") or {}
            resolved_schema = section.get("schema_name")
        return dsn, str(resolved_schema or "syncd")
    try:
        settings = load_database(config)
    except ConfigError as exc:
        if all(_no_dsn(p.path, p.message) for p in exc.problems):
            where = f"{config}: database.dsn (or database.dsn_file)" if config else "a config"
            raise MigrateConfigError(
                f"no database DSN: pass --dsn, set {ENV_DSN}, or set {where}"
            ) from None
        raise MigrateConfigError(str(exc)) from None
    return settings.dsn_value(), schema or settings.schema_name


def _no_dsn(path: str, message: str) -> bool:
    return path == "database" and ("dsn is required" in message or "required" in message)


def run(args: argparse.Namespace) -> int:
    """Exit 0 done (or at head); 1 `--check`: not at head; 2 usage or config error;
    4 the database unreachable; 7 another database error."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from syncd.commands import (
        EXIT_DATABASE,
        EXIT_FAILED,
        EXIT_NO,
        EXIT_OK,
        EXIT_USAGE,
        database_reason,
        emit_json,
        fail,
        is_connection_error,
    )
    from syncd.ledger.engine import InvalidSchemaNameError
    from syncd.ledger.migrate import current_revision, head_revision, upgrade, upgrade_sql
    from syncd.observability.logs import register_secret

    as_json = bool(getattr(args, "json", False))
    try:
        dsn, schema = database_settings(args.config, args.dsn, args.schema)
    except MigrateConfigError as exc:
        return fail("migrate", EXIT_USAGE, str(exc), as_json=as_json)
    _register_password(dsn, register_secret)
    try:
        if args.sql:
            sys.stdout.write(upgrade_sql(dsn, schema, args.revision))
            return EXIT_OK
        head = head_revision()
        if args.check:
            current = current_revision(dsn, schema)
            code = EXIT_OK if current == head else EXIT_NO
            if as_json:
                emit_json(
                    {
                        "ok": code == EXIT_OK,
                        "exit_code": code,
                        "schema": schema,
                        "current": current,
                        "head": head,
                        "at_head": current == head,
                    }
                )
            else:
                print(
                    f"ledger schema {schema!r}: at {current or 'nothing (never migrated)'},"
                    f" head is {head}"
                )
            return code
        at = upgrade(dsn, schema, args.revision)
        side_tables = _migrate_side_tables(args.config, dsn)
    except MigrateConfigError as exc:
        return fail("migrate", EXIT_USAGE, str(exc), as_json=as_json)
    except InvalidSchemaNameError as exc:
        return fail("migrate", EXIT_USAGE, str(exc), as_json=as_json)
    except DBAPIError as exc:
        if is_connection_error(exc):
            where = _masked(dsn)
            return fail(
                "migrate",
                EXIT_DATABASE,
                f"database {where} unreachable: {database_reason(exc)}",
                as_json=as_json,
            )
        return fail(
            "migrate", EXIT_FAILED, f"database error: {database_reason(exc)}", as_json=as_json
        )
    except SQLAlchemyError as exc:
        return fail(
            "migrate", EXIT_FAILED, f"database error: {database_reason(exc)}", as_json=as_json
        )
    if as_json:
        emit_json(
            {
                "ok": True,
                "exit_code": EXIT_OK,
                "schema": schema,
                "current": at,
                "head": head,
                "at_head": at == head,
            }
        )
    else:
        print(f"ledger schema {schema!r} is at revision {at}" + (" (head)" if at == head else ""))
        for table in side_tables:
            print(f"write-back side table {table}: migration applied")
    return EXIT_OK


def _migrate_side_tables(config: Path | None, dsn: str) -> list[str]:
    """Run the config's `write_back.migration` SQL (side tables of syncd's own). Only a
    config that has one is loaded in full (and must then be valid)."""
    if config is None:
        return []
    documents = _read_yaml(config).get("documents") or {}
    if not isinstance(documents, Mapping) or not any(
        isinstance(d, Mapping)
        and isinstance(d.get("write_back"), Mapping)
        and d["write_back"].get("migration")
        for d in documents.values()
    ):
        return []
    import sqlalchemy as sa

    from syncd.config import ConfigError, load_config
    from syncd.erp.writeback import apply_side_table_migrations

    try:
        full = load_config(config)
    except ConfigError as exc:
        raise MigrateConfigError(f"{config}: {exc}".splitlines()[0]) from None
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            return apply_side_table_migrations(conn, full)
    finally:
        engine.dispose()


def _masked(dsn: str) -> str:
    """The DSN for printing: password and secret query parameters (`?sslpassword=`) masked."""
    from syncd.config.settings import DatabaseSettings

    try:
        return DatabaseSettings(dsn=dsn).masked_dsn()
    except ValueError:
        return "(unparsable DSN)"


def _register_password(dsn: str, register: Callable[[str | None], None]) -> None:
    """Register the DSN's password and secret query parameters for redaction."""
    from syncd.config.settings import DatabaseSettings

    try:
        secrets = DatabaseSettings(dsn=dsn).secret_values()
    except ValueError:
        return
    for secret in secrets:
        register(secret)
