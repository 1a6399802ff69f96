"""Alembic environment: online with the connection handed in by `syncd.ledger.migrate`,
or offline (`syncd migrate --sql`) rendering SQL for a DBA to review."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from syncd.ledger.migrations import target_schema
from syncd.ledger.schema import metadata

config = context.config
schema = target_schema()
VERSION_TABLE = "alembic_version"


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
        version_table_schema=schema,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    conn = config.attributes.get("connection")
    if conn is None:
        raise RuntimeError(
            "syncd migrations run through syncd.ledger.migrate.upgrade(), which passes a connection"
        )
    run_online(conn)
