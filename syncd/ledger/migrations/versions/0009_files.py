"""The archive of invoice files: one row per (invoice number, format) (syncd.ledger.files).

Revision ID: 0009_files
Revises: 0008_reconcile
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.ledger.migrations import target_schema

revision: str = "0009_files"
down_revision: str | None = "0008_reconcile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "invoice_files",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("invoice_no", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="PENDING"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("claimed_by", sa.Text, nullable=True),
        _ts("claimed_until"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("content", sa.LargeBinary, nullable=True),
        _ts("keep_until"),
        _ts("archived_at"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_files")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            [f"{schema}.documents.id"],
            name=op.f("fk_invoice_files_document_id_documents"),
        ),
        sa.UniqueConstraint(
            "invoice_no", "format", name=op.f("uq_invoice_files_invoice_no_format")
        ),
        sa.CheckConstraint(
            "state IN ('PENDING', 'DONE', 'FAILED', 'UNAVAILABLE')",
            name=op.f("ck_invoice_files_state"),
        ),
        sa.CheckConstraint("format IN ('pdf', 'ofd', 'xml')", name=op.f("ck_invoice_files_format")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_invoice_files_attempts")),
        schema=schema,
    )
    op.create_index(
        "ix_invoice_files_state_next_attempt_at",
        "invoice_files",
        ["state", "next_attempt_at"],
        schema=schema,
    )
    op.create_index("ix_invoice_files_document_id", "invoice_files", ["document_id"], schema=schema)


def downgrade() -> None:
    op.drop_table("invoice_files", schema=target_schema())
