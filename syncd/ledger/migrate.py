"""Run the packaged Alembic migrations, safely from several replicas at once.

Every replica may call `upgrade` on start: the whole upgrade (schema creation, all
pending revisions, the version row) runs in ONE transaction under a transaction-level
advisory lock keyed by the schema name. A second replica waits for the lock, then finds
the schema at head and does nothing. PostgreSQL DDL is transactional, so a failed
upgrade leaves nothing half-done.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from syncd.ledger.engine import check_schema_name, ledger_engine, normalise_url
from syncd.ledger.migrations import SCHEMA_ATTRIBUTE
from syncd.ledger.schema import DEFAULT_SCHEMA

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def alembic_config(schema: str = DEFAULT_SCHEMA, url: str | URL | None = None) -> Config:
    """An in-memory Alembic config pointing into the package (no alembic.ini needed)."""
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    cfg.attributes[SCHEMA_ATTRIBUTE] = check_schema_name(schema)
    return cfg


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for migrating `schema`."""
    digest = hashlib.blake2b(f"syncd.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations packaged")
    return head


def _engine(url_or_engine: str | URL | Engine, schema: str) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return ledger_engine(url_or_engine, schema, pool_size=1, max_overflow=0), True


def upgrade(
    url_or_engine: str | URL | Engine, schema: str = DEFAULT_SCHEMA, revision: str = "head"
) -> str | None:
    """Bring `schema` to `revision`; returns the revision it is at afterwards."""
    check_schema_name(schema)
    engine, owned = _engine(url_or_engine, schema)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(schema)})
            exists = conn.execute(
                text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            ).first()
            if exists is None:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            cfg = alembic_config(schema)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            return _current(conn, schema)
    finally:
        if owned:
            engine.dispose()


def current_revision(url_or_engine: str | URL | Engine, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The revision the schema is at (None: never migrated)."""
    check_schema_name(schema)
    engine, owned = _engine(url_or_engine, schema)
    try:
        with engine.connect() as conn:
            return _current(conn, schema)
    finally:
        if owned:
            engine.dispose()


def _current(conn: Connection, schema: str) -> str | None:
    ctx = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    return ctx.get_current_revision()


def upgrade_sql(url: str | URL, schema: str = DEFAULT_SCHEMA, revision: str = "head") -> str:
    """The SQL `upgrade` would run, for review (Alembic offline mode; no connection)."""
    out = io.StringIO()
    cfg = alembic_config(schema, normalise_url(url))
    cfg.output_buffer = out
    out.write(f'CREATE SCHEMA IF NOT EXISTS "{schema}";\n\n')
    command.upgrade(cfg, revision, sql=True)
    return out.getvalue()
