"""Retention of personal data: settled payloads pruned in batches, hash and audit kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from syncd.identity import DocumentIdentity
from syncd.ledger import repository as repo
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.lifecycle import DocumentState
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState
PAYLOAD = {"buyer": {"tax_id": "91110108MA01ABCD2H", "email": "ap@example.com"}, "n": 1}


@pytest.fixture
def ledger(stack: Stack) -> Iterator[tuple[Engine, str]]:
    schema = f"ret_{uuid.uuid4().hex[:8]}"
    upgrade(stack.dsn, schema)
    engine = ledger_engine(stack.dsn, schema, pool_size=2)
    try:
        yield engine, schema
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def doc(engine: Engine, schema: str, n: int, *path: S) -> int:
    """A document created READY and moved along `path`."""
    ident = DocumentIdentity.of("sales_order", "erp.sales_order", [("id", n)])
    with engine.begin() as conn:
        row, _ = repo.ensure_document(
            conn,
            ident,
            f"S{uuid.uuid4().hex[:25].upper()}",
            actor="t",
            state=S.READY,
            payload={**PAYLOAD, "n": n},
        )
        state = S.READY
        for nxt in path:
            if nxt is S.REVERSED:
                # an issue row becomes REVERSED with its reversal; here only the issue row
                conn.execute(
                    text(f"UPDATE \"{schema}\".documents SET state = 'REVERSED' WHERE id = :i"),
                    {"i": row.id},
                )
            else:
                repo.transition(conn, row.id, state, nxt, actor="t", invoice_no="INV")
            state = nxt
    return row.id


def test_settled_payloads_are_pruned_in_batches(ledger: tuple[Engine, str]) -> None:
    engine, schema = ledger
    rejected = doc(engine, schema, 1, S.REJECTED)
    issued = doc(engine, schema, 2, S.ISSUED)
    reversed_ = doc(engine, schema, 3, S.ISSUED, S.REVERSED)
    ready = doc(engine, schema, 4)
    recent = doc(engine, schema, 5, S.REJECTED)
    with engine.begin() as conn:
        conn.execute(
            text(
                f'UPDATE "{schema}".documents '
                "SET updated_at = now() - interval '10 days' WHERE id <> :r"
            ),
            {"r": recent},
        )
        hashes: dict[int, str] = dict(
            conn.execute(text(f'SELECT id, payload_hash FROM "{schema}".documents')).all()
        )
    older = timedelta(days=5)
    with engine.begin() as conn:
        assert repo.prune_payloads(conn, older, actor="r1", limit=1) == 1
    with engine.begin() as conn:
        assert repo.prune_payloads(conn, older, actor="r1", limit=10) == 1
    with engine.begin() as conn:
        assert repo.prune_payloads(conn, older, actor="r1", limit=10) == 0
        rows = {
            r.id: r
            for r in conn.execute(
                text(f'SELECT id, payload, payload_hash FROM "{schema}".documents')
            ).all()
        }
        trail = conn.execute(
            text(
                f'SELECT document_id, from_state, to_state, details FROM "{schema}".audit '
                "WHERE reason LIKE "
                "'stored payload pruned%' ORDER BY document_id"
            )
        ).all()
    assert rows[rejected].payload is None and rows[reversed_].payload is None
    # an ISSUED payload stays (a cancellation builds the red invoice from it), and so do
    # unsettled and recently settled ones
    for kept in (issued, ready, recent):
        assert rows[kept].payload is not None
    assert all(rows[i].payload_hash == hashes[i] and hashes[i] for i in rows)
    assert [(t.document_id, t.from_state, t.to_state) for t in trail] == [
        (rejected, "REJECTED", "REJECTED"),
        (reversed_, "REVERSED", "REVERSED"),
    ]
    assert trail[0].details["payload_hash"] == hashes[rejected]
