"""Migrations and the ledger repository against the real PostgreSQL of the local stack.

Uses its own database (`ledger_test`, or $SYNCD_LEDGER_TEST_DB), created and dropped
here; never touches `erp`. Races are made deterministic by waiting until the second
transaction is visibly blocked on a lock in pg_stat_activity, never by sleeping.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from syncd.changes import RecordPosition
from syncd.identity import DocumentIdentity, DocumentKind
from syncd.ledger import engine as ledger_engine_module
from syncd.ledger import repository as repo
from syncd.ledger.engine import ledger_engine
from syncd.ledger.errors import (
    DocumentNotFoundError,
    FencedError,
    FrozenPayloadError,
    IdentityConflictError,
    NotReversibleError,
    StaleStateError,
)
from syncd.ledger.migrate import current_revision, head_revision, upgrade, upgrade_sql
from syncd.ledger.models import TopicPartition
from syncd.ledger.schema import metadata
from syncd.lifecycle import DocumentState, InvalidTransitionError

pytestmark = pytest.mark.integration

S = DocumentState
SERVER = os.environ.get(
    "SYNCD_TEST_PG",
    f"postgresql+psycopg://postgres@127.0.0.1:{os.environ.get('SYNCD_PG_PORT', '15432')}",
)
DB = os.environ.get("SYNCD_LEDGER_TEST_DB", "ledger_test")
URL = f"{SERVER}/{DB}"
PAYLOAD = {"serial": "X", "lines": [{"net_amount": "1.00"}]}
T = TypeVar("T")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    assert DB != "erp"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{DB}"'))
    except DBAPIError as exc:  # pragma: no cover - environment problem, say so clearly
        pytest.fail(f"PostgreSQL of the local stack not reachable at {SERVER}: {exc}")
    yield URL
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def engine(database: str) -> Iterator[Engine]:
    upgrade(database)
    eng = ledger_engine(database, pool_size=8)
    yield eng
    eng.dispose()


@pytest.fixture
def ident() -> Callable[..., DocumentIdentity]:
    """Fresh identities per test, so tests share the schema without cleaning it."""

    def make(kind: DocumentKind = DocumentKind.ISSUE, revision: int = 0) -> DocumentIdentity:
        return DocumentIdentity.of(
            "invoice", "public.sales_order", {"id": uuid.uuid4().int % 10**9}, kind, revision
        )

    return make


def serial() -> str:
    return "S" + uuid.uuid4().hex[:20].upper()


def wait_until_blocked(eng: Engine, pid: int) -> None:
    """Wait (on the database's own clock, bounded) until backend `pid` waits on a lock."""
    with eng.connect() as c:
        for _ in range(2000):
            row = c.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).first()
            if row is not None and row[0] == "Lock":
                return
            c.execute(text("SELECT pg_sleep(0.01)"))
            c.rollback()
    raise AssertionError(f"backend {pid} never blocked on a lock")


def backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def in_thread(fn: Callable[[], T]) -> tuple[threading.Thread, list[T], list[BaseException]]:
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, results, errors


# ---------------------------------------------------------------------------- migrations


def test_upgrade_twice_is_idempotent_and_matches_the_declared_tables(database: str) -> None:
    assert upgrade(database, "mig_twice") == head_revision()
    assert upgrade(database, "mig_twice") == head_revision()
    assert current_revision(database, "mig_twice") == head_revision()
    eng = create_engine(database)
    try:
        insp = inspect(eng)
        assert set(insp.get_table_names(schema="mig_twice")) == {
            "alembic_version",
            "documents",
            "audit",
            "audit_chains",
            "audit_checkpoints",
            "offsets",
            "partition_leases",
            "approvals",
            "issuer_tokens",
            "buyer_red_forms",
            "backfill_runs",
            "reconcile_runs",
            "invoice_files",
        }
        for table in metadata.sorted_tables:
            declared = {c.name for c in table.columns}
            migrated = {c["name"] for c in insp.get_columns(table.name, schema="mig_twice")}
            assert declared == migrated, table.name
            declared_ix = {ix.name for ix in table.indexes}
            migrated_ix = {ix["name"] for ix in insp.get_indexes(table.name, schema="mig_twice")}
            assert declared_ix <= migrated_ix, table.name
    finally:
        eng.dispose()


def test_autogenerate_sees_no_difference(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_schemas": True, "include_name": _only_syncd}
        )
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def _only_syncd(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "schema":
        return name == "syncd"
    return not (type_ == "table" and name == "alembic_version")


def test_concurrent_upgrades_from_two_replicas(database: str) -> None:
    barrier = threading.Barrier(3)

    def start() -> str | None:
        barrier.wait()
        return upgrade(database, "mig_race")

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: start(), range(3)))
    assert results == [head_revision()] * 3
    eng = create_engine(database)
    try:
        with eng.connect() as c:
            n = c.execute(text("SELECT count(*) FROM mig_race.alembic_version")).scalar_one()
        assert n == 1
    finally:
        eng.dispose()


def test_custom_schema_name_through_translate_map(database: str) -> None:
    upgrade(database, "ledger_alt")
    eng = ledger_engine(database, schema="ledger_alt")
    try:
        with eng.begin() as conn:
            i = DocumentIdentity.of("invoice", "t", {"id": 1})
            _row, created = repo.ensure_document(conn, i, serial(), actor="t")
            assert created
            n = conn.execute(text("SELECT count(*) FROM ledger_alt.documents")).scalar_one()
            assert n == 1
    finally:
        eng.dispose()


def test_offline_sql_renders_without_a_database() -> None:
    sql = upgrade_sql("postgresql://nobody@nowhere/erp", "syncd")
    assert "CREATE TABLE syncd.documents" in sql
    assert "uq_documents_identity" in sql


# ---------------------------------------------------------------------------- documents


def test_ensure_document_creates_once_and_audits(engine: Engine, ident: Any) -> None:
    i = ident()
    s = serial()
    pos = RecordPosition("erp.public.sales_order", 2, 41)
    with engine.begin() as conn:
        row, created = repo.ensure_document(
            conn, i, s, actor="r1", position=pos, source_ts_ms=1_700_000_000_000
        )
        again, created2 = repo.ensure_document(conn, i, s, actor="r1")
    assert created and not created2
    assert again.id == row.id and row.state is S.PENDING
    assert (row.source_topic, row.source_partition, row.source_offset) == (pos.topic, 2, 41)
    with engine.connect() as conn:
        trail = repo.audit_trail(conn, row.id)
    assert [(a.from_state, a.to_state, a.actor) for a in trail] == [(None, S.PENDING, "r1")]


def test_ensure_documents_batch_keeps_order_and_dedupes(engine: Engine, ident: Any) -> None:
    a, b = ident(), ident()
    sa, sb = serial(), serial()
    with engine.begin() as conn:
        first, _ = repo.ensure_document(conn, a, sa, actor="r1")
        out = repo.ensure_documents(
            conn,
            [
                repo.NewDocument(b, sb, S.READY, payload=PAYLOAD),
                repo.NewDocument(a, sa),
                repo.NewDocument(b, sb, S.READY, payload=PAYLOAD),
            ],
            actor="r1",
        )
    assert [(r.identity, c) for r, c in out] == [(b, True), (a, False), (b, False)]
    assert out[1][0].id == first.id
    assert out[0][0].payload == PAYLOAD
    assert (out[0][0].payload_hash or "").startswith("sha256:")


def test_serial_clash_is_a_typed_error(engine: Engine, ident: Any) -> None:
    s = serial()
    with engine.begin() as conn:
        repo.ensure_document(conn, ident(), s, actor="r1")
        with pytest.raises(IdentityConflictError):
            repo.ensure_document(conn, ident(), s, actor="r1")
        i = ident()
        repo.ensure_document(conn, i, serial(), actor="r1")
        with pytest.raises(IdentityConflictError):
            repo.ensure_document(conn, i, serial(), actor="r1")


def test_unique_identity_under_concurrent_inserts(engine: Engine, ident: Any) -> None:
    i, s = ident(), serial()
    with engine.connect() as a:
        a.begin()
        row_a, created_a = repo.ensure_document(a, i, s, actor="A")

        def other() -> tuple[Any, bool]:
            with engine.begin() as b:
                b_pid.append(backend_pid(b))
                return repo.ensure_document(b, i, s, actor="B")

        b_pid: list[int] = []
        t, results, errors = in_thread(other)
        while not b_pid:
            t.join(0.01)
        wait_until_blocked(engine, b_pid[0])  # B waits on A's uncommitted insert
        a.commit()
        t.join()
    assert not errors, errors
    row_b, created_b = results[0]
    assert created_a and not created_b and row_b.id == row_a.id
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM syncd.documents WHERE serial = :s"), {"s": s}
        ).scalar_one()
        assert n == 1
        assert len(repo.audit_trail(conn, row_a.id)) == 1


def test_many_threads_one_identity(engine: Engine, ident: Any) -> None:
    i, s = ident(), serial()
    barrier = threading.Barrier(6)

    def go(_: int) -> bool:
        barrier.wait()
        with engine.begin() as conn:
            return repo.ensure_document(conn, i, s, actor="x")[1]

    with ThreadPoolExecutor(6) as pool:
        created = list(pool.map(go, range(6)))
    assert created.count(True) == 1


# ---------------------------------------------------------------------------- transitions


def _ready(engine: Engine, ident: Any) -> int:
    with engine.begin() as conn:
        row, _ = repo.ensure_document(
            conn, ident(), serial(), actor="t", state=S.READY, payload=PAYLOAD
        )
    return row.id


def test_transition_writes_fields_and_audit(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        repo.transition(
            conn,
            doc,
            S.READY,
            S.SUBMITTED,
            reason="accepted",
            actor="r1",
            attempts=0,
            next_attempt_at=when,
        )
        row = repo.transition(
            conn,
            doc,
            S.SUBMITTED,
            S.ISSUED,
            actor="r1",
            invoice_no="INV-1",
            issued_at=when,
            check_code="CC",
            details={"http": 200},
        )
    assert row.state is S.ISSUED and row.invoice_no == "INV-1" and row.issued_at == when
    with engine.connect() as conn:
        trail = repo.audit_trail(conn, doc)
    assert [(a.from_state, a.to_state) for a in trail] == [
        (None, S.READY),
        (S.READY, S.SUBMITTED),
        (S.SUBMITTED, S.ISSUED),
    ]
    assert trail[1].reason == "accepted" and trail[2].details == {"http": 200}


def test_audit_is_append_only(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("UPDATE syncd.audit SET reason = 'x' WHERE document_id = :d"), {"d": doc})
    with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("DELETE FROM syncd.audit WHERE document_id = :d"), {"d": doc})


def test_transition_errors_are_typed(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.begin() as conn:
        with pytest.raises(StaleStateError) as stale:
            repo.transition(conn, doc, S.SUBMITTED, S.ISSUED)
        assert stale.value.actual is S.READY and str(doc) in str(stale.value)
        with pytest.raises(InvalidTransitionError):
            repo.transition(conn, doc, S.READY, S.PENDING)
        # legal for issue rows only: the kind is checked inside the UPDATE
        with pytest.raises(InvalidTransitionError):
            repo.transition(conn, doc, S.READY, S.REVERSAL_SUBMITTED)
        with pytest.raises(DocumentNotFoundError):
            repo.transition(conn, -1, S.READY, S.SUBMITTED)
        with pytest.raises(FrozenPayloadError):
            repo.transition(conn, doc, S.READY, S.SUBMITTED, payload={"x": 1})
        with pytest.raises(TypeError):
            repo.transition(conn, doc, S.READY, S.SUBMITTED, serial="NEW")


def test_payload_may_change_until_frozen(engine: Engine, ident: Any) -> None:
    with engine.begin() as conn:
        row, _ = repo.ensure_document(
            conn, ident(), serial(), actor="t", state=S.INVALID, last_error_code="buyer.tax_id"
        )
        ready = repo.transition(
            conn, row.id, S.INVALID, S.READY, payload=PAYLOAD, last_error_code=None
        )
    assert ready.payload == PAYLOAD and ready.payload_hash and ready.last_error_code is None


def test_conditional_update_race_exactly_one_wins(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.connect() as a:
        a.begin()
        repo.transition(a, doc, S.READY, S.SUBMITTED, actor="A")
        pid: list[int] = []

        def other() -> Any:
            with engine.begin() as b:
                pid.append(backend_pid(b))
                return repo.transition(b, doc, S.READY, S.OUTCOME_UNKNOWN, actor="B")

        t, results, errors = in_thread(other)
        while not pid:
            t.join(0.01)
        wait_until_blocked(engine, pid[0])
        a.commit()
        t.join()
    assert not results and len(errors) == 1 and isinstance(errors[0], StaleStateError)
    assert errors[0].actual is S.SUBMITTED


def test_conditional_update_many_threads(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    barrier = threading.Barrier(5)

    def go(n: int) -> bool:
        barrier.wait()
        try:
            with engine.begin() as conn:
                repo.transition(conn, doc, S.READY, S.SUBMITTED, actor=f"w{n}")
            return True
        except StaleStateError:
            return False

    with ThreadPoolExecutor(5) as pool:
        wins = list(pool.map(go, range(5)))
    assert wins.count(True) == 1
    with engine.connect() as conn:
        assert len(repo.audit_trail(conn, doc)) == 2


def test_transition_many_is_all_or_nothing(engine: Engine, ident: Any) -> None:
    d1, d2 = _ready(engine, ident), _ready(engine, ident)
    with pytest.raises(StaleStateError), engine.begin() as conn:
        repo.transition_many(
            conn,
            [
                repo.Transition(d1, S.READY, S.SUBMITTED),
                repo.Transition(d2, S.SUBMITTED, S.ISSUED),
            ],
        )
    with engine.connect() as conn:
        assert repo.get_document(conn, d1).state is S.READY
    with engine.begin() as conn:
        rows = repo.transition_many(
            conn,
            [
                repo.Transition(d1, S.READY, S.SUBMITTED),
                repo.Transition(d2, S.READY, S.RETRY_WAIT, fields={"attempts": 1}),
            ],
            actor="batch",
        )
    assert [r.state for r in rows] == [S.SUBMITTED, S.RETRY_WAIT] and rows[1].attempts == 1


def test_reversal_only_for_an_issued_document(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.begin() as conn, pytest.raises(NotReversibleError):
        repo.ensure_reversal(conn, doc, serial(), PAYLOAD, actor="t")
    with engine.begin() as conn:
        repo.transition(conn, doc, S.READY, S.ISSUED, invoice_no="INV-9")
        rs = serial()
        rev, created = repo.ensure_reversal(conn, doc, rs, PAYLOAD, actor="t")
        again, created2 = repo.ensure_reversal(conn, doc, rs, PAYLOAD, actor="t")
        assert created and not created2 and again.id == rev.id
        assert rev.state is S.REVERSAL_PENDING and rev.reverses_id == doc
        assert rev.kind is DocumentKind.REVERSAL
        repo.transition(conn, rev.id, S.REVERSAL_PENDING, S.REVERSAL_SUBMITTED)
        r, issue = repo.mark_reversed(conn, rev.id, S.REVERSAL_SUBMITTED, invoice_no="RED-1")
    assert r.state is S.REVERSED and issue.state is S.REVERSED
    with engine.begin() as conn, pytest.raises(NotReversibleError):
        repo.ensure_reversal(conn, rev.id, serial(), PAYLOAD, actor="t")


# ---------------------------------------------------------------------------- queries


def test_resume_count_and_stuck(engine: Engine, ident: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = []
        for p, state in [(0, S.READY), (1, S.READY), (0, S.PENDING)]:
            row, _ = repo.ensure_document(
                conn,
                ident(),
                serial(),
                actor="t",
                state=state,
                payload=PAYLOAD if state is S.READY else None,
                position=RecordPosition(topic, p, 1),
            )
            ids.append(row.id)
        repo.transition(
            conn, ids[1], S.READY, S.RETRY_WAIT, next_attempt_at=now + timedelta(hours=1)
        )
    with engine.connect() as conn:
        mine = repo.documents_to_resume(
            conn, partitions=[TopicPartition(topic, 0), TopicPartition(topic, 1)]
        )
        assert [r.id for r in mine] == ids[:2]
        due = repo.documents_to_resume(conn, partitions=[TopicPartition(topic, 1)], due_before=now)
        assert due == []
        assert repo.documents_to_resume(conn, partitions=[]) == []
        counts = repo.count_by_state(conn)
        assert set(counts) == set(DocumentState) and counts[S.READY] >= 1
        assert all(r.id not in ids for r in repo.stuck_documents(conn, timedelta(hours=1)))
        fresh = repo.count_stuck_documents(conn, timedelta(hours=1))
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE syncd.documents SET updated_at = now() - interval '2 hours'"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    with engine.connect() as conn:
        stuck = {r.id for r in repo.stuck_documents(conn, timedelta(hours=1), limit=1000)}
        # the gauge's count (database clock): the three rows now, not before
        aged = repo.count_stuck_documents(conn, timedelta(hours=1))
    assert set(ids) <= stuck
    assert aged - fresh == 3
    with engine.begin() as conn:
        # a retry coming due is a transition: that document moves, it is not stuck
        repo.transition(conn, ids[1], S.RETRY_WAIT, S.READY)
    with engine.connect() as conn:
        assert repo.count_stuck_documents(conn, timedelta(hours=1)) == aged - 1


def test_resume_lock_skips_rows_another_worker_holds(engine: Engine, ident: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        for _ in range(2):
            repo.ensure_document(
                conn,
                ident(),
                serial(),
                actor="t",
                state=S.READY,
                payload=PAYLOAD,
                position=RecordPosition(topic, 0, 1),
            )
    tp = [TopicPartition(topic, 0)]
    with engine.connect() as a, engine.connect() as b:
        a.begin()
        b.begin()
        got_a = repo.documents_to_resume(a, partitions=tp, limit=1, lock=True)
        got_b = repo.documents_to_resume(b, partitions=tp, limit=5, lock=True)
        assert len(got_a) == 1 and len(got_b) == 1 and got_a[0].id != got_b[0].id


# ---------------------------------------------------------------------------- fencing


def test_claims_bump_epochs_and_stale_writer_is_fenced(engine: Engine) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp0, tp1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
    with engine.begin() as conn:
        e1 = repo.claim_partitions(conn, group, "replica-1", [tp0, tp1])
    assert e1 == {tp0: 1, tp1: 1}
    with engine.begin() as conn:
        repo.store_offset(conn, group, "orders", 0, 10, e1[tp0])
    with engine.begin() as conn:
        e2 = repo.claim_partitions(conn, group, "replica-2", [tp0])
    assert e2 == {tp0: 2}
    with pytest.raises(FencedError) as fenced, engine.begin() as conn:
        repo.store_offset(conn, group, "orders", 0, 99, e1[tp0])
    assert fenced.value.current_epoch == 2 and fenced.value.current_owner == "replica-2"
    assert "orders[0]" in str(fenced.value) or "orders" in str(fenced.value)
    with engine.begin() as conn:
        # replica-1 still owns partition 1 at epoch 1
        repo.store_offsets(conn, group, {tp1: (5, e1[tp1])})
        repo.store_offset(conn, group, "orders", 0, 12, e2[tp0])
    with engine.connect() as conn:
        assert repo.load_offsets(conn, group, [tp0, tp1, TopicPartition("orders", 7)]) == {
            tp0: 12,
            tp1: 5,
        }
        assert repo.lease_epochs(conn, group, [tp0])[tp0] == (2, "replica-2")


def test_unclaimed_partition_is_fenced(engine: Engine) -> None:
    with pytest.raises(FencedError) as err, engine.begin() as conn:
        repo.store_offset(conn, f"g-{uuid.uuid4().hex[:8]}", "orders", 3, 1, 1)
    assert err.value.current_epoch is None


def test_fenced_transaction_rolls_back_the_ledger_change_too(engine: Engine, ident: Any) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition("orders", 0)
    doc = _ready(engine, ident)
    with engine.begin() as conn:
        old = repo.claim_partitions(conn, group, "old", [tp])[tp]
    with engine.begin() as conn:
        repo.claim_partitions(conn, group, "new", [tp])
    with pytest.raises(FencedError), engine.begin() as conn:
        repo.transition(conn, doc, S.READY, S.SUBMITTED, actor="old")
        repo.store_offset(conn, group, tp.topic, tp.partition, 100, old)
    with engine.connect() as conn:
        assert repo.get_document(conn, doc).state is S.READY
        assert repo.load_offsets(conn, group, [tp]) == {}


def test_claim_waits_for_the_old_owners_open_transaction(engine: Engine) -> None:
    """The old owner's in-flight commit either lands before the claim or is fenced."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition("orders", 0)
    with engine.begin() as conn:
        old = repo.claim_partitions(conn, group, "old", [tp])[tp]
    with engine.connect() as a:
        a.begin()
        repo.store_offset(a, group, tp.topic, tp.partition, 50, old)  # holds FOR SHARE
        pid: list[int] = []

        def take_over() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
            with engine.begin() as b:
                pid.append(backend_pid(b))
                epochs = repo.claim_partitions(b, group, "new", [tp])
            with engine.connect() as c:
                return epochs, repo.load_offsets(c, group, [tp])

        t, results, errors = in_thread(take_over)
        while not pid:
            t.join(0.01)
        wait_until_blocked(engine, pid[0])
        a.commit()
        t.join()
    assert not errors, errors
    epochs, loaded = results[0]
    assert epochs == {tp: old + 1}
    assert loaded == {tp: 50}  # the new owner resumes after the old owner's last commit


def test_release_clears_owner_only_at_own_epoch(engine: Engine) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition("orders", 0)
    with engine.begin() as conn:
        e = repo.claim_partitions(conn, group, "r1", [tp])
        repo.claim_partitions(conn, group, "r2", [tp])
        repo.release_partitions(conn, group, e)  # stale: no effect
        assert repo.lease_epochs(conn, group, [tp])[tp] == (2, "r2")
        repo.release_partitions(conn, group, {tp: 2})
        assert repo.lease_epochs(conn, group, [tp])[tp] == (2, None)


# ---------------------------------------------------------------------------- CLI


def test_migrate_command(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.cli import main

    assert main(["migrate", "--dsn", database, "--schema", "cli_mig", "--check"]) == 1
    assert main(["migrate", "--dsn", database, "--schema", "cli_mig"]) == 0
    assert main(["migrate", "--dsn", database, "--schema", "cli_mig"]) == 0
    assert main(["migrate", "--dsn", database, "--schema", "cli_mig", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"is at revision {head_revision()} (head)" in out


def test_migrate_command_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.cli import main

    bad = SERVER.replace("postgres@", "postgres:hunter2@") + "/no_such_db_ledger"
    # 4: the database cannot be reached (docs/operations.md, "Exit codes")
    assert main(["migrate", "--dsn", bad]) == 4
    err = capsys.readouterr().err
    assert "no_such_db_ledger" in err and "hunter2" not in err


def test_claim_lock_timeout_bounds_the_wait_for_a_hung_owner(engine: Engine) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition("orders", 0)
    with engine.begin() as conn:
        old = repo.claim_partitions(conn, group, "old", [tp])[tp]
    with engine.connect() as a:
        a.begin()
        repo.fence(a, group, {tp: old})  # a zombie holding its transaction open
        with pytest.raises(DBAPIError, match="lock timeout"), engine.begin() as b:
            repo.claim_partitions(b, group, "new", [tp], lock_timeout_ms=50)
        a.rollback()
    with engine.begin() as b:
        assert repo.claim_partitions(b, group, "new", [tp]) == {tp: old + 1}


def test_readiness_database_check(engine: Engine) -> None:
    import json
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry

    from syncd.observability.health import HealthServer, database_check

    srv = HealthServer(CollectorRegistry(), host="127.0.0.1", port=0)
    srv.add_readiness_check("database", database_check(engine))
    srv.start()
    try:
        with urllib.request.urlopen(srv.url + "/readyz", timeout=10) as r:
            assert r.status == 200
        dead = create_engine(
            "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x",
            connect_args={"connect_timeout": 2},
        )
        srv.add_readiness_check("database", database_check(dead))
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(srv.url + "/readyz", timeout=10)
        body = json.loads(err.value.read())
        assert err.value.code == 503
        assert body["checks"]["database"]["reason"] == "database unreachable (OperationalError)"
        assert "hunter2" not in json.dumps(body)
        dead.dispose()
    finally:
        srv.stop()


def test_racing_random_transitions_leave_a_legal_audit_chain(engine: Engine, ident: Any) -> None:
    """Several workers push the same documents along random legal edges concurrently.
    Whatever interleaving happens, each document's audit trail is one legal path that
    ends in the row's current state (no lost or doubled update)."""
    import random

    from syncd.lifecycle import TRANSITIONS, is_allowed

    docs = [_ready(engine, ident) for _ in range(3)]
    with engine.begin() as conn:
        rev_issue = repo.transition(conn, _ready(engine, ident), S.READY, S.ISSUED)
        rev, _ = repo.ensure_reversal(conn, rev_issue.id, serial(), PAYLOAD, actor="t")
    docs.append(rev.id)
    barrier = threading.Barrier(4)

    def worker(n: int) -> int:
        rng = random.Random(n)
        wins = 0
        barrier.wait()
        for _ in range(25):
            doc = rng.choice(docs)
            with engine.connect() as conn:
                row = repo.get_document(conn, doc)
            targets = sorted(TRANSITIONS[row.kind].get(row.state, frozenset()))
            if not targets:
                continue
            try:
                with engine.begin() as conn:
                    repo.transition(
                        conn,
                        doc,
                        row.state,
                        rng.choice(targets),
                        actor=f"w{n}",
                        expected_version=row.version,
                        attempts=row.attempts + 1,
                    )
                wins += 1
            except StaleStateError:
                pass
        return wins

    with ThreadPoolExecutor(4) as pool:
        total_wins = sum(pool.map(worker, range(4)))
    audited = 0
    with engine.connect() as conn:
        for doc in docs:
            row = repo.get_document(conn, doc)
            trail = repo.audit_trail(conn, doc)
            assert trail[0].from_state is None
            for prev, nxt in itertools.pairwise(trail):
                assert nxt.from_state is prev.to_state
                assert prev.to_state is not None and nxt.to_state is not None
                assert is_allowed(row.kind, prev.to_state, nxt.to_state)
            assert trail[-1].to_state is row.state
            # with expected_version no increment is lost, even across A-B-A cycles
            assert row.version == row.attempts == len(trail) - 1
            audited += len(trail) - 1
    assert audited == total_wins


def test_expected_version_catches_a_b_a(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.connect() as conn:
        seen = repo.get_document(conn, doc)
    assert seen.version == 0
    with engine.begin() as conn:
        repo.transition(conn, doc, S.READY, S.RETRY_WAIT)
        back = repo.transition(conn, doc, S.RETRY_WAIT, S.READY)
    assert back.version == 2
    with pytest.raises(StaleStateError) as err, engine.begin() as conn:
        repo.transition(conn, doc, S.READY, S.SUBMITTED, expected_version=seen.version)
    assert err.value.actual_version == 2 and "version" in str(err.value)
    with engine.begin() as conn:
        assert repo.transition(conn, doc, S.READY, S.SUBMITTED, expected_version=2).version == 3


def test_transition_many_bulk_path(engine: Engine, ident: Any) -> None:
    docs = [_ready(engine, ident) for _ in range(6)]
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    with engine.connect() as conn:
        versions = {d: repo.get_document(conn, d).version for d in docs}
    with engine.begin() as conn:
        rows = repo.transition_many(
            conn,
            [
                *[
                    repo.Transition(
                        d,
                        S.READY,
                        S.ISSUED,
                        reason="ok",
                        fields={
                            "invoice_no": f"INV-{d}",
                            "issued_at": when,
                            "last_error_code": None,
                        },
                        expected_version=versions[d],
                    )
                    for d in docs[:4]
                ],
                repo.Transition(
                    docs[4], S.READY, S.RETRY_WAIT, fields={"attempts": 1, "next_attempt_at": when}
                ),
                repo.Transition(docs[5], S.READY, S.SUBMITTED),
            ],
            actor="bulk",
        )
    assert [r.id for r in rows] == docs
    assert [r.state for r in rows] == [S.ISSUED] * 4 + [S.RETRY_WAIT, S.SUBMITTED]
    assert all(r.invoice_no == f"INV-{r.id}" and r.issued_at == when for r in rows[:4])
    assert rows[4].attempts == 1 and rows[4].next_attempt_at == when
    assert all(r.version == 1 for r in rows)
    with engine.connect() as conn:
        assert [a.actor for a in repo.audit_trail(conn, docs[0])] == ["t", "bulk"]


def test_transition_many_bulk_path_names_the_stale_document(engine: Engine, ident: Any) -> None:
    docs = [_ready(engine, ident) for _ in range(4)]
    with engine.begin() as conn:
        repo.transition(conn, docs[2], S.READY, S.SUBMITTED)
    with pytest.raises(StaleStateError) as err, engine.begin() as conn:
        repo.transition_many(
            conn, [repo.Transition(d, S.READY, S.ISSUED, fields={"invoice_no": "X"}) for d in docs]
        )
    assert err.value.document_id == docs[2] and err.value.actual is S.SUBMITTED
    with engine.connect() as conn:
        assert repo.get_document(conn, docs[0]).state is S.READY  # rolled back with the rest


def test_transition_many_same_document_twice_is_sequential(engine: Engine, ident: Any) -> None:
    doc = _ready(engine, ident)
    with engine.begin() as conn:
        rows = repo.transition_many(
            conn,
            [
                repo.Transition(doc, S.READY, S.SUBMITTED),
                repo.Transition(doc, S.SUBMITTED, S.ISSUED, fields={"invoice_no": "I"}),
            ],
        )
    assert [r.state for r in rows] == [S.SUBMITTED, S.ISSUED] and rows[1].version == 2


def test_pool_pings_only_idle_connections_and_replaces_a_dropped_one(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection used a moment ago goes out without a ping (no extra round trip per
    transaction under load); one idle for over IDLE_PING_SECONDS is pinged first, and if
    the server dropped it meanwhile the pool opens another instead of failing the caller."""
    monkeypatch.setattr(ledger_engine_module, "IDLE_PING_SECONDS", 0.3)
    e = ledger_engine(URL, pool_size=1, max_overflow=0)
    pings: list[int] = []
    real_ping = e.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(e.dialect, "do_ping", counting_ping)
    admin = create_engine(URL, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(5):
            with e.connect() as c:
                pid = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert len(pings) == 1  # only the brand-new connection's first checkout
        with admin.connect() as a:
            a.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.5)  # idle past the threshold (a time rule: only waiting tests it)
        with e.connect() as c:
            assert c.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
        assert len(pings) >= 2  # the dropped one failed its ping, a new one passed
    finally:
        admin.dispose()
        e.dispose()
