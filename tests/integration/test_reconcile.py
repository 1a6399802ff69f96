"""`syncd reconcile` on the real PostgreSQL: every exception class seeded into an ERP
database, its ledger and the sandbox platform, then found by the command, with its exit
code, JSON/CSV/table report and the run recorded for the daemon's metrics."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.ledger import reconcile as ledger_reconcile
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState
TABLE = "erp.sales_order"
TOTALS = {"net_amount": "100.00", "tax_amount": "13.00", "gross_amount": "113.00"}


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[OpsEnv]:
    e = create_env(stack, tmp_path)
    yield e
    drop_env(e)


def _order(c: Connection, status: str, invoice_no: str | None = None) -> int:
    return int(
        c.execute(
            text(
                "INSERT INTO erp.sales_order (order_no, status, buyer_name, invoice_no) "
                "VALUES (:no, CAST(:status AS erp.order_status), 'Buyer', :inv) RETURNING id"
            ),
            {"no": "SO-" + uuid.uuid4().hex[:10], "status": status, "inv": invoice_no},
        ).scalar_one()
    )


def _issued(c: Connection, order_id: int, number: str, *, revision: int = 0) -> int:
    identity = DocumentIdentity.of("sales_order", TABLE, {"id": order_id}, revision=revision)
    serial = serial_for(identity)
    row, _ = repo.ensure_document(
        c, identity, serial, actor="t", state=S.READY, payload={"serial": serial, "totals": TOTALS}
    )
    repo.transition(c, row.id, S.READY, S.SUBMITTED, actor="t")
    now = datetime.now(UTC)
    repo.transition(c, row.id, S.SUBMITTED, S.ISSUED, actor="t", invoice_no=number, issued_at=now)
    return row.id


def _reversed(c: Connection, order_id: int, blue_id: int, red_number: str) -> None:
    identity = DocumentIdentity.of("sales_order", TABLE, {"id": order_id}, DocumentKind.REVERSAL)
    serial = serial_for(identity)
    red_totals = {k: "-" + v for k, v in TOTALS.items()}
    row, _ = repo.ensure_document(
        c,
        identity,
        serial,
        actor="t",
        state=S.REVERSAL_PENDING,
        payload={"serial": serial, "totals": red_totals},
        reverses_id=blue_id,
    )
    now = datetime.now(UTC)
    repo.transition(c, row.id, S.REVERSAL_PENDING, S.REVERSAL_SUBMITTED, actor="t")
    repo.transition(
        c,
        row.id,
        S.REVERSAL_SUBMITTED,
        S.REVERSED,
        actor="t",
        invoice_no=red_number,
        issued_at=now,
    )
    repo.transition(c, blue_id, S.ISSUED, S.REVERSED, actor="t")


def _seed_erp_and_ledger(env: OpsEnv) -> dict[str, int]:
    """One document per ERP/ledger class, plus clean ones; returns order ids by name."""
    erp, ledger = env.erp(), env.ledger()
    ids: dict[str, int] = {}
    with erp.begin() as e:
        ids["clean"] = _order(e, "CONFIRMED", "C0000001")
        ids["clean_cancelled"] = _order(e, "CANCELLED", "C0000002")
        ids["draft"] = _order(e, "DRAFT")
        ids["missing_in_ledger"] = _order(e, "CONFIRMED")
        ids["invoice_no_mismatch"] = _order(e, "CONFIRMED")
        ids["cancelled_not_reversed"] = _order(e, "CANCELLED", "C0000005")
        ids["reversed_not_cancelled"] = _order(e, "CONFIRMED", "C0000006")
        ids["duplicate_blue"] = _order(e, "CONFIRMED", "C0000008")
        ids["missing_in_erp"] = 10**9 + 7
    with ledger.begin() as c:
        _issued(c, ids["clean"], "C0000001")
        blue = _issued(c, ids["clean_cancelled"], "C0000002")
        _reversed(c, ids["clean_cancelled"], blue, "R0000002")
        _issued(c, ids["missing_in_erp"], "C0000003")
        _issued(c, ids["invoice_no_mismatch"], "C0000004")
        _issued(c, ids["cancelled_not_reversed"], "C0000005")
        blue = _issued(c, ids["reversed_not_cancelled"], "C0000006")
        _reversed(c, ids["reversed_not_cancelled"], blue, "R0000006")
        _issued(c, ids["duplicate_blue"], "C0000007")
        _issued(c, ids["duplicate_blue"], "C0000008", revision=1)
    erp.dispose()
    ledger.dispose()
    return ids


def _period() -> list[str]:
    today = date.today()
    return ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1))]


def _reconcile(env: OpsEnv, *args: str) -> tuple[int, str, str]:
    r = env.syncd("reconcile", "-c", str(env.config_path), *_period(), *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


def _erp_snapshot(env: OpsEnv) -> list[Any]:
    eng = env.erp()
    with eng.connect() as c:
        rows = list(c.execute(text("SELECT * FROM erp.sales_order ORDER BY id")))
    eng.dispose()
    return rows


def test_every_erp_and_ledger_class_is_found_and_the_erp_is_untouched(env: OpsEnv) -> None:
    ids = _seed_erp_and_ledger(env)
    before = _erp_snapshot(env)
    code, out, _err = _reconcile(env, "--format", "json")
    assert code == 1
    report = json.loads(out)
    found = {(e["class"], json.loads(e["key"])["id"]) for e in report["exceptions"]}
    expected = {
        (name, ids[name])
        for name in (
            "missing_in_ledger",
            "missing_in_erp",
            "invoice_no_mismatch",
            "cancelled_not_reversed",
            "reversed_not_cancelled",
            "duplicate_blue",
        )
    }
    assert found == expected
    by_class = {e["class"]: e for e in report["exceptions"]}
    assert by_class["duplicate_blue"]["invoice_nos"] == ["C0000007", "C0000008"]
    assert by_class["missing_in_erp"]["ledger"] == {
        "net": "100.00",
        "tax": "13.00",
        "gross": "113.00",
    }
    assert by_class["invoice_no_mismatch"]["serial"]
    assert report["classes"]["duplicate_blue"]["count"] == 1
    # 6 blue rows ISSUED (two of one document); two reversed, each with a red row
    assert report["states"]["issue/ISSUED"] == {
        "count": 6,
        "net": "600.00",
        "tax": "78.00",
        "gross": "678.00",
    }
    assert report["states"]["reversal/REVERSED"]["gross"] == "-226.00"
    assert _erp_snapshot(env) == before  # never writes to the ERP

    # the run was recorded for the daemon's metrics
    eng = env.ledger()
    with eng.connect() as c:
        run = ledger_reconcile.latest_run(c)
    eng.dispose()
    assert run is not None and run.exceptions == 6 and not run.clean
    assert run.by_class["duplicate_blue"] == 1 and run.by_class["amount_mismatch"] == 0

    # CSV and table carry the same exceptions; --output writes the file
    code, out, _ = _reconcile(env, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and sorted(r["class"] for r in rows) == sorted(c for c, _ in expected)
    code, out, _ = _reconcile(env, "--document", "sales_order", "--no-record")
    assert code == 1 and "6 exception(s)" in out and "reversed_not_cancelled" in out


def test_clean_period_exits_0_and_errors_exit_2_with_one_line(env: OpsEnv, tmp_path: Path) -> None:
    erp, ledger = env.erp(), env.ledger()
    with erp.begin() as e:
        order = _order(e, "CONFIRMED", "C0000001")
    with ledger.begin() as c:
        _issued(c, order, "C0000001")
    erp.dispose()
    ledger.dispose()
    out_file = tmp_path / "report.txt"
    code, out, err = _reconcile(env, "--output", str(out_file))
    assert code == 0 and out == "" and "clean" in err
    assert "clean: no exceptions" in out_file.read_text()

    code, _out, err = _reconcile(env, "--document", "nope")
    assert code == 2 and err.count("\n") == 1 and "no such document type" in err
    # the database down: one line naming it
    broken = env.config_path.read_text().replace(env.dsn, env.dsn.rsplit(":", 1)[0] + ":1/x")
    bad = tmp_path / "down.yaml"
    bad.write_text(broken)
    r = env.syncd("reconcile", "-c", str(bad), *_period())
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unreachable" in r.stderr
    assert "Traceback" not in r.stderr
