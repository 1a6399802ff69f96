"""Engine construction for the ledger: driver, pool hygiene and the schema mapping."""

from __future__ import annotations

import re
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from syncd.ledger.models import fast_json
from syncd.ledger.schema import SCHEMA

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InvalidSchemaNameError(ValueError):
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


def ledger_engine(url: str | URL, schema: str = SCHEMA, **kwargs: Any) -> Engine:
    """Create the engine the daemon uses for ledger, offsets and write-back.

    `pool_pre_ping` so a restarted database costs one failed ping instead of one failed
    transaction per pooled connection. jsonb goes through orjson both ways: parsing and
    writing frozen payloads with the standard library was a tenth of the daemon's CPU.
    """
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("json_serializer", fast_json)
    kwargs.setdefault("json_deserializer", orjson.loads)
    engine = create_engine(normalise_url(url), **kwargs)
    return with_schema(engine, schema)
