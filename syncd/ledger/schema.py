"""syncd's own tables in the ERP database.

The tables are declared under the placeholder schema `syncd`; a deployment that
configures another schema name maps it with SQLAlchemy's `schema_translate_map`
(see `syncd.ledger.engine.ledger_engine`), so queries never build schema names
from strings. The Alembic migrations in `syncd/migrations` create exactly these
tables; `tests/integration/test_ledger.py` checks the two agree.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from syncd.identity import DocumentKind
from syncd.lifecycle import DocumentState

#: Placeholder schema name the tables are declared under.
SCHEMA: Final = "syncd"
DEFAULT_SCHEMA: Final = "syncd"

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


STATE_VALUES: Final = [s.value for s in DocumentState]
KIND_VALUES: Final = [k.value for k in DocumentKind]

documents = Table(
    "documents",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    # identity
    Column("document_type", Text, nullable=False),
    Column("source_table", Text, nullable=False),
    Column("source_key", Text, nullable=False),  # canonical JSON of the primary key
    Column("kind", Text, nullable=False),
    Column("revision", Integer, nullable=False, server_default="0"),
    # life cycle
    Column("state", Text, nullable=False),
    Column("serial", Text, nullable=False),
    Column("payload", JSONB(none_as_null=True), nullable=True),
    Column("payload_hash", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # bumped by every transition: lets a caller detect A-B-A (READY -> RETRY_WAIT -> READY)
    Column("version", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error_code", Text, nullable=True),
    Column("last_error", Text, nullable=True),
    # provider result
    Column("invoice_no", Text, nullable=True),
    Column("issued_at", DateTime(timezone=True), nullable=True),
    Column("invoice_url", Text, nullable=True),
    Column("check_code", Text, nullable=True),
    # for a reversal row: the issue row it reverses
    Column("reverses_id", BigInteger, ForeignKey(f"{SCHEMA}.documents.id"), nullable=True),
    # where the (last) source event came from
    Column("source_topic", Text, nullable=True),
    Column("source_partition", Integer, nullable=True),
    Column("source_offset", BigInteger, nullable=True),
    Column("source_ts_ms", BigInteger, nullable=True),
    # who wrote it last (fencing is enforced through partition_leases)
    Column("lease_owner", Text, nullable=True),
    Column("lease_epoch", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint(
        "document_type",
        "source_table",
        "source_key",
        "kind",
        "revision",
        name="uq_documents_identity",
    ),
    UniqueConstraint("serial", name="uq_documents_serial"),
    CheckConstraint(_in("state", STATE_VALUES), name="state"),
    CheckConstraint(_in("kind", KIND_VALUES), name="kind"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint("revision >= 0", name="revision"),
    Index("ix_documents_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_documents_state_updated_at", "state", "updated_at"),
    Index("ix_documents_source_partition", "source_topic", "source_partition", "state"),
    Index("ix_documents_reverses_id", "reverses_id"),
)

offsets = Table(
    "offsets",
    metadata,
    Column("consumer_group", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer_group", "topic", "partition", name="pk_offsets"),
    CheckConstraint("next_offset >= 0", name="next_offset"),
)

partition_leases = Table(
    "partition_leases",
    metadata,
    Column("consumer_group", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("owner", Text, nullable=True),
    Column("epoch", BigInteger, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer_group", "topic", "partition", name="pk_partition_leases"),
)

#: Provider access tokens shared by the fleet (`syncd.ledger.tokens`): one row per app.
#: `access_token` is a credential: readable only by the ledger's role, never logged.
issuer_tokens = Table(
    "issuer_tokens",
    metadata,
    Column("app_key", Text, primary_key=True),
    Column("access_token", Text, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("fetched_at", DateTime(timezone=True), nullable=True),
    Column("fetches", BigInteger, nullable=False, server_default="0"),
    Column("period_start", DateTime(timezone=True), nullable=True),
    Column("period_fetches", Integer, nullable=False, server_default="0"),
    Column("refused_reason", Text, nullable=True),
    Column("refused_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("fetches >= 0", name="fetches"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    # NULL: an operator action that concerns no one document (`dlq replay`)
    Column("document_id", BigInteger, ForeignKey(f"{SCHEMA}.documents.id"), nullable=True),
    Column("from_state", Text, nullable=True),  # NULL: the row was created
    Column("to_state", Text, nullable=True),  # NULL: not a state change
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("details", JSONB(none_as_null=True), nullable=True),
    # who: the database roles (current_user, session_user) and, for a person, the OS user
    Column("db_user", Text, nullable=True),
    Column("db_session_user", Text, nullable=True),
    Column("os_user", Text, nullable=True),
    # why: the reason an operator gave (`--reason`)
    Column("why", Text, nullable=True),
    # the hash chain (syncd.ledger.chain)
    Column("chain", SmallInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),
    Index("ix_audit_document_id", "document_id", "id"),
    Index("ix_audit_at", "at"),
)

#: The head of each audit chain: the last position and hash, locked by the appender.
audit_chains = Table(
    "audit_chains",
    metadata,
    Column("chain", SmallInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("last_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: What pruning removed from the start of a chain (append-only, like the trail).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("chain", SmallInteger, nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("last_hash", Text, nullable=False),
    Column("pruned_rows", BigInteger, nullable=False),
    Column("pruned_before", DateTime(timezone=True), nullable=False),
    Column("signature", Text, nullable=True),
    Column("db_user", Text, nullable=True),
    Column("os_user", Text, nullable=True),
    Column("why", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("chain", "through_seq", name="uq_audit_checkpoints_chain_through_seq"),
)

#: The decisions of the approver role (`syncd approve` / `syncd reject`): only that role may
#: INSERT here (`syncd grants`), nobody may UPDATE or DELETE (trigger), and the database
#: fills in who made the decision (`session_user`, `current_user`), so the daemon -- which
#: only reads this table -- cannot approve anything itself, and a person cannot claim to be
#: someone else. One decision per document.
approvals = Table(
    "approvals",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("document_id", BigInteger, ForeignKey(f"{SCHEMA}.documents.id"), nullable=False),
    Column("decision", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("os_user", Text, nullable=True),  # as the client reports it
    Column("db_session_user", Text, nullable=False, server_default=text("SESSION_USER")),
    Column("db_current_user", Text, nullable=False, server_default=text("CURRENT_USER")),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("document_id", name="uq_approvals_document_id"),
    CheckConstraint("decision IN ('approve', 'reject')", name="decision"),
    CheckConstraint("length(btrim(reason)) > 0", name="reason"),
)


#: Red-letter forms raised by buyers against our invoices (`syncd red-forms`,
#: `syncd.pipeline.redforms`). One row per platform form: discovery is idempotent by
#: (provider, form_id), and a red invoice number is recorded against one form only.
BUYER_FORM_STATUSES: Final = ["PENDING", "CONFIRMED", "ISSUED", "REJECTED", "EXPIRED"]

buyer_red_forms = Table(
    "buyer_red_forms",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("provider", Text, nullable=False),
    Column("form_id", Text, nullable=False),
    Column("original_invoice_no", Text, nullable=False),
    # the ledger's issue row of the original invoice (NULL: not issued through syncd)
    Column("document_id", BigInteger, ForeignKey(f"{SCHEMA}.documents.id"), nullable=True),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("gross_amount", Numeric(18, 2), nullable=True),
    Column("raised_at", DateTime(timezone=True), nullable=True),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decided_by", Text, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("red_invoice_no", Text, nullable=True),
    Column("red_issued_at", DateTime(timezone=True), nullable=True),
    Column("discovered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("provider", "form_id", name="uq_buyer_red_forms_provider_form_id"),
    UniqueConstraint("red_invoice_no", name="uq_buyer_red_forms_red_invoice_no"),
    CheckConstraint(_in("status", BUYER_FORM_STATUSES), name="status"),
    Index("ix_buyer_red_forms_status_deadline", "status", "deadline"),
    Index("ix_buyer_red_forms_document_id", "document_id"),
)

#: `syncd backfill` runs: what was asked (document type, condition, why, who) and how far it
#: got. The cursor (`last_key`) moves in the same transaction as the documents a page
#: records, so a killed run resumes exactly after the last page it committed.
backfill_runs = Table(
    "backfill_runs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("document_type", Text, nullable=False),
    Column("source_table", Text, nullable=False),
    # the --where condition, canonical JSON (a run resumes only for the same condition)
    Column("condition", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="running"),
    # the key (JSON list, key column order) of the last row a committed page covered
    Column("last_key", JSONB(none_as_null=True), nullable=True),
    Column("pages", BigInteger, nullable=False, server_default="0"),
    Column("scanned", BigInteger, nullable=False, server_default="0"),
    Column("issued", BigInteger, nullable=False, server_default="0"),
    Column("reversed", BigInteger, nullable=False, server_default="0"),
    Column("skipped", BigInteger, nullable=False, server_default="0"),
    Column("invalid", BigInteger, nullable=False, server_default="0"),
    Column("actor", Text, nullable=False),
    Column("os_user", Text, nullable=True),
    Column("why", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("state IN ('running', 'finished')", name="state"),
    CheckConstraint("length(btrim(why)) > 0", name="why"),
    Index("ix_backfill_runs_document_type_state", "document_type", "state"),
)

#: One row per finished `syncd reconcile` run (append-only): the period, the exception
#: counts per class and when it finished. The daemon exports the newest row as
#: `syncd_reconcile_exceptions{class}` and `syncd_reconcile_last_success_timestamp_seconds`,
#: so a CronJob's result reaches Prometheus without a Pushgateway or a shared volume.
reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("period_from", DateTime(timezone=True), nullable=False),
    Column("period_to", DateTime(timezone=True), nullable=False),
    Column("document_type", Text, nullable=True),  # NULL: every document type
    Column("clean", Boolean, nullable=False),
    Column("exceptions", BigInteger, nullable=False),
    Column("by_class", JSONB, nullable=False),  # {class: count}, every class present
    Column("documents", BigInteger, nullable=False),
    Column("db_user", Text, nullable=False, server_default=text("CURRENT_USER")),
    Column("os_user", Text, nullable=True),
    CheckConstraint("exceptions >= 0", name="exceptions"),
    Index("ix_reconcile_runs_finished_at", "finished_at"),
)

#: Values of `invoice_files.state` (`syncd.ledger.files`).
FILE_STATES: Final = ["PENDING", "DONE", "FAILED", "UNAVAILABLE"]

#: The files of issued invoices (PDF, OFD, XML) and where they are archived: one row per
#: (invoice number, format), created PENDING when the document is issued and made DONE
#: (with the SHA-256 of the stored bytes) only after the file is durably in the archive.
#: `content` holds the bytes when the archive is the database; NULL with a directory.
invoice_files = Table(
    "invoice_files",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("document_id", BigInteger, ForeignKey(f"{SCHEMA}.documents.id"), nullable=False),
    Column("invoice_no", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="PENDING"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("claimed_by", Text, nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("sha256", Text, nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("location", Text, nullable=True),
    Column("content", LargeBinary, nullable=True),
    Column("keep_until", DateTime(timezone=True), nullable=True),
    Column("archived_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("invoice_no", "format", name="uq_invoice_files_invoice_no_format"),
    CheckConstraint(_in("state", FILE_STATES), name="state"),
    CheckConstraint("format IN ('pdf', 'ofd', 'xml')", name="format"),
    CheckConstraint("attempts >= 0", name="attempts"),
    Index("ix_invoice_files_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_invoice_files_document_id", "document_id"),
)
