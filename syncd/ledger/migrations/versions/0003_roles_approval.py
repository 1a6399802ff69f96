"""Approval: the AWAITING_APPROVAL state and the approver role's decisions table.

Revision ID: 0003_roles_approval
Revises: 0001_ledger
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.ledger.migrations import target_schema

revision: str = "0003_roles_approval"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies (a later change of syncd.lifecycle needs its own migration).
STATES_BEFORE = (
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
NEW_STATES = ("AWAITING_APPROVAL",)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _states_check(states: Sequence[str]) -> None:
    schema = target_schema()
    op.drop_constraint(op.f("ck_documents_state"), "documents", schema=schema, type_="check")
    op.create_check_constraint(
        op.f("ck_documents_state"), "documents", _in("state", states), schema=schema
    )


def upgrade() -> None:
    schema = target_schema()
    _states_check((*STATES_BEFORE, *NEW_STATES))
    op.create_table(
        "approvals",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("os_user", sa.Text, nullable=True),
        sa.Column(
            "db_session_user", sa.Text, nullable=False, server_default=sa.text("SESSION_USER")
        ),
        sa.Column(
            "db_current_user", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")
        ),
        sa.Column(
            "decided_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.UniqueConstraint("document_id", name=op.f("uq_approvals_document_id")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            [f"{schema}.documents.id"],
            name=op.f("fk_approvals_document_id_documents"),
        ),
        sa.CheckConstraint("decision IN ('approve', 'reject')", name=op.f("ck_approvals_decision")),
        sa.CheckConstraint("length(btrim(reason)) > 0", name=op.f("ck_approvals_reason")),
        schema=schema,
    )
    # Who decided is the database's word, not the client's: whatever the INSERT says, the
    # trigger (running as the inserting role) sets the roles and the time; and a decision
    # is only taken for a document that waits for one. UPDATE/DELETE are refused: a
    # decision is evidence, like the audit trail.
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".approvals_stamp() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            current_state text;
        BEGIN
            NEW.db_session_user := session_user;
            NEW.db_current_user := current_user;
            NEW.decided_at := now();
            -- no FOR SHARE (it needs UPDATE on documents): only a decision moves a row
            -- out of AWAITING_APPROVAL, and there is one decision per document
            SELECT state INTO current_state FROM "{schema}".documents
                WHERE id = NEW.document_id;
            IF current_state IS DISTINCT FROM 'AWAITING_APPROVAL' THEN
                RAISE EXCEPTION 'document % is %, not AWAITING_APPROVAL',
                    NEW.document_id, coalesce(current_state, 'missing')
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$
        """  # noqa: S608 - the schema name is a checked identifier
    )
    op.execute(
        f"""
        CREATE TRIGGER approvals_stamp BEFORE INSERT ON "{schema}".approvals
        FOR EACH ROW EXECUTE FUNCTION "{schema}".approvals_stamp()
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".approvals_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'syncd approvals are append-only (% refused)', TG_OP;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER approvals_append_only BEFORE UPDATE OR DELETE ON "{schema}".approvals
        FOR EACH ROW EXECUTE FUNCTION "{schema}".approvals_append_only()
        """
    )
    # The daemon's role may UPDATE documents, so the database itself checks that nothing
    # leaves AWAITING_APPROVAL towards the provider without an approver's decision (only
    # REJECTED may be reached without one: a cancellation before approval).
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".documents_approval_required() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM "{schema}".approvals
                           WHERE document_id = NEW.id AND decision = 'approve') THEN
                RAISE EXCEPTION
                    'document % cannot leave AWAITING_APPROVAL for % without an approval',
                    NEW.id, NEW.state USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$
        """  # noqa: S608 - the schema name is a checked identifier
    )
    op.execute(
        f"""
        CREATE TRIGGER documents_approval_required BEFORE UPDATE ON "{schema}".documents
        FOR EACH ROW
        WHEN (OLD.state = 'AWAITING_APPROVAL'
              AND NEW.state NOT IN ('AWAITING_APPROVAL', 'REJECTED'))
        EXECUTE FUNCTION "{schema}".documents_approval_required()
        """
    )


def downgrade() -> None:
    schema = target_schema()
    op.execute(f'DROP TRIGGER IF EXISTS documents_approval_required ON "{schema}".documents')
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".documents_approval_required()')
    op.drop_table("approvals", schema=schema)
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".approvals_stamp()')
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".approvals_append_only()')
    op.execute(
        f"UPDATE \"{schema}\".documents SET state = 'PENDING' WHERE state = 'AWAITING_APPROVAL'"  # noqa: S608
    )
    _states_check(STATES_BEFORE)
