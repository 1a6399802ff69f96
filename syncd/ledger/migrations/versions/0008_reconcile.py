"""Results of `syncd reconcile`, for the daemon to export (syncd.ledger.reconcile).

Revision ID: 0008_reconcile
Revises: 0007_backfill
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from syncd.ledger.migrations import target_schema

revision: str = "0008_reconcile"
down_revision: str | None = "0007_backfill"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        _ts("started_at"),
        sa.Column(
            "finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        _ts("period_from"),
        _ts("period_to"),
        sa.Column("document_type", sa.Text, nullable=True),
        sa.Column("clean", sa.Boolean, nullable=False),
        sa.Column("exceptions", sa.BigInteger, nullable=False),
        sa.Column("by_class", JSONB, nullable=False),
        sa.Column("documents", sa.BigInteger, nullable=False),
        sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
        sa.Column("os_user", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
        sa.CheckConstraint("exceptions >= 0", name=op.f("ck_reconcile_runs_exceptions")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_reconcile_runs_finished_at"), "reconcile_runs", ["finished_at"], schema=schema
    )


def downgrade() -> None:
    schema = target_schema()
    op.drop_index(op.f("ix_reconcile_runs_finished_at"), "reconcile_runs", schema=schema)
    op.drop_table("reconcile_runs", schema=schema)
