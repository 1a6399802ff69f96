"""Engine construction for the ledger: driver, pool hygiene and the schema mapping."""

from __future__ import annotations

import re
import time
from typing import Any, Final

import orjson
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from syncd.errors import LedgerError
from syncd.ledger.models import fast_json
from syncd.ledger.schema import SCHEMA

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InvalidSchemaNameError(LedgerError, ValueError):
    def __init__(self, schema: str) -> None:
        self.schema = schema
        super().__init__(
            f"ledger schema name {schema!r} is not a plain lower-case SQL identifier "
            "(letters, digits, underscore; at most 63)"
        )


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_RE.fullmatch(schema):
        raise InvalidSchemaNameError(schema)
    return schema


def normalise_url(url: str | URL) -> URL:
    """`postgresql://` means psycopg 3 here (the only PostgreSQL driver we ship)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def with_schema(engine: Engine, schema: str) -> Engine:
    """The same pool, with the placeholder schema of `syncd.ledger.schema` mapped to `schema`."""
    check_schema_name(schema)
    if schema == SCHEMA:
        return engine
    return engine.execution_options(schema_translate_map={SCHEMA: schema})


#: A pooled connection idle for longer than this is pinged before it is handed out.
IDLE_PING_SECONDS: Final = 1.0
_RETURNED_AT: Final = "syncd_returned_at"


def ledger_engine(url: str | URL, schema: str = SCHEMA, **kwargs: Any) -> Engine:
    """Create the engine the daemon uses for ledger, offsets and write-back.

    A connection that sat idle in the pool for more than `IDLE_PING_SECONDS` is pinged
    before use, so a restarted database costs one failed ping instead of one failed
    transaction per pooled connection. One that was in use a moment ago is not: under load
    every transaction checked a connection out, and SQLAlchemy's `pool_pre_ping` made that
    a round trip of its own (and a wait for the GIL after it) on the committer's path.
    jsonb goes through orjson both ways: parsing and writing frozen payloads with the
    standard library was a tenth of the daemon's CPU.
    """
    kwargs.setdefault("json_serializer", fast_json)
    kwargs.setdefault("json_deserializer", orjson.loads)
    engine = create_engine(normalise_url(url), **kwargs)
    _ping_when_idle(engine)
    return with_schema(engine, schema)


def _ping_when_idle(engine: Engine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is not None and time.monotonic() - returned < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            # the pool discards this connection and checks out (or opens) another
            raise exc.DisconnectionError(str(error)) from error

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()
