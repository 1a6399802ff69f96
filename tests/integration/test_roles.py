"""Least privilege and approval on the real PostgreSQL, with the real daemon.

One ledger schema owned by an owner role (which ran `syncd migrate`), the grants printed by
`syncd grants --people` applied by a DBA, the daemon running as the runtime role, and
people logging in as themselves (members of the approver / operator / read-only roles).
PostgreSQL itself refuses what a role may not do: the runtime role cannot TRUNCATE or
alter the audit trail, rewrite audit rows, change ERP columns it does not write back, or
approve anything; an operator cannot approve either.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.integration.daemon_harness import IT_SCHEMA, Daemon, World
from tests.integration.ops_env import wait_until
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


class Roles:
    """Unique role names for one test (roles are cluster-wide)."""

    def __init__(self) -> None:
        sfx = uuid.uuid4().hex[:6]
        self.owner = f"it_owner_{sfx}"
        self.runtime = f"it_runtime_{sfx}"
        self.readonly = f"it_readonly_{sfx}"
        self.operator = f"it_operator_{sfx}"
        self.approver = f"it_approver_{sfx}"
        self.alice = f"it_alice_{sfx}"  # an approver
        self.bob = f"it_bob_{sfx}"  # an operator
        self.carol = f"it_carol_{sfx}"  # read-only
        self.wide = f"it_wide_{sfx}"  # the runtime role plus too much

    def all(self) -> list[str]:
        return [
            self.wide,
            self.alice,
            self.bob,
            self.carol,
            self.approver,
            self.operator,
            self.readonly,
            self.runtime,
            self.owner,
        ]

    def flags(self) -> list[str]:
        return [
            "--owner",
            self.owner,
            "--runtime",
            self.runtime,
            "--readonly",
            self.readonly,
            "--operator",
            self.operator,
            "--approver",
            self.approver,
        ]


def admin(stack: Stack) -> psycopg.Connection[Any]:
    return psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.pg_port}/erp", autocommit=True)


def dsn_as(stack: Stack, role: str) -> str:
    return f"postgresql+psycopg://{role}@127.0.0.1:{stack.pg_port}/erp"


def syncd(
    *args: str, dsn: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if dsn is not None:
        env["SYNCD_DATABASE__DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


APPROVAL = {
    "any": [
        {"column": "invoice.gross", "above": 100000},
        {"column": "invoice.type", "equals": "SPECIAL"},
    ]
}


@pytest.fixture
def secured(it_erp: Stack, tmp_path: Path) -> Iterator[tuple[World, Roles, Path]]:
    """A world whose ledger belongs to the owner role, with the grants applied."""
    stack = it_erp
    roles = Roles()
    engine = create_engine(stack.dsn, pool_size=3)
    sandbox = SandboxProcess(store=tmp_path / "sandbox.db").start()
    w = World(stack, engine, tmp_path, sandbox)
    try:
        with admin(stack) as db:
            db.execute(f'CREATE ROLE "{roles.owner}" LOGIN')
            db.execute(f'CREATE SCHEMA "{w.schema}" AUTHORIZATION "{roles.owner}"')
        sections = {
            "database": {"dsn": dsn_as(stack, roles.runtime), "schema_name": w.schema},
            "ledger": {"payload_retention_days": 0, "prune_interval_seconds": 1},
        }
        config = w.config_file(sections)
        data = yaml.safe_load(config.read_text())
        data["documents"]["sales_order"]["approval"] = APPROVAL
        config.write_text(yaml.safe_dump(data))
        # the owner migrates; the DBA applies what `syncd grants` prints
        migrated = syncd("migrate", "-c", str(config), dsn=dsn_as(stack, roles.owner))
        assert migrated.returncode == 0, migrated.stderr
        printed = syncd("grants", "-c", str(config), "--people", *roles.flags())
        assert printed.returncode == 0, printed.stderr
        with admin(stack) as db:
            db.execute(printed.stdout.encode())
            for person, group in (
                (roles.alice, roles.approver),
                (roles.bob, roles.operator),
                (roles.carol, roles.readonly),
                (roles.wide, roles.runtime),
            ):
                db.execute(f'CREATE ROLE "{person}" LOGIN IN ROLE "{group}"')
        w.prepare()  # at head already: only seeds the stored offsets (as the superuser)
        yield w, roles, config
    finally:
        for d in w.daemons:
            d.kill()
        sandbox.stop()
        with admin(stack) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{w.schema}" CASCADE')
            for role in roles.all():
                exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if exists:
                    db.execute(f'DROP OWNED BY "{role}"')
                    db.execute(f'DROP ROLE "{role}"')
        engine.dispose()


def refused(stack: Stack, role: str, sql: str) -> str:
    """Run `sql` as `role`; the database's error message (the test fails if it passes)."""
    with psycopg.connect(f"postgresql://{role}@127.0.0.1:{stack.pg_port}/erp") as conn:
        try:
            conn.execute(sql.encode())
        except psycopg.Error as exc:
            return str(exc)
    raise AssertionError(f"{role} was allowed: {sql}")


def documents_by_key(w: World) -> dict[str, dict[str, Any]]:
    return {str(r["source_key"]): r for r in w.ledger_rows() if r["kind"] == "issue"}


def key(order_id: int) -> str:
    return f'sales_order:{{"id":{order_id}}}'


def test_least_privilege_and_approval_end_to_end(secured: tuple[World, Roles, Path]) -> None:
    w, roles, config = secured
    stack = w.stack
    s = w.schema

    # check-config --live as the runtime role: nothing missing, nothing in excess
    live = syncd("check-config", "-c", str(config), "--live", "--quiet")
    assert live.returncode == 0, live.stderr
    assert "excess privilege" not in live.stderr and "lacks" not in live.stderr

    port = yaml.safe_load(config.read_text())["metrics"]["port"]
    daemon = Daemon(config, w.tmp / "syncd-runtime.log", port)  # as the runtime role
    w.daemons.append(daemon)
    daemon.start().wait_ready()

    plain = w.create_order(lines=2)  # ORDINARY, small: no approval needed
    special = w.create_order(lines=1, invoice_type="SPECIAL")
    rejected = w.create_order(lines=1, invoice_type="SPECIAL")
    cancelled = w.create_order(lines=1, invoice_type="SPECIAL")
    w.wait_issued([plain])

    def waiting() -> bool:
        rows = documents_by_key(w)
        keys = [f'{{"id":{special}}}', f'{{"id":{rejected}}}', f'{{"id":{cancelled}}}']
        return all(rows.get(k, {}).get("state") == "AWAITING_APPROVAL" for k in keys)

    wait_until(waiting, 90, "SPECIAL orders awaiting approval")
    assert len(w.sandbox.issued()) == 1, "a document awaiting approval reached the provider"
    # the daemon's role may UPDATE documents, but not past the approval on its own
    waiting_id = documents_by_key(w)[f'{{"id":{special}}}']["id"]
    assert "without an approval" in refused(
        stack,
        roles.runtime,
        f"UPDATE \"{s}\".documents SET state = 'READY' WHERE id = {waiting_id}",
    )
    # cancelled before anyone approved it: never sent, nothing to reverse
    w.set_status(cancelled, "CANCELLED")
    gone = w.wait_for(
        [cancelled], lambda r: r["invoice_status"] == "REJECTED", what="cancel while waiting"
    )
    assert "cancelled while awaiting approval" in gone[cancelled]["invoice_error"]

    # people: read-only sees them; an operator and the daemon's role may not approve
    status = syncd("status", "-c", str(config), dsn=dsn_as(stack, roles.carol))
    assert status.returncode == 0, status.stderr
    assert "Awaiting approval" in status.stdout and "AWAITING_APPROVAL" in status.stdout
    for who in (roles.bob, roles.runtime, roles.carol):
        denied = syncd(
            "approve",
            "-c",
            str(config),
            "--document",
            key(special),
            "--reason",
            "mine",
            dsn=dsn_as(stack, who),
        )
        assert denied.returncode == 7, denied.stderr
        assert "permission denied for table approvals" in denied.stderr
        assert len(denied.stderr.strip().splitlines()) == 1, denied.stderr

    approved = syncd(
        "approve",
        "-c",
        str(config),
        "--document",
        key(special),
        "--reason",
        "credit checked",
        dsn=dsn_as(stack, roles.alice),
    )
    assert approved.returncode == 0, approved.stderr
    assert f"approved by {roles.alice}" in approved.stdout
    again = syncd(
        "approve",
        "-c",
        str(config),
        "--document",
        key(special),
        "--reason",
        "twice",
        dsn=dsn_as(stack, roles.alice),
    )
    # decided once: refused whether the daemon has carried it out yet or not
    assert again.returncode == 1, again.stderr
    assert "already approved" in again.stderr or "nothing awaits approval" in again.stderr
    rejecting = syncd(
        "reject",
        "-c",
        str(config),
        "--document",
        key(rejected),
        "--reason",
        "wrong buyer",
        dsn=dsn_as(stack, roles.alice),
    )
    assert rejecting.returncode == 0, rejecting.stderr

    w.wait_issued([special])
    done = w.wait_for(
        [rejected], lambda r: r["invoice_status"] == "REJECTED", what="rejection written back"
    )
    assert "wrong buyer" in done[rejected]["invoice_error"]
    assert roles.alice in done[rejected]["invoice_error"]
    w.verdict(issued=[plain, special])  # exactly once each; the rejected one never sent
    assert {i["serial"] for i in w.sandbox.issued()} == {
        r["serial"] for r in w.ledger_rows() if r["state"] == "ISSUED"
    }

    # the audit trail names the login, the OS user and the reason
    with w.engine.connect() as conn:
        trail = conn.execute(
            text(
                f'SELECT a.from_state, a.to_state, a.reason, a.details FROM "{s}".audit a '
                f'JOIN "{s}".documents d ON d.id = a.document_id '
                "WHERE d.source_key = :k ORDER BY a.id"
            ),
            {"k": f'{{"id":{special}}}'},
        ).all()
    steps = [(r.from_state, r.to_state) for r in trail]
    assert steps[:2] == [(None, "AWAITING_APPROVAL"), ("AWAITING_APPROVAL", "READY")], steps
    decision = trail[1].details["approval"]
    assert decision["db_session_user"] == roles.alice
    assert decision["os_user"] == getpass.getuser()
    assert decision["reason"] == "credit checked"

    # retention: the rejected document's payload is pruned (retention 0 days), its hash
    # and audit trail stay; the issued one keeps its payload (a reversal needs it)
    def pruned() -> bool:
        return documents_by_key(w)[f'{{"id":{rejected}}}']["payload"] is None

    wait_until(pruned, 60, "the rejected document's payload pruned")
    rows = documents_by_key(w)
    assert rows[f'{{"id":{rejected}}}']["payload_hash"]
    assert rows[f'{{"id":{special}}}']["payload"] is not None

    # what PostgreSQL refuses the daemon's role
    rt = roles.runtime
    assert "permission denied" in refused(stack, rt, f'TRUNCATE "{s}".audit')
    assert "must be owner" in refused(
        stack, rt, f'ALTER TABLE "{s}".audit DISABLE TRIGGER audit_append_only'
    )
    assert "permission denied" in refused(stack, rt, f"UPDATE \"{s}\".audit SET reason = 'x'")
    assert "permission denied" in refused(stack, rt, f'DELETE FROM "{s}".audit')
    assert "permission denied" in refused(stack, rt, f'DELETE FROM "{s}".documents')
    assert "permission denied" in refused(
        stack, rt, f"UPDATE {IT_SCHEMA}.sales_order SET buyer_name = 'forged'"
    )
    assert "permission denied" in refused(
        stack,
        rt,
        f"INSERT INTO \"{s}\".approvals (document_id, decision, reason) VALUES (1, 'approve', 'x')",
    )
    # not even the approver may rewrite a decision
    assert "permission denied" in refused(
        stack, roles.alice, f"UPDATE \"{s}\".approvals SET reason = 'other'"
    )
    assert daemon.alive


def test_check_config_live_reports_excess_privileges(secured: tuple[World, Roles, Path]) -> None:
    w, roles, config = secured
    with admin(w.stack) as db:
        db.execute(f'GRANT UPDATE ON {IT_SCHEMA}.sales_order TO "{roles.wide}"')
        db.execute(f'GRANT TRUNCATE ON "{w.schema}".audit TO "{roles.wide}"')
    result = syncd(
        "check-config", "-c", str(config), "--live", "--quiet", dsn=dsn_as(w.stack, roles.wide)
    )
    assert result.returncode == 0, result.stderr  # excess privileges warn, they do not fail
    lines = result.stderr.splitlines()
    truncate = [line for line in lines if "may TRUNCATE" in line]
    columns = [line for line in lines if "columns that are not written back" in line]
    assert len(truncate) == 1 and "audit" in truncate[0], result.stderr
    assert len(columns) == 1 and "buyer_name" in columns[0], result.stderr
    # located at the config key that is the cause
    keys = yaml.safe_load(config.read_text())
    assert keys["documents"]["sales_order"]["write_back"]["columns"]
    assert columns[0].startswith(f"{config}:"), columns[0]
    assert "documents.sales_order.write_back.columns" in columns[0]

    # the owner role lacks what the daemon needs: one line per missing privilege
    owner = syncd(
        "check-config", "-c", str(config), "--live", "--quiet", dsn=dsn_as(w.stack, roles.owner)
    )
    assert owner.returncode == 2, owner.stderr
    assert "owns the ledger schema" in owner.stderr
    assert f"lacks SELECT on {IT_SCHEMA}.sales_order_line" in owner.stderr
