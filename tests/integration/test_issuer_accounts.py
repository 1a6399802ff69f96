"""Two companies, two platform accounts: one losing its bureau session stops only its own.

The daemon runs with `issuers: {sh, bj}` against the sandbox's Nuonuo dialect, and the
order's `company_id` picks the account. Beijing's drawer session drops (a sandbox fault for
its userTax only): Shanghai's orders are issued as usual, Beijing's wait BLOCKED, the
platform sees no storm of refused submissions (counted at the sandbox), the alert rule of
the Helm chart -- evaluated by promtool on the daemon's real scrape -- fires once, for
`bj`; when the session returns every order is issued once, each under its own company.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from tests.integration.chart_alerts import evaluate, samples
from tests.integration.daemon_harness import (
    DIALECTS,
    IT_SCHEMA,
    NUONUO_ISSUE,
    Daemon,
    World,
    world,
)
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

SH_TAX = "91310115MA1K4PLN89"  # the demo seller
BJ_TAX = "91110105MA00BJ0006"
PROBE = 2.0


def _wait(cond, timeout: float = 90, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _two_account_daemon(w: World) -> Daemon:
    """The harness's daemon config, its one `issuer:` split into accounts sh and bj."""
    d = w.daemon(
        issuer={"account_probe_interval": PROBE},
        retry={
            "backoff_base_seconds": 0.2,
            "backoff_max_seconds": 2.0,
            "max_attempts": 30,
            "blocked_recheck_seconds": 0.5,
        },
    )
    data = yaml.safe_load(d.config_path.read_text())
    issuer = data.pop("issuer")
    del issuer["seller_tax_id"]  # each account's userTax is its seller's
    seller = data.pop("seller")
    data["issuers"] = {
        "sh": {**issuer, "seller": seller},
        "bj": {**issuer, "seller": {**seller, "name": "Acme Beijing Co., Ltd.", "tax_id": BJ_TAX}},
    }
    data["documents"]["sales_order"]["account"] = {
        "column": "company_id",
        "map": {1: "sh", 2: "bj"},
    }
    d.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return d


def _order(w: World, company: int) -> int:
    order_id = w.create_order(confirm=False)
    w.set_status(order_id, "CONFIRMED", company_id=company)
    return order_id


def _issue_calls(w: World, user_tax: str) -> list[dict[str, Any]]:
    return [
        r
        for r in w.sandbox.requests()
        if r["method"] == NUONUO_ISSUE and r.get("user_tax") == user_tax
    ]


def test_one_account_losing_its_session_stops_only_its_own_documents(
    it_erp: Stack, tmp_path: Path
) -> None:
    with world(it_erp, tmp_path, **DIALECTS["nuonuo"]) as w:
        with w.engine.begin() as conn:
            conn.execute(
                text(
                    f"ALTER TABLE {IT_SCHEMA}.sales_order "
                    "ADD COLUMN IF NOT EXISTS company_id integer NOT NULL DEFAULT 1"
                )
            )
        w.sandbox.set_faults(session_expired_for=[BJ_TAX])
        d = _two_account_daemon(w).start()
        d.wait_ready()
        started = time.monotonic()
        sh = [_order(w, 1) for _ in range(4)]
        bj = [_order(w, 2) for _ in range(4)]
        w.wait_issued(sh)
        _wait(
            lambda: sum(r["state"] == "BLOCKED" for r in w.ledger_rows()) >= len(bj),
            what="Beijing's documents blocked by its refused account",
        )
        first = time.monotonic()
        # Only Beijing's documents wait; Shanghai's are all issued, under its own company.
        assert all(o["invoice_no"] is None for o in w.orders(bj).values())
        assert {r["state"] for r in w.ledger_rows()} == {"ISSUED", "BLOCKED"}
        assert len({r["serial"] for r in _issue_calls(w, SH_TAX)}) == len(sh)
        metrics = d.metrics()
        assert 'syncd_issuer_account_up{account="bj"} 0.0' in metrics
        assert 'syncd_issuer_account_up{account="sh"} 1.0' in metrics
        assert 'account="default"' not in metrics
        # Shanghai's remaining credit line as the platform reported it before its submits.
        assert 'syncd_issuer_credit_remaining{account="sh"}' in metrics
        # No storm: at most one refused submission per document in flight at the first
        # refusal, then one probe per interval (the documents are rechecked every 0.5 s).
        refused = len(_issue_calls(w, BJ_TAX))
        assert 1 <= refused <= len(bj) + 1 + (first - started) / PROBE
        # One alert condition, for bj only, from the chart's own rule on this scrape.
        scrape = samples(metrics, ("syncd_issuer_account_up", "syncd_assigned_partitions"))
        evaluate(
            scrape,
            "SyncdIssuerAccountDown",
            [{"severity": "critical", "account": "bj"}],
            tmp_path,
            pod="syncd-a",
            minutes=10,
        )
        _wait(lambda: len(_issue_calls(w, BJ_TAX)) > refused, what="a probe of the bj account")
        elapsed = time.monotonic() - first
        assert len(_issue_calls(w, BJ_TAX)) <= refused + 1 + elapsed / PROBE
        # The session is back: the next probe resumes the account, and everything is issued
        # exactly once.
        w.sandbox.reset_faults()
        w.wait_issued(bj)
        w.verdict(issued=sh + bj)
        issued_bj = {r["serial"] for r in _issue_calls(w, BJ_TAX) if r["code"] == "E0000"}
        assert len(issued_bj) == len(bj)
        assert 'syncd_issuer_account_up{account="bj"} 1.0' in d.metrics()
