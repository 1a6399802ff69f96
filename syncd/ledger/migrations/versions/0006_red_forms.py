"""Red-letter forms raised by buyers (syncd.ledger.redforms, `syncd red-forms`).

Revision ID: 0006_red_forms
Revises: 0005_audit_chain
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.ledger.migrations import target_schema

revision: str = "0006_red_forms"
down_revision: str | None = "0005_audit_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy: changing it needs a migration of its own.
STATUSES = ("PENDING", "CONFIRMED", "ISSUED", "REJECTED", "EXPIRED")


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "buyer_red_forms",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("form_id", sa.Text, nullable=False),
        sa.Column("original_invoice_no", sa.Text, nullable=False),
        sa.Column("document_id", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("gross_amount", sa.Numeric(18, 2), nullable=True),
        _ts("raised_at"),
        _ts("deadline", nullable=False),
        _ts("decided_at"),
        sa.Column("decided_by", sa.Text, nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.Column("red_invoice_no", sa.Text, nullable=True),
        _ts("red_issued_at"),
        sa.Column(
            "discovered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buyer_red_forms")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            [f"{schema}.documents.id"],
            name=op.f("fk_buyer_red_forms_document_id_documents"),
        ),
        sa.UniqueConstraint(
            "provider", "form_id", name=op.f("uq_buyer_red_forms_provider_form_id")
        ),
        sa.UniqueConstraint("red_invoice_no", name=op.f("uq_buyer_red_forms_red_invoice_no")),
        sa.CheckConstraint(
            "status IN (" + ", ".join(repr(s) for s in STATUSES) + ")",
            name=op.f("ck_buyer_red_forms_status"),
        ),
        schema=schema,
    )
    op.create_index(
        op.f("ix_buyer_red_forms_status_deadline"),
        "buyer_red_forms",
        ["status", "deadline"],
        schema=schema,
    )
    op.create_index(
        op.f("ix_buyer_red_forms_document_id"), "buyer_red_forms", ["document_id"], schema=schema
    )


def downgrade() -> None:
    op.drop_table("buyer_red_forms", schema=target_schema())
