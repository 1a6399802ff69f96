"""Backfill runs: `syncd backfill`'s request, who asked and why, and its resumable cursor.

Revision ID: 0007_backfill
Revises: 0006_red_forms
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from syncd.ledger.migrations import target_schema

revision: str = "0007_backfill"
down_revision: str | None = "0006_red_forms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "backfill_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("document_type", sa.Text, nullable=False),
        sa.Column("source_table", sa.Text, nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="running"),
        sa.Column("last_key", JSONB(none_as_null=True), nullable=True),
        _count("pages"),
        _count("scanned"),
        _count("issued"),
        _count("reversed"),
        _count("skipped"),
        _count("invalid"),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("os_user", sa.Text, nullable=True),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill_runs")),
        sa.CheckConstraint("state IN ('running', 'finished')", name=op.f("ck_backfill_runs_state")),
        sa.CheckConstraint("length(btrim(why)) > 0", name=op.f("ck_backfill_runs_why")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_backfill_runs_document_type_state"),
        "backfill_runs",
        ["document_type", "state"],
        schema=schema,
    )


def downgrade() -> None:
    schema = target_schema()
    op.drop_index(op.f("ix_backfill_runs_document_type_state"), "backfill_runs", schema=schema)
    op.drop_table("backfill_runs", schema=schema)
