"""`syncd reconcile` on the real PostgreSQL: every exception class seeded into an ERP
database, its ledger and the sandbox platform, then found by the command, with its exit
code, JSON/CSV/table report and the run recorded for the daemon's metrics."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.issuers.base import Issued, IssueResult, Processing, ReversalRequest
from syncd.issuers.sandbox import SandboxIssuer
from syncd.ledger import reconcile as ledger_reconcile
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.stack import Stack
from tests.sandbox_samples import invoice as sample_invoice

pytestmark = pytest.mark.integration

S = DocumentState
TABLE = "erp.sales_order"
TOTALS = {"net_amount": "100.00", "tax_amount": "13.00", "gross_amount": "113.00"}


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[OpsEnv]:
    e = create_env(stack, tmp_path)
    yield e
    drop_env(e)


class Platform:
    """The env's sandbox platform and syncd's client for it: invoices really issued,
    reversed, and typed in by hand in its portal."""

    def __init__(self, process: SandboxProcess) -> None:
        self.process = process
        self.client: SandboxIssuer = process.client()

    def _settle(self, serial: str, *, reversal: bool = False) -> IssueResult:
        query = self.client.query_reversal if reversal else self.client.query
        deadline = time.monotonic() + 30
        while True:
            result = query(serial)
            if not isinstance(result, Processing) or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def issue(self, serial: str) -> Issued:
        self.client.issue(sample_invoice(serial))
        result = self._settle(serial)
        assert isinstance(result, Issued), result
        return result

    def reverse(self, serial: str, blue_no: str) -> Issued:
        self.client.reverse(ReversalRequest(serial, blue_no, "INVOICING_ERROR"))
        result = self._settle(serial, reversal=True)
        assert isinstance(result, Issued), result
        return result

    def by_hand(self) -> str:
        body = {k: v for k, v in sample_invoice().items() if k != "serial"}
        response = self.process.control(
            "POST", "/_sandbox/portal-invoices", json=[{"invoice": body}]
        )
        assert response.status_code == 201, response.text
        return str(response.json()["invoices"][0]["invoice_no"])


@pytest.fixture
def platform(env: OpsEnv, tmp_path: Path) -> Iterator[Platform]:
    process = SandboxProcess(store=tmp_path / "platform.db", port=env.sandbox_port).start()
    p = Platform(process)
    try:
        yield p
    finally:
        p.client.close()
        process.stop()


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


def _set_number(c: Connection, order_id: int, number: str | None) -> None:
    c.execute(
        text("UPDATE erp.sales_order SET invoice_no = :n WHERE id = :id"),
        {"n": number, "id": order_id},
    )


def _totals(result: Issued, *, off_by_a_cent: bool = False) -> dict[str, str]:
    assert result.totals is not None
    t = result.totals
    gross = t.gross_amount + (Decimal("0.01") if off_by_a_cent else 0)
    return {
        "net_amount": str(t.net_amount),
        "tax_amount": str(t.tax_amount),
        "gross_amount": str(gross),
    }


def _ledger_row(
    c: Connection,
    identity: DocumentIdentity,
    totals: dict[str, str],
    *,
    reverses_id: int | None = None,
) -> int:
    serial = serial_for(identity)
    state = S.READY if identity.kind is DocumentKind.ISSUE else S.REVERSAL_PENDING
    row, _ = repo.ensure_document(
        c,
        identity,
        serial,
        actor="t",
        state=state,
        payload={"serial": serial, "totals": totals},
        reverses_id=reverses_id,
    )
    return row.id


def _issued(
    c: Connection,
    platform: Platform | None,
    order_id: int,
    *,
    revision: int = 0,
    number: str | None = None,
    off_by_a_cent: bool = False,
) -> tuple[int, str]:
    """An ISSUED blue ledger row of the order, issued at the platform (unless `number`
    is given: an invoice the platform never issued)."""
    identity = DocumentIdentity.of("sales_order", TABLE, {"id": order_id}, revision=revision)
    if number is None:
        assert platform is not None
        result = platform.issue(serial_for(identity))
        number, totals = result.invoice_no, _totals(result, off_by_a_cent=off_by_a_cent)
    else:
        totals = dict(TOTALS)
    doc = _ledger_row(c, identity, totals)
    repo.transition(c, doc, S.READY, S.SUBMITTED, actor="t")
    now = datetime.now(UTC)
    repo.transition(c, doc, S.SUBMITTED, S.ISSUED, actor="t", invoice_no=number, issued_at=now)
    return doc, number


def _reversed(c: Connection, platform: Platform, order_id: int, blue_id: int, blue_no: str) -> str:
    identity = DocumentIdentity.of("sales_order", TABLE, {"id": order_id}, DocumentKind.REVERSAL)
    red = platform.reverse(serial_for(identity), blue_no)
    doc = _ledger_row(c, identity, _totals(red), reverses_id=blue_id)
    now = datetime.now(UTC)
    repo.transition(c, doc, S.REVERSAL_PENDING, S.REVERSAL_SUBMITTED, actor="t")
    repo.transition(
        c,
        doc,
        S.REVERSAL_SUBMITTED,
        S.REVERSED,
        actor="t",
        invoice_no=red.invoice_no,
        issued_at=now,
    )
    repo.transition(c, blue_id, S.ISSUED, S.REVERSED, actor="t")
    return red.invoice_no


def _seed(env: OpsEnv, platform: Platform) -> dict[str, Any]:
    """One document per exception class, plus clean ones; returns order ids (and the
    invoice numbers of the platform-only classes) by class."""
    erp, ledger = env.erp(), env.ledger()
    ids: dict[str, Any] = {}
    with erp.begin() as e:
        for name, status in [
            ("clean", "CONFIRMED"),
            ("clean_cancelled", "CANCELLED"),
            ("draft", "DRAFT"),
            ("missing_in_ledger", "CONFIRMED"),
            ("invoice_no_mismatch", "CONFIRMED"),
            ("cancelled_not_reversed", "CANCELLED"),
            ("reversed_not_cancelled", "CONFIRMED"),
            ("duplicate_blue", "CONFIRMED"),
            ("amount_mismatch", "CONFIRMED"),
            ("unknown_to_platform", "CONFIRMED"),
            ("duplicate_at_platform", "CONFIRMED"),
        ]:
            ids[name] = _order(e, status)
    ids["missing_in_erp"] = 10**9 + 7
    numbers: dict[str, str | None] = {}
    with ledger.begin() as c:
        _, numbers["clean"] = _issued(c, platform, ids["clean"])
        blue, no = _issued(c, platform, ids["clean_cancelled"])
        numbers["clean_cancelled"] = no
        _reversed(c, platform, ids["clean_cancelled"], blue, no)
        _issued(c, platform, ids["missing_in_erp"])
        _issued(c, platform, ids["invoice_no_mismatch"])
        numbers["invoice_no_mismatch"] = None
        _, numbers["cancelled_not_reversed"] = _issued(c, platform, ids["cancelled_not_reversed"])
        blue, no = _issued(c, platform, ids["reversed_not_cancelled"])
        numbers["reversed_not_cancelled"] = no
        _reversed(c, platform, ids["reversed_not_cancelled"], blue, no)
        _issued(c, platform, ids["duplicate_blue"])
        _, numbers["duplicate_blue"] = _issued(c, platform, ids["duplicate_blue"], revision=1)
        _, numbers["amount_mismatch"] = _issued(
            c, platform, ids["amount_mismatch"], off_by_a_cent=True
        )
        _, numbers["unknown_to_platform"] = _issued(
            c, None, ids["unknown_to_platform"], number="NEVERISSUED01"
        )
        # the platform issued a second blue invoice under the next revision's serial; the
        # ledger still waits for that answer (SUBMITTED)
        _, numbers["duplicate_at_platform"] = _issued(c, platform, ids["duplicate_at_platform"])
        second = DocumentIdentity.of(
            "sales_order", TABLE, {"id": ids["duplicate_at_platform"]}, revision=1
        )
        platform.issue(serial_for(second))
        doc = _ledger_row(c, second, dict(TOTALS))
        repo.transition(c, doc, S.READY, S.SUBMITTED, actor="t")
    ids["unknown_to_ledger"] = platform.by_hand()
    with erp.begin() as e:
        for name, number in numbers.items():
            _set_number(e, ids[name], number)
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


def test_every_class_is_found_and_the_erp_is_untouched(env: OpsEnv, platform: Platform) -> None:
    ids = _seed(env, platform)
    before = _erp_snapshot(env)
    code, out, _err = _reconcile(env, "--format", "json")
    assert code == 1, out
    report = json.loads(out)
    found = {
        (e["class"], json.loads(e["key"])["id"] if e["key"] else e["invoice_nos"][0])
        for e in report["exceptions"]
    }
    same_name = [
        "missing_in_ledger",
        "missing_in_erp",
        "invoice_no_mismatch",
        "cancelled_not_reversed",
        "reversed_not_cancelled",
        "duplicate_blue",
        "amount_mismatch",
        "unknown_to_platform",
        "unknown_to_ledger",
    ]
    expected = {(name, ids[name]) for name in same_name}
    expected.add(("duplicate_blue", ids["duplicate_at_platform"]))
    assert found == expected
    assert {c for c, _ in found} == set(report["classes"])  # every class seeded
    by_key = {(e["class"], e["key"]): e for e in report["exceptions"]}

    def one(name: str, key: int | None = None) -> dict[str, Any]:
        return by_key[
            (name, json.dumps({"id": ids[name] if key is None else key}, separators=(",", ":")))
        ]

    assert len(one("duplicate_blue")["invoice_nos"]) == 2
    assert len(one("duplicate_blue", ids["duplicate_at_platform"])["invoice_nos"]) == 2
    mismatch = one("amount_mismatch")
    gross_ledger = Decimal(mismatch["ledger"]["gross"])
    assert gross_ledger - Decimal(mismatch["platform"]["gross"]) == Decimal("0.01")
    assert one("unknown_to_platform")["invoice_nos"] == ["NEVERISSUED01"]
    hand = by_key[("unknown_to_ledger", None)]
    assert hand["serial"] is None and hand["platform"]["gross"]
    assert one("invoice_no_mismatch")["serial"]
    assert report["classes"]["duplicate_blue"]["count"] == 2
    assert report["classes"]["amount_mismatch"]["count"] == 1
    assert _erp_snapshot(env) == before  # never writes to the ERP

    # the run was recorded for the daemon's metrics
    eng = env.ledger()
    with eng.connect() as c:
        run = ledger_reconcile.latest_run(c)
    eng.dispose()
    assert run is not None and run.exceptions == 10 and not run.clean
    assert run.by_class["duplicate_blue"] == 2 and run.by_class["unknown_to_ledger"] == 1

    # CSV and table carry the same exceptions
    code, out, _ = _reconcile(env, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and sorted(r["class"] for r in rows) == sorted(c for c, _ in expected)
    code, out, _ = _reconcile(env, "--document", "sales_order", "--no-record")
    assert code == 1 and "10 exception(s)" in out and "reversed_not_cancelled" in out


def test_clean_period_exits_0_and_errors_exit_2_with_one_line(
    env: OpsEnv, platform: Platform, tmp_path: Path
) -> None:
    erp, ledger = env.erp(), env.ledger()
    with erp.begin() as e:
        order = _order(e, "CONFIRMED")
    with ledger.begin() as c:
        _, number = _issued(c, platform, order)
    with erp.begin() as e:
        _set_number(e, order, number)
    erp.dispose()
    ledger.dispose()
    out_file = tmp_path / "report.txt"
    # the daemon busy with the same rows (an uncommitted write-back holding row locks):
    # reconcile neither waits for it nor sees its uncommitted values
    busy = env.erp()
    with busy.begin() as held:
        held.execute(
            text(
                "UPDATE erp.sales_order SET invoice_no = NULL, status = 'CANCELLED' WHERE id = :i"
            ),
            {"i": order},
        )
        held.execute(text("UPDATE syncd_ops.documents SET invoice_no = 'X' WHERE state = 'ISSUED'"))
        code, out, err = _reconcile(env, "--output", str(out_file))
        held.rollback()
    busy.dispose()
    assert code == 0 and out == "" and "clean" in err
    assert "clean: no exceptions" in out_file.read_text()

    code, _out, err = _reconcile(env, "--document", "nope")
    assert code == 2 and err.count("\n") == 1 and "no such document type" in err
    # the platform down: one line naming it, exit 2
    platform.process.stop()
    code, out, err = _reconcile(env)
    assert code == 2 and err.count("\n") == 1 and "platform" in err and out == ""
    # the database down: one line naming it
    broken = env.config_path.read_text().replace(env.dsn, env.dsn.rsplit(":", 1)[0] + ":1/x")
    bad = tmp_path / "down.yaml"
    bad.write_text(broken)
    r = env.syncd("reconcile", "-c", str(bad), *_period())
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unreachable" in r.stderr
    assert "Traceback" not in r.stderr
