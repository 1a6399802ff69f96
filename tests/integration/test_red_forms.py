"""Red-letter forms raised by buyers, end to end on the real stack: the sandbox simulates
the buyer, the ledger and the ERP are the local PostgreSQL, `syncd red-forms` runs as an
operator would run it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.issuers.base import Issued
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from syncd.observability.metrics import Metrics
from syncd.pipeline.redforms import RedFormDesk
from tests import sandbox_samples as samples
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState
OUTCOME_TABLE = """
CREATE TABLE erp.red_form_outcome (
    form_id text PRIMARY KEY,
    form_status text NOT NULL,
    blue_invoice_no text,
    order_ref text,
    decided_by text,
    decided_because text,
    red_invoice_no text,
    deadline timestamptz
)
"""


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsEnv]:
    e = create_env(
        stack,
        tmp_path_factory.mktemp("redforms"),
        red_forms={
            "poll_interval_seconds": 1,
            "write_back": {
                "table": "erp.red_form_outcome",
                "columns": {
                    "status": "form_status",
                    "original_invoice_no": "blue_invoice_no",
                    "document_key": "order_ref",
                    "decided_by": "decided_by",
                    "decision_reason": "decided_because",
                    "red_invoice_no": "red_invoice_no",
                    "deadline": "deadline",
                },
            },
        },
    )
    engine = e.erp()
    with engine.begin() as c:
        c.exec_driver_sql(OUTCOME_TABLE)
    engine.dispose()
    yield e
    drop_env(e)


@pytest.fixture(scope="module")
def sandbox(env: OpsEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = SandboxProcess(
        store=tmp_path_factory.mktemp("redforms-sandbox") / "store.db",
        port=env.sandbox_port,
        issue_delay=0.2,
    ).start()
    yield process
    process.stop()


def _issued_order(env: OpsEnv, sandbox: SandboxProcess, order_id: int) -> tuple[int, Issued]:
    """A blue invoice on the platform and its ISSUED row in the ledger."""
    identity = DocumentIdentity.of("sales_order", "erp.sales_order", {"id": order_id})
    serial = serial_for(
        DocumentIdentity.of(
            "sales_order", "erp.sales_order", [("id", order_id)], DocumentKind.ISSUE
        )
    )
    doc = samples.invoice(serial)
    with sandbox.client() as client:
        client.issue(doc)
        blue = client.wait_issued(serial)
    assert isinstance(blue, Issued)
    engine = env.ledger()
    with engine.begin() as c:
        row, _ = repo.ensure_document(
            c, identity, serial, actor="test", state=S.READY, payload={"serial": serial}
        )
        repo.transition(c, row.id, S.READY, S.SUBMITTED, reason="test setup")
        repo.transition(
            c, row.id, S.SUBMITTED, S.ISSUED, reason="test setup", invoice_no=blue.invoice_no
        )
    engine.dispose()
    return row.id, blue


def _raise(sandbox: SandboxProcess, invoice_no: str, **extra: Any) -> dict[str, Any]:
    reply = sandbox.control(
        "POST",
        "/_sandbox/buyer-red-forms",
        json={"original_invoice_no": invoice_no, "reason": "SALES_RETURN", **extra},
    )
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _outcome(env: OpsEnv, form_id: str) -> dict[str, Any] | None:
    engine = env.erp()
    with engine.begin() as c:
        row = c.execute(
            text("SELECT * FROM erp.red_form_outcome WHERE form_id = :f"), {"f": form_id}
        ).first()
    engine.dispose()
    return None if row is None else dict(row._mapping)


def _desk(env: OpsEnv, sandbox: SandboxProcess, metrics: Metrics | None = None) -> RedFormDesk:
    return RedFormDesk(env.ledger(), sandbox.client(), env.config, metrics=metrics)


def _cli(env: OpsEnv, *args: str) -> tuple[int, dict[str, Any]]:
    done = env.syncd("red-forms", *args, "-c", str(env.config_path), "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _poll_until(desk: RedFormDesk, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        desk.poll_once()
        if check():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_buyer_form_is_discovered_confirmed_once_and_its_red_invoice_written_back(
    env: OpsEnv, sandbox: SandboxProcess
) -> None:
    doc_id, blue = _issued_order(env, sandbox, 101)
    form = _raise(sandbox, blue.invoice_no)
    form_id = form["serial"]
    metrics = Metrics(CollectorRegistry())
    desk = _desk(env, sandbox, metrics)

    report = desk.poll_once()
    assert [r.form_id for r in report.discovered] == [form_id]
    assert report.discovered[0].document_id == doc_id
    assert desk.poll_once().discovered == []  # idempotent by form id
    assert metrics.red_forms_pending._value.get() == 1
    assert metrics.red_forms_next_deadline._value.get() > time.time()
    outcome = _outcome(env, form_id)
    assert outcome is not None and outcome["form_status"] == "PENDING"
    assert outcome["blue_invoice_no"] == blue.invoice_no and outcome["order_ref"] == '{"id":101}'

    code, listed = _cli(env, "list")
    assert code == 0
    assert [f["form_id"] for f in listed["forms"]] == [form_id]
    assert listed["forms"][0]["status"] == "PENDING" and listed["forms"][0]["seconds_left"] > 0

    code, first = _cli(env, "confirm", form_id, "--reason", "goods came back damaged")
    assert code == 0, first
    assert first["form"]["status"] in ("CONFIRMED", "ISSUED")
    assert first["form"]["decided_by"].startswith(first["actor"].split(":")[1].split("@")[0])
    code, second = _cli(env, "confirm", form_id, "--reason", "again")
    assert code == 1 and second["reason"] == "already", second
    assert "already confirmed" in second["error"] and "nothing changed" in second["error"]
    code, wrong = _cli(env, "reject", form_id, "--reason", "changed my mind")
    assert code == 1 and wrong["reason"] == "form_decided", wrong

    _poll_until(desk, lambda: (_outcome(env, form_id) or {}).get("form_status") == "ISSUED")
    for _ in range(3):
        desk.poll_once()
    outcome = _outcome(env, form_id)
    assert outcome is not None
    assert outcome["decided_because"] == "goods came back damaged"
    red_no = outcome["red_invoice_no"]
    reds = [i for i in sandbox.issued() if i["original_invoice_no"] == blue.invoice_no]
    assert [r["invoice_no"] for r in reds] == [red_no]  # one red invoice on the platform
    engine = env.ledger()
    with engine.begin() as c:
        rows = c.execute(
            text("SELECT status, red_invoice_no, document_id FROM syncd_ops.buyer_red_forms")
        ).all()
        trail = c.execute(
            text(
                "SELECT reason, os_user, why, db_user FROM syncd_ops.audit"
                " WHERE details->>'form_id' = :f ORDER BY id"
            ),
            {"f": form_id},
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("ISSUED", red_no, doc_id)]
    reasons = [t.reason for t in trail]
    assert reasons == [
        "buyer raised a red-letter form",
        "buyer red-letter form confirmed",
        "red invoice issued for a buyer's red-letter form",
    ]
    confirmed = trail[1]
    assert confirmed.why == "goods came back damaged" and confirmed.os_user and confirmed.db_user
    assert metrics.red_forms_pending._value.get() == 0


def test_buyer_form_rejected_keeps_the_invoice_and_writes_the_rejection_back(
    env: OpsEnv, sandbox: SandboxProcess
) -> None:
    _, blue = _issued_order(env, sandbox, 102)
    form_id = _raise(sandbox, blue.invoice_no)["serial"]
    code, listed = _cli(env, "list", "--refresh")
    assert code == 0 and listed["refreshed"]["discovered"] == 1
    code, done = _cli(env, "reject", form_id, "--reason", "the goods were never returned")
    assert code == 0 and done["form"]["status"] == "REJECTED", done
    code, again = _cli(env, "reject", form_id, "--reason", "still no")
    assert code == 1 and again["reason"] == "already"
    outcome = _outcome(env, form_id)
    assert outcome is not None and outcome["form_status"] == "REJECTED"
    assert outcome["red_invoice_no"] is None
    assert outcome["decided_because"] == "the goods were never returned"
    assert not [i for i in sandbox.issued() if i["original_invoice_no"] == blue.invoice_no]


def test_expired_form_unknown_form_and_platform_down_answer_in_one_line(
    env: OpsEnv, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    _, blue = _issued_order(env, sandbox, 103)
    form_id = _raise(sandbox, blue.invoice_no, ttl_seconds=1.5)["serial"]
    desk = _desk(env, sandbox)
    assert [r.form_id for r in desk.poll_once().discovered] == [form_id]
    _poll_until(desk, lambda: (_outcome(env, form_id) or {}).get("form_status") == "EXPIRED")
    code, late = _cli(env, "confirm", form_id, "--reason", "too late")
    assert code == 1 and late["reason"] == "form_expired"

    code, missing = _cli(env, "confirm", "BF99999999999999", "--reason", "no such form")
    assert code == 3 and missing["reason"] == "not_found"

    _, other = _issued_order(env, sandbox, 104)
    pending = _raise(sandbox, other.invoice_no)["serial"]
    desk.poll_once()
    sandbox.stop()
    try:
        done = env.syncd(
            "red-forms", "confirm", pending, "-c", str(env.config_path), "--reason", "x"
        )
        assert done.returncode == 8, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "nothing changed" in done.stderr
    finally:
        sandbox.start()
    code, ok = _cli(env, "confirm", pending, "--reason", "platform back")
    assert code == 0, ok


def test_live_schema_check_covers_the_outcome_table(env: OpsEnv) -> None:
    from syncd.erp.lines import check_schema

    config = env.config
    engine = env.erp()
    try:
        with engine.connect() as c:
            assert not [e for e in check_schema(c, config).errors if "red_forms" in e]
            wb = config.red_forms.write_back
            assert wb is not None
            bad = config.model_copy(
                update={
                    "red_forms": config.red_forms.model_copy(
                        update={
                            "write_back": wb.model_copy(
                                update={
                                    "key_column": "blue_invoice_no",
                                    "columns": wb.columns.model_copy(
                                        update={"reason": "no_such_column"}
                                    ),
                                }
                            )
                        }
                    )
                }
            )
            errors = [e for e in check_schema(c, bad).errors if "red_forms" in e]
    finally:
        engine.dispose()
    assert any("columns.reason: column no_such_column does not exist" in e for e in errors)
    assert any("needs a primary key or unique constraint" in e for e in errors)


def test_a_lost_confirm_answer_is_finished_by_confirming_again_once(
    env: OpsEnv, sandbox: SandboxProcess
) -> None:
    """The platform takes the decision but the answer is lost: nothing is recorded, the
    operator confirms again, the platform answers "unchanged", the ledger records one
    decision and one red invoice."""
    from syncd.ledger.models import Operator

    _, blue = _issued_order(env, sandbox, 105)
    form_id = _raise(sandbox, blue.invoice_no)["serial"]
    desk = _desk(env, sandbox)
    desk.poll_once()
    who = Operator(os_user="tester", why="returned")
    sandbox.set_faults(drop_response_after_commit_rate=1.0)
    try:
        lost = desk.decide(form_id, confirm=True, operator=who, actor="operator:tester@test")
    finally:
        sandbox.reset_faults()
    assert lost.kind == "unavailable" and lost.row is not None and lost.row.status == "PENDING"
    again = desk.decide(form_id, confirm=True, operator=who, actor="operator:tester@test")
    assert again.kind == "decided", again
    _poll_until(desk, lambda: (_outcome(env, form_id) or {}).get("form_status") == "ISSUED")
    reds = [i for i in sandbox.issued() if i["original_invoice_no"] == blue.invoice_no]
    assert len(reds) == 1
    confirms = [
        r
        for r in sandbox.requests()
        if r["path"] == f"/v1/buyer-red-forms/{form_id}/confirm" and r["status"] == 200
    ]
    assert [r["fault"] for r in confirms] == ["drop:reset", None]
    engine = env.ledger()
    with engine.begin() as c:
        decided = c.execute(
            text(
                "SELECT details->>'platform_already' FROM syncd_ops.audit"
                " WHERE details->>'form_id' = :f AND reason = 'buyer red-letter form confirmed'"
            ),
            {"f": form_id},
        ).all()
    engine.dispose()
    assert [tuple(r) for r in decided] == [("true",)]


def test_the_daemon_discovers_forms_and_records_the_red_invoice(
    env: OpsEnv, sandbox: SandboxProcess, stack: Stack, tmp_path: Path
) -> None:
    """`syncd run` polls on its own thread (red_forms.poll_interval_seconds: 1): a new form
    appears in the ledger, the ERP and /metrics without anyone running a command; after the
    operator's confirm the daemon records the red invoice and writes it back."""
    import httpx

    from tests.integration.ops_env import Daemon, create_topic, wait_until

    topic = env.config.documents["sales_order"].topic
    assert topic is not None
    create_topic(stack.bootstrap, topic, 1)
    _, blue = _issued_order(env, sandbox, 106)
    daemon = Daemon(env, tmp_path / "syncd.log").start()
    try:
        form_id = _raise(sandbox, blue.invoice_no)["serial"]
        wait_until(lambda: _outcome(env, form_id), 60, "the daemon to discover the form")
        metrics_url = f"http://127.0.0.1:{env.metrics_port}/metrics"
        wait_until(
            lambda: "syncd_red_forms_pending 1.0" in httpx.get(metrics_url, timeout=5).text,
            30,
            "the pending gauge",
        )
        code, done = _cli(env, "confirm", form_id, "--reason", "daemon test")
        assert code == 0, done
        wait_until(
            lambda: (_outcome(env, form_id) or {}).get("form_status") == "ISSUED",
            60,
            "the daemon to record the red invoice",
        )
        wait_until(
            lambda: "syncd_red_forms_pending 0.0" in httpx.get(metrics_url, timeout=5).text,
            30,
            "the pending gauge back to 0",
        )
    finally:
        daemon.stop()
    log = (tmp_path / "syncd.log").read_text()
    assert "buyer raised red-letter form" in log and "Traceback" not in log
