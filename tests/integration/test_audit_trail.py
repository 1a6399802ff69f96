"""The audit trail on the real PostgreSQL: chained rows, concurrent writers on separate
chains, `syncd audit show|export|verify|prune`, and tampering by a superuser (the stack's
`postgres` role, triggers switched off) caught by `verify`."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Connection, text

from syncd.identity import DocumentIdentity
from syncd.ledger import audit
from syncd.ledger import repository as repo
from syncd.ledger.models import Operator
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState
PAYLOAD = {"serial": "X", "lines": [{"net_amount": "1.00"}]}
KEY = "k" * 32


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[OpsEnv]:
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY + "\n")
    e = create_env(stack, tmp_path, audit={"checkpoint_key_file": str(key_file)})
    yield e
    drop_env(e)


def _doc(conn: Connection, *, steps: int = 3) -> int:
    identity = DocumentIdentity.of(
        "sales_order", "erp.sales_order", {"id": uuid.uuid4().int % 10**9}
    )
    row, _ = repo.ensure_document(
        conn, identity, "S" + uuid.uuid4().hex[:16], actor="r1", state=S.READY, payload=PAYLOAD
    )
    moves = [(S.READY, S.SUBMITTED), (S.SUBMITTED, S.ISSUED)][: steps - 1]
    for old, new in moves:
        repo.transition(conn, row.id, old, new, actor="r1", details={"http": 200, "n": [1, "a"]})
    return row.id


def _seed(env: OpsEnv, documents: int = 3) -> list[int]:
    eng = env.ledger()
    with eng.begin() as c:
        ids = [_doc(c) for _ in range(documents)]
    eng.dispose()
    return ids


def _verify(env: OpsEnv) -> tuple[int, dict[str, Any]]:
    r = env.syncd("audit", "verify", "-c", str(env.config_path), "--json")
    assert "Traceback" not in r.stderr
    return r.returncode, json.loads(r.stdout)


def _superuser(env: OpsEnv, *statements: str) -> None:
    """Tamper as the superuser, triggers off (what the append-only trigger cannot stop)."""
    eng = env.erp()
    with eng.begin() as c:
        c.execute(text("SET LOCAL session_replication_role = replica"))
        for s in statements:
            c.execute(text(s))
    eng.dispose()


def _chain_of(env: OpsEnv, doc: int) -> tuple[int, list[int]]:
    eng = env.erp()
    with eng.connect() as c:
        chain = c.execute(
            text("SELECT chain FROM syncd_ops.audit WHERE document_id = :d LIMIT 1"), {"d": doc}
        ).scalar_one()
        seqs = list(
            c.execute(
                text("SELECT seq FROM syncd_ops.audit WHERE chain = :c ORDER BY seq"), {"c": chain}
            ).scalars()
        )
    eng.dispose()
    return chain, seqs


def test_rows_are_chained_with_who_and_verify_is_clean(env: OpsEnv) -> None:
    docs = _seed(env)
    eng = env.ledger()
    with eng.begin() as c:
        audit.record_action(
            c,
            "approval granted",
            actor="operator:bob@host",
            operator=Operator("bob", "month end"),
            document_id=docs[0],
        )
        trail = repo.audit_trail(c, docs[0])
    eng.dispose()
    first = trail[0]
    assert [(a.chain, a.seq) for a in trail[:3]] == [(first.chain, first.seq + i) for i in range(3)]
    assert all(a.db_user == "postgres" and a.db_session_user == "postgres" for a in trail)
    assert (trail[3].os_user, trail[3].why, trail[3].to_state) == ("bob", "month end", None)
    assert trail[0].os_user is None and trail[0].why is None
    with pytest.raises(ValueError, match="reason"):
        Operator("bob", "  ")
    code, report = _verify(env)
    assert code == 0 and report["ok"] is True and report["rows"] == 10
    assert report["first_break"] is None and report["checkpoints_signed"] is True


def test_concurrent_writers_take_different_chains_and_never_wait(env: OpsEnv) -> None:
    eng = env.ledger()
    holding = threading.Event()
    release = threading.Event()
    chains: dict[str, set[int]] = {}

    def first() -> None:
        with eng.begin() as c:
            a = _doc(c, steps=1)
            b = _doc(c, steps=2)  # a second append in the same transaction: same chain
            chains["first"] = set(
                c.execute(
                    text("SELECT chain FROM syncd_ops.audit WHERE document_id IN (:a, :b)"),
                    {"a": a, "b": b},
                ).scalars()
            )
            holding.set()
            assert release.wait(60)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert holding.wait(60)
        # The first transaction holds its chain's head; this one must not wait for it.
        with eng.begin() as c:
            c.execute(text("SET LOCAL lock_timeout = '2s'"))
            d = _doc(c)
            chains["second"] = set(
                c.execute(
                    text("SELECT chain FROM syncd_ops.audit WHERE document_id = :d"), {"d": d}
                ).scalars()
            )
    finally:
        release.set()
        t.join(60)
    eng.dispose()
    assert len(chains["first"]) == 1 and len(chains["second"]) == 1
    assert chains["first"] != chains["second"]
    assert _verify(env)[0] == 0


def test_show_and_export(env: OpsEnv) -> None:
    docs = _seed(env, 2)
    shown = env.syncd("audit", "show", "-c", str(env.config_path), "--document", str(docs[1]))
    assert shown.returncode == 0, shown.stderr
    assert "READY -> SUBMITTED" in shown.stdout and "by r1 (db postgres)" in shown.stdout
    js = env.syncd(
        "audit", "show", "-c", str(env.config_path), "--document", str(docs[1]), "--json"
    )
    answer = json.loads(js.stdout)
    assert [e["to_state"] for e in answer["entries"]] == ["READY", "SUBMITTED", "ISSUED"]
    assert answer["entries"][1]["details"] == {"http": 200, "n": [1, "a"]}
    missing = env.syncd("audit", "show", "-c", str(env.config_path), "--document", "99999999")
    assert missing.returncode == 3 and "no ledger document" in missing.stderr

    today = datetime.now(UTC).date()
    period = ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1))]
    lines = env.syncd("audit", "export", "-c", str(env.config_path), *period)
    assert lines.returncode == 0, lines.stderr
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(rows) == 6 and {r["document_id"] for r in rows} == set(docs)
    as_csv = env.syncd("audit", "export", "-c", str(env.config_path), *period, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["hash"] for r in table] == [r["hash"] for r in rows]
    assert json.loads(table[1]["details"]) == {"http": 200, "n": [1, "a"]}
    empty = env.syncd(
        "audit", "export", "-c", str(env.config_path), "--from", "2001-01-01", "--to", "2001-01-31"
    )
    assert empty.returncode == 0 and empty.stdout == ""
    bad = env.syncd(
        "audit", "export", "-c", str(env.config_path), "--from", "2026-13-01", "--to", "x"
    )
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate"])
def test_superuser_tampering_is_detected(env: OpsEnv, tamper: str) -> None:
    docs = _seed(env)
    chain, seqs = _chain_of(env, docs[1])
    assert len(seqs) >= 6
    mid = seqs[3]
    where = f"chain = {chain} AND seq"
    statements = {
        "edit": [f"UPDATE syncd_ops.audit SET reason = 'nothing to see' WHERE {where} = {mid}"],
        "delete": [f"DELETE FROM syncd_ops.audit WHERE {where} = {mid}"],
        "reorder": [
            f"UPDATE syncd_ops.audit SET seq = -1 WHERE {where} = {mid}",
            f"UPDATE syncd_ops.audit SET seq = {mid} WHERE {where} = {mid + 1}",
            f"UPDATE syncd_ops.audit SET seq = {mid + 1} WHERE {where} = -1",
        ],
        "truncate": [f"DELETE FROM syncd_ops.audit WHERE {where} >= {seqs[-2]}"],
    }[tamper]
    assert _verify(env)[0] == 0
    _superuser(env, *statements)
    code, report = _verify(env)
    assert code == 1 and report["ok"] is False
    first = report["first_break"]
    expected = {"edit": "edited", "delete": "missing", "reorder": "relinked", "truncate": "head"}
    assert first["kind"] == expected[tamper], first
    assert f"chain {chain}" in first["message"]
    text_answer = env.syncd("audit", "verify", "-c", str(env.config_path))
    assert text_answer.returncode == 1 and "BROKEN" in text_answer.stdout


def test_prune_leaves_a_signed_checkpoint_and_a_verifiable_trail(env: OpsEnv) -> None:
    _seed(env)
    cfg = str(env.config_path)
    refused = env.syncd("audit", "prune", "-c", cfg)
    assert refused.returncode == 2 and "--reason" in refused.stderr
    no_cutoff = env.syncd("audit", "prune", "-c", cfg, "--reason", "policy")
    assert no_cutoff.returncode == 2 and "retention_days" in no_cutoff.stderr
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    dry = env.syncd("audit", "prune", "-c", cfg, "--before", soon, "--reason", "r", "--dry-run")
    assert dry.returncode == 0 and "would prune 9 audit row(s)" in dry.stdout
    done = env.syncd(
        "audit", "prune", "-c", cfg, "--before", soon, "--reason", "retention", "--json"
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["rows"] == 9 and answer["signed"] is True
    code, report = _verify(env)
    assert code == 0, report
    # left: the audit row of the pruning itself, who and why included
    eng = env.ledger()
    with eng.connect() as c:
        left = list(c.execute(text("SELECT reason, why, os_user FROM syncd_ops.audit")))
    eng.dispose()
    assert [(r.reason, r.why) for r in left] == [("audit pruned", "retention")]
    eng = env.erp()
    with pytest.raises(Exception, match="append-only"), eng.begin() as c:
        c.execute(text("UPDATE syncd_ops.audit_checkpoints SET why = 'x'"))
    eng.dispose()
    _seed(env, 1)
    assert _verify(env)[0] == 0

    # Without the key, nobody can pass a deletion off as pruning.
    chain, seqs = _chain_of(env, _seed(env, 1)[0])
    _superuser(
        env,
        f"INSERT INTO syncd_ops.audit_checkpoints (chain, through_seq, last_hash, pruned_rows,"
        f" pruned_before) SELECT chain, seq, hash, 1, now() FROM syncd_ops.audit"
        f" WHERE chain = {chain} AND seq = {seqs[-3]}",
        f"DELETE FROM syncd_ops.audit WHERE chain = {chain} AND seq <= {seqs[-3]}",
    )
    code, report = _verify(env)
    assert code == 1 and report["first_break"]["kind"] == "checkpoint"


def test_delete_without_checkpoint_is_refused_by_the_database(env: OpsEnv) -> None:
    _seed(env, 1)
    eng = env.erp()
    with pytest.raises(Exception, match="append-only"), eng.begin() as c:
        c.execute(text("DELETE FROM syncd_ops.audit"))
    with pytest.raises(Exception, match="append-only"), eng.begin() as c:
        c.execute(text("UPDATE syncd_ops.audit SET why = 'x'"))
    eng.dispose()


def test_verify_with_the_ledger_unreachable_is_one_line(env: OpsEnv, tmp_path: Path) -> None:
    data = yaml.safe_load(env.config_path.read_text())
    data["database"]["dsn"] = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump(data))
    r = env.syncd("audit", "verify", "-c", str(down))
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1
