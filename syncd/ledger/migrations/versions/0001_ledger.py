"""Ledger: documents, audit, offsets, partition leases.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from syncd.ledger.migrations import target_schema

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies (a later change of syncd.lifecycle needs its own migration).
STATES = (
    "PENDING",
    "INVALID",
    "READY",
    "SUBMITTED",
    "OUTCOME_UNKNOWN",
    "RETRY_WAIT",
    "ISSUED",
    "REJECTED",
    "BLOCKED",
    "DEAD",
    "REVERSAL_PENDING",
    "REVERSAL_SUBMITTED",
    "REVERSED",
)
KINDS = ("issue", "reversal")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts(name: str, *, nullable: bool = False, now: bool = True) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if now else None,
    )


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("document_type", sa.Text, nullable=False),
        sa.Column("source_table", sa.Text, nullable=False),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=True),
        sa.Column("payload_hash", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        _ts("next_attempt_at", nullable=True, now=False),
        sa.Column("last_error_code", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("invoice_no", sa.Text, nullable=True),
        _ts("issued_at", nullable=True, now=False),
        sa.Column("invoice_url", sa.Text, nullable=True),
        sa.Column("check_code", sa.Text, nullable=True),
        sa.Column("reverses_id", sa.BigInteger, nullable=True),
        sa.Column("source_topic", sa.Text, nullable=True),
        sa.Column("source_partition", sa.Integer, nullable=True),
        sa.Column("source_offset", sa.BigInteger, nullable=True),
        sa.Column("source_ts_ms", sa.BigInteger, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_epoch", sa.BigInteger, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint(
            "document_type",
            "source_table",
            "source_key",
            "kind",
            "revision",
            name=op.f("uq_documents_identity"),
        ),
        sa.UniqueConstraint("serial", name=op.f("uq_documents_serial")),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            [f"{schema}.documents.id"],
            name=op.f("fk_documents_reverses_id_documents"),
        ),
        sa.CheckConstraint(_in("state", STATES), name=op.f("ck_documents_state")),
        sa.CheckConstraint(_in("kind", KINDS), name=op.f("ck_documents_kind")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_documents_attempts")),
        sa.CheckConstraint("revision >= 0", name=op.f("ck_documents_revision")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_documents_state_next_attempt_at"),
        "documents",
        ["state", "next_attempt_at"],
        schema=schema,
    )
    op.create_index(
        op.f("ix_documents_state_updated_at"),
        "documents",
        ["state", "updated_at"],
        schema=schema,
    )
    op.create_index(
        op.f("ix_documents_source_partition"),
        "documents",
        ["source_topic", "source_partition", "state"],
        schema=schema,
    )
    op.create_index(
        op.f("ix_documents_reverses_id"),
        "documents",
        ["reverses_id"],
        schema=schema,
    )

    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        _ts("at"),
        sa.Column("details", JSONB, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            [f"{schema}.documents.id"],
            name=op.f("fk_audit_document_id_documents"),
        ),
        schema=schema,
    )
    op.create_index(op.f("ix_audit_document_id"), "audit", ["document_id", "id"], schema=schema)
    # Append-only: the audit log is evidence; make UPDATE/DELETE fail loudly.
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'syncd audit log is append-only (% refused)', TG_OP;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON "{schema}".audit
        FOR EACH ROW EXECUTE FUNCTION "{schema}".audit_append_only()
        """
    )

    op.create_table(
        "offsets",
        sa.Column("consumer_group", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("consumer_group", "topic", "partition", name=op.f("pk_offsets")),
        sa.CheckConstraint("next_offset >= 0", name=op.f("ck_offsets_next_offset")),
        schema=schema,
    )
    op.create_table(
        "partition_leases",
        sa.Column("consumer_group", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        _ts("claimed_at"),
        sa.PrimaryKeyConstraint(
            "consumer_group", "topic", "partition", name=op.f("pk_partition_leases")
        ),
        schema=schema,
    )


def downgrade() -> None:
    schema = target_schema()
    op.drop_table("partition_leases", schema=schema)
    op.drop_table("offsets", schema=schema)
    op.execute(f'DROP TRIGGER IF EXISTS audit_append_only ON "{schema}".audit')
    op.drop_table("audit", schema=schema)
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".audit_append_only()')
    op.drop_table("documents", schema=schema)
