"""Audit trail: who and why, hash chains with their heads, pruning checkpoints.

Existing audit rows are chained into chain 0 in id order (their who-fields stay NULL: the
roles that wrote them were not recorded).

Revision ID: 0005_audit_chain
Revises: 0004_issuer_tokens
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from syncd.ledger.migrations import target_schema

revision: str = "0005_audit_chain"
down_revision: str | None = "0004_issuer_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: changing them needs a migration of its own.
CHAINS = 32
GENESIS = "0" * 64


def upgrade() -> None:
    schema = target_schema()
    for name in ("db_user", "db_session_user", "os_user", "why"):
        op.add_column("audit", sa.Column(name, sa.Text, nullable=True), schema=schema)
    op.add_column("audit", sa.Column("chain", sa.SmallInteger, nullable=True), schema=schema)
    op.add_column("audit", sa.Column("seq", sa.BigInteger, nullable=True), schema=schema)
    op.add_column("audit", sa.Column("prev_hash", sa.Text, nullable=True), schema=schema)
    op.add_column("audit", sa.Column("hash", sa.Text, nullable=True), schema=schema)
    op.alter_column("audit", "document_id", nullable=True, schema=schema)
    op.alter_column("audit", "to_state", nullable=True, schema=schema)

    op.create_table(
        "audit_chains",
        sa.Column("chain", sa.SmallInteger, autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_hash", sa.Text, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chains")),
        schema=schema,
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("chain", sa.SmallInteger, nullable=False),
        sa.Column("through_seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.Text, nullable=False),
        sa.Column("pruned_rows", sa.BigInteger, nullable=False),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.Text, nullable=True),
        sa.Column("db_user", sa.Text, nullable=True),
        sa.Column("os_user", sa.Text, nullable=True),
        sa.Column("why", sa.Text, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint(
            "chain", "through_seq", name=op.f("uq_audit_checkpoints_chain_through_seq")
        ),
        schema=schema,
    )

    last_seq, last_hash = _chain_existing_rows(schema)
    heads = sa.table(
        "audit_chains",
        sa.column("chain", sa.SmallInteger),
        sa.column("last_seq", sa.BigInteger),
        sa.column("last_hash", sa.Text),
        schema=schema,
    )
    op.bulk_insert(
        heads,
        [
            {
                "chain": c,
                "last_seq": last_seq if c == 0 else 0,
                "last_hash": last_hash if c == 0 else GENESIS,
            }
            for c in range(CHAINS)
        ],
    )
    for name in ("chain", "seq", "prev_hash", "hash"):
        op.alter_column("audit", name, nullable=False, schema=schema)
    op.create_unique_constraint(
        op.f("uq_audit_chain_seq"), "audit", ["chain", "seq"], schema=schema
    )
    op.create_index(op.f("ix_audit_at"), "audit", ["at"], schema=schema)

    # UPDATE is always refused; DELETE only of rows a pruning checkpoint accounts for.
    # (A superuser can switch triggers off: `syncd audit verify` is what catches that.)
    # The schema name is a checked identifier (syncd.ledger.engine.check_schema_name).
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION "{schema}".audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND EXISTS (
                SELECT 1 FROM "{schema}".audit_checkpoints c
                WHERE c.chain = OLD.chain AND c.through_seq >= OLD.seq
            ) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'syncd audit log is append-only (% refused)', TG_OP;
        END $$
        """  # noqa: S608
    )
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".audit_checkpoints_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'syncd audit checkpoints are append-only (% refused)', TG_OP;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE
        ON "{schema}".audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION "{schema}".audit_checkpoints_append_only()
        """
    )


def _chain_existing_rows(schema: str) -> tuple[int, str]:
    """Chain the rows written before this revision into chain 0, in id order."""
    from syncd.ledger.chain import LinkFields, link_hash

    if context.is_offline_mode():
        # `syncd migrate --sql`: no rows to read. Should audit rows exist, the SET NOT NULL
        # below fails and nothing is applied: run that upgrade online.
        return 0, GENESIS
    bind = op.get_bind()
    columns = "id, document_id, from_state, to_state, reason, actor, at, details"
    query = f'SELECT {columns} FROM "{schema}".audit ORDER BY id'  # noqa: S608
    rows = bind.execute(sa.text(query)).mappings()
    updates = []
    prev = GENESIS
    seq = 0
    for m in rows:
        seq += 1
        fields = LinkFields.from_mapping(
            {**m, "db_user": None, "db_session_user": None, "os_user": None, "why": None}
        )
        digest = link_hash(fields, chain=0, seq=seq, prev=prev)
        updates.append({"i": m["id"], "s": seq, "p": prev, "h": digest})
        prev = digest
    if updates:
        op.execute(f'ALTER TABLE "{schema}".audit DISABLE TRIGGER audit_append_only')
        link = "chain = 0, seq = :s, prev_hash = :p, hash = :h"
        bind.execute(sa.text(f'UPDATE "{schema}".audit SET {link} WHERE id = :i'), updates)  # noqa: S608
        op.execute(f'ALTER TABLE "{schema}".audit ENABLE TRIGGER audit_append_only')
    return seq, prev


def downgrade() -> None:
    schema = target_schema()
    op.execute(
        f'DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON "{schema}".audit_checkpoints'
    )
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".audit_checkpoints_append_only()')
    op.drop_table("audit_checkpoints", schema=schema)
    op.drop_table("audit_chains", schema=schema)
    op.drop_index(op.f("ix_audit_at"), "audit", schema=schema)
    op.drop_constraint(op.f("uq_audit_chain_seq"), "audit", schema=schema)
    for name in ("hash", "prev_hash", "seq", "chain", "why", "os_user", "db_session_user"):
        op.drop_column("audit", name, schema=schema)
    op.drop_column("audit", "db_user", schema=schema)
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION "{schema}".audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'syncd audit log is append-only (% refused)', TG_OP;
        END $$
        """
    )
