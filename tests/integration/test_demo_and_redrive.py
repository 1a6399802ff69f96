"""End to end through a real daemon: `syncd demo generate`, and `syncd retry` of a document
that really went DEAD, picked up by the daemon's resume sweep and issued exactly once.

Own database, Debezium connector (own slot and topics), sandbox process and daemon process,
so nothing here touches the `erp` database or another daemon's group.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import (
    Daemon,
    OpsEnv,
    create_env,
    create_topic,
    drop_env,
    wait_until,
    with_connector,
)
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState


@pytest.fixture(scope="module")
def running(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OpsEnv, SandboxProcess]]:
    directory = tmp_path_factory.mktemp("demo")
    env = create_env(stack, directory)
    sandbox = SandboxProcess(store=directory / "sandbox.db", port=env.sandbox_port, issue_delay=0.2)
    daemon = Daemon(env, directory / "syncd.log")
    try:
        with with_connector(env):
            # Deployments create the topics up front; a consumer subscribed to a topic that
            # does not exist yet only notices it at its next metadata refresh (minutes).
            doc = env.config.documents["sales_order"]
            assert doc.topic is not None and doc.returns is not None
            create_topic(stack.bootstrap, doc.topic, 1)
            assert doc.returns.topic is not None
            create_topic(stack.bootstrap, doc.returns.topic, 1)
            sandbox.start()
            daemon.start()
            yield env, sandbox
    finally:
        daemon.stop()
        sandbox.stop()
        drop_env(env)


def test_demo_generate_issues_every_order_exactly_once(
    running: tuple[OpsEnv, SandboxProcess],
) -> None:
    env, sandbox = running
    result = env.syncd(
        "demo",
        "generate",
        "-c",
        str(env.config_path),
        "--orders",
        "20",
        "--seed",
        "4242",
        "--cancel-ratio",
        "0.2",
        "--invalid-ratio",
        "0.1",
        "--timeout",
        "120",
        "--json",
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and not summary["missing"] and not summary["duplicates"]
    assert summary["invalid"] + summary["rejected"] == 2
    assert summary["issued"] == 18
    assert summary["reversed"] == summary["cancelled"] == 4  # 20 % of the 18 valid
    assert summary["documents"] == 2 + 18 + 4
    assert summary["documents_per_second"] > 0
    assert "created 20/20" in result.stderr  # progress goes to stderr with --json
    # The platform holds exactly the invoices the summary counted.
    mine = [i for i in sandbox.issued() if i["kind"] == "BLUE"]
    assert len(mine) == 18 and len({i["serial"] for i in mine}) == 18
    # Same seed again: refused, nothing created twice.
    again = env.syncd(
        "demo",
        "generate",
        "-c",
        str(env.config_path),
        "--orders",
        "20",
        "--seed",
        "4242",
        "--timeout",
        "5",
    )
    assert again.returncode == 2 and "already exist" in again.stderr


def test_demo_generate_counts_reissues_and_partial_reversals_exactly_once(
    running: tuple[OpsEnv, SandboxProcess],
) -> None:
    env, sandbox = running
    result = env.syncd(
        "demo", "generate", "-c", str(env.config_path), "--orders", "20", "--seed", "4343",
        "--cancel-ratio", "0.1", "--invalid-ratio", "0", "--return-ratio", "0.2",
        "--reissue-ratio", "0.1", "--timeout", "180", "--json",
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and not summary["missing"] and not summary["duplicates"], summary
    assert summary["reissued"] == 2  # 10 % of 20
    assert summary["cancelled"] == 2 + 2  # 10 % of the other 18 valid, and the re-issued
    assert summary["reversed"] == 4
    assert summary["returns"] >= 4 and summary["partial_reversals"] == summary["returns"]
    assert summary["issued"] == 20
    assert "to re-issue" in result.stderr and "re-issued 2" in result.stderr
    # the platform: a second blue invoice per re-issue, one red per return row and reversal
    prefix = summary["prefix"]
    assert prefix.startswith("DEMO-4343-")
    reds = [i for i in sandbox.issued() if i["kind"] == "RED"]
    assert len({i["serial"] for i in reds}) == len(reds)


@pytest.mark.parametrize(
    ("faults", "parked"),
    [
        # max_attempts 3 with sub-second backoff in this env's config: DEAD soon
        ({"error_rate": 1.0, "error_mode": "http_500"}, "DEAD"),
        # the provider needs a human: BLOCKED, next look only after 300 s -- retry must not wait
        ({"credit_exhausted": True}, "BLOCKED"),
    ],
)
def test_a_parked_document_is_retried_by_the_daemon_and_issued_once(
    running: tuple[OpsEnv, SandboxProcess],
    faults: dict[str, object],
    parked: str,
) -> None:
    env, sandbox = running
    sandbox.set_faults(**faults)
    erp = env.erp()
    try:
        with erp.begin() as c:
            order_id = int(
                c.execute(
                    text(
                        "INSERT INTO erp.sales_order (order_no, status, buyer_name, buyer_tax_id)"
                        " VALUES (:no, 'DRAFT', 'Shanghai Hongda Electronics Co., Ltd.',"
                        " '91310115MA1K4PLN89') RETURNING id"
                    ),
                    {"no": f"RETRY-{uuid.uuid4().hex[:8]}"},
                ).scalar_one()
            )
            c.execute(
                text(
                    "INSERT INTO erp.sales_order_line (order_id, line_no, item_name, tax_code,"
                    " quantity, unit_price, tax_rate, amount) VALUES (:id, 1, 'A4 copy paper',"
                    " '1060407020000000000', 10, 25, 0.13, 250)"
                ),
                {"id": order_id},
            )
        with erp.begin() as c:
            c.execute(
                text("UPDATE erp.sales_order SET status = 'CONFIRMED' WHERE id = :id"),
                {"id": order_id},
            )

        def erp_status() -> str | None:
            with erp.connect() as c:
                return c.execute(
                    text("SELECT invoice_status FROM erp.sales_order WHERE id = :id"),
                    {"id": order_id},
                ).scalar_one()

        wait_until(lambda: erp_status() == parked, 90, f"the document to go {parked}")
        sandbox.reset_faults()
        serial = serial_for(
            DocumentIdentity.of(
                "sales_order", "erp.sales_order", [("id", order_id)], DocumentKind.ISSUE
            )
        )
        assert serial not in {i["serial"] for i in sandbox.issued()}

        result = env.syncd(
            "retry",
            "-c",
            str(env.config_path),
            "--document",
            f'sales_order:{{"id":{order_id}}}',
            "--reason",
            "provider back",
        )
        assert result.returncode == 0, result.stderr
        assert f"{parked} -> OUTCOME_UNKNOWN" in result.stdout
        # The daemon's sweep (every ~10 s) picks it up; it queries by serial, then issues.
        wait_until(lambda: erp_status() == "ISSUED", 45, "the retried document to be issued")
    finally:
        erp.dispose()
    issued = [i for i in sandbox.issued() if i["serial"] == serial]
    assert len(issued) == 1
    ledger = env.ledger()
    with ledger.connect() as c:
        row = repo.find_document(
            c, DocumentIdentity.of("sales_order", "erp.sales_order", {"id": order_id})
        )
        assert row is not None
        trail = [(a.from_state, a.to_state, a.reason) for a in repo.audit_trail(c, row.id)]
    ledger.dispose()
    assert row.state is S.ISSUED and row.serial == serial
    assert row.invoice_no == issued[0]["invoice_no"]
    assert (S(parked), S.OUTCOME_UNKNOWN, "operator retry") in trail
