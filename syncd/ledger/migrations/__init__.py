"""Alembic migrations of syncd's ledger schema, shipped inside the package.

They are run by `syncd.ledger.migrate.upgrade` (and `syncd migrate`), never by an
`alembic.ini`: the schema name is configurable and reaches the scripts through
`Config.attributes["syncd_schema"]`.
"""

from __future__ import annotations

SCHEMA_ATTRIBUTE = "syncd_schema"


def target_schema() -> str:
    """The schema the running migration writes to (inside env.py / version scripts)."""
    from alembic import context

    from syncd.ledger.schema import DEFAULT_SCHEMA

    value = context.config.attributes.get(SCHEMA_ATTRIBUTE, DEFAULT_SCHEMA)
    return str(value)
