"""The query horizon through the daemon, on the real stack, over both sandbox dialects.

Past `issuer.query_horizon_seconds` a platform's "not found" proves nothing: the daemon
searches the platform's invoice list instead of re-sending. Forgotten + one exact match:
adopted, one invoice, written back. No match, or several: parked (BLOCKED) with the
evidence, nothing re-sent. The horizon is tiny here so that every "not found" after the
first step is past it; the sandbox forgets deterministically (`forget_next_serials`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from syncd.issuers import horizon
from syncd.issuers.nuonuo import order_payload
from tests.integration.daemon_harness import DIALECTS, World, world
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

RETRY = {
    "backoff_base_seconds": 0.2,
    "backoff_max_seconds": 2.0,
    "max_attempts": 30,
    "blocked_recheck_seconds": 1.0,
}


def _wait(cond: Callable[[], bool], what: str, w: World, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    logs = "\n".join(d.output()[-3000:] for d in w.daemons)
    raise AssertionError(f"timed out waiting for {what}\n--- daemon logs ---\n{logs}")


def _find(w: World, order_id: int) -> dict[str, Any] | None:
    rows = [
        r
        for r in w.ledger_rows()
        if r["kind"] == "issue" and json.loads(r["source_key"]) == {"id": order_id}
    ]
    assert len(rows) <= 1
    return rows[0] if rows else None


def _row(w: World, order_id: int) -> dict[str, Any]:
    row = _find(w, order_id)
    assert row is not None, f"order {order_id} has no ledger document"
    return row


def _state(w: World, order_id: int, key: str = "state") -> object:
    row = _find(w, order_id)
    return None if row is None else row[key]


def _audit_details(w: World, doc_id: int) -> list[dict[str, Any]]:
    with w.engine.connect() as conn:
        rows = conn.execute(
            text(f'SELECT details FROM "{w.schema}".audit WHERE document_id = :d ORDER BY id'),
            {"d": doc_id},
        ).scalars()
        return [d for d in rows if d]


def _portal_copy(w: World, payload: dict[str, Any]) -> dict[str, Any]:
    """The same invoice, issued by hand in the platform's portal."""
    if w.provider == "nuonuo":
        order = order_payload(payload, now=datetime.now(UTC))["order"]
        order.pop("orderNo")
        return {"order": order}
    return {"invoice": {k: v for k, v in payload.items() if k != "serial"}}


def _issue_calls_for(w: World, serial: str) -> int:
    return sum(r["serial"] == serial for r in w.issue_calls())


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_past_the_horizon_a_forgotten_invoice_is_adopted_or_parked_never_resent(
    it_erp: Stack, tmp_path: Path, dialect: str
) -> None:
    with world(it_erp, tmp_path, issue_delay=0.0, **DIALECTS[dialect]) as w:
        d = w.daemon(issuer={"query_horizon_seconds": 0.001}, retry=RETRY).start()
        d.wait_ready()

        # 1. accepted, answer lost, serial forgotten: found in the list and adopted
        w.sandbox.set_faults(
            forget_next_serials=1, drop_response_after_commit_rate=1.0, drop_mode="reset"
        )
        adopted_id = w.create_order()
        erp = w.wait_issued([adopted_id])[adopted_id]
        w.sandbox.reset_faults()
        row = _row(w, adopted_id)
        assert row["state"] == "ISSUED" and row["invoice_no"] == erp["invoice_no"]
        assert _issue_calls_for(w, row["serial"]) == 1  # never re-sent
        (platform,) = [i for i in w.sandbox.issued() if i["invoice_no"] == erp["invoice_no"]]
        assert platform["gross_amount"] == str(row["payload"]["totals"]["gross_amount"])
        details = _audit_details(w, row["id"])
        assert any(d.get("horizon", {}).get("verdict") == "ADOPTED" for d in details)
        w.verdict(issued=[adopted_id])

        # 2 and 3: frozen while the account is refused, then never known to the platform
        w.sandbox.set_faults(session_expired=True)
        ambiguous_id, missing_id = w.create_order(), w.create_order()
        _wait(
            lambda: all(_state(w, i) == "BLOCKED" for i in (ambiguous_id, missing_id)),
            "both documents blocked by the refused session",
            w,
        )
        refused_calls = len(w.issue_calls())
        ambiguous = _row(w, ambiguous_id)
        # the same invoice issued twice by hand in the portal: two exact matches
        copy = _portal_copy(w, ambiguous["payload"])
        response = w.sandbox.control("POST", "/_sandbox/portal-invoices", json=[copy, copy])
        assert response.status_code == 201, response.text
        w.sandbox.reset_faults()

        def parked(order_id: int, code: str) -> Callable[[], bool]:
            return lambda: _state(w, order_id, "last_error_code") == code

        _wait(parked(ambiguous_id, horizon.AMBIGUOUS), "the ambiguous document parked", w)
        _wait(parked(missing_id, horizon.NO_MATCH), "the unknown document parked", w)
        for order_id, verdict in ((ambiguous_id, "AMBIGUOUS"), (missing_id, "NO_MATCH")):
            row = _row(w, order_id)
            assert row["state"] == "BLOCKED" and row["invoice_no"] is None
            assert "searched its invoice list" in row["last_error"]
            assert "nothing re-sent" in row["last_error"]
            evidence = [d["horizon"] for d in _audit_details(w, row["id"]) if "horizon" in d]
            assert evidence and evidence[-1]["verdict"] == verdict
            assert evidence[-1]["searched"]["gross_amount"] == str(
                row["payload"]["totals"]["gross_amount"]
            )
            erp_row = w.orders([order_id])[order_id]
            assert erp_row["invoice_no"] is None
            assert "query horizon" in (erp_row["invoice_error"] or "")
        ambiguous_evidence = [
            d["horizon"] for d in _audit_details(w, _row(w, ambiguous_id)["id"]) if "horizon" in d
        ][-1]
        assert len(ambiguous_evidence["matches"]) == 2
        # rechecked (blocked_recheck_seconds: 1) and still nothing re-sent
        time.sleep(3)
        assert len(w.issue_calls()) == refused_calls
        assert _row(w, ambiguous_id)["state"] == "BLOCKED"
        assert _row(w, missing_id)["state"] == "BLOCKED"
        blue = [i for i in w.sandbox.issued() if i["kind"] == "BLUE"]
        assert len(blue) == 3  # the adopted one and the two made by hand, nothing else
