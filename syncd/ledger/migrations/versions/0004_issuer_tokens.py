"""Issuer access tokens shared by every replica (syncd.ledger.tokens).

Revision ID: 0004_issuer_tokens
Revises: 0003_roles_approval
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.ledger.migrations import target_schema

revision: str = "0004_issuer_tokens"
down_revision: str | None = "0003_roles_approval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "issuer_tokens",
        sa.Column("app_key", sa.Text, nullable=False),
        sa.Column("access_token", sa.Text, nullable=True),
        _ts("expires_at"),
        _ts("fetched_at"),
        sa.Column("fetches", sa.BigInteger, nullable=False, server_default="0"),
        _ts("period_start"),
        sa.Column("period_fetches", sa.Integer, nullable=False, server_default="0"),
        sa.Column("refused_reason", sa.Text, nullable=True),
        _ts("refused_at"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("app_key", name=op.f("pk_issuer_tokens")),
        sa.CheckConstraint("fetches >= 0", name=op.f("ck_issuer_tokens_fetches")),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("issuer_tokens", schema=target_schema())
