"""Approval: the AWAITING_APPROVAL state, the `approval` condition, the approver's decision,
and the privileges each role is granted (all pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from syncd.config import ConfigError, parse_config
from syncd.config.conditions import Condition
from syncd.config.documents import ReturnsConfig
from syncd.erp.writeback import ResultStatus
from syncd.identity import DocumentKind
from syncd.invoice.from_erp import build_blue
from syncd.ledger.models import Approval, DocumentIdentity
from syncd.ledger.privileges import (
    RoleNames,
    grant_statements,
    plan,
    render_json,
    render_sql,
    runtime_grants,
)
from syncd.lifecycle import (
    INVOICE_MAY_STILL_COME,
    ISSUE_EXISTS,
    MAY_HAVE_BEEN_SENT,
    PAYLOAD_FROZEN,
    PAYLOAD_PRUNABLE,
    TERMINAL_STATES,
    DocumentState,
    InvalidTransitionError,
    check_transition,
    is_allowed,
)
from syncd.observability.metrics import DocumentOutcome
from syncd.pipeline.outcomes import REJECTED_BY_APPROVER, approval_change
from syncd.rules.approval import approval_needed
from syncd.rules.conditions import Truth, evaluate
from tests.unit.config_helpers import DEMO, demo_config, line_row, order_row, update
from tests.unit.pipeline.test_outcomes import row

S = DocumentState
K = DocumentKind
AWAITING = S.AWAITING_APPROVAL

# ------------------------------------------------------------------ the state machine


def test_awaiting_approval_leads_only_to_ready_or_rejected() -> None:
    assert {t for t in S if is_allowed(K.ISSUE, AWAITING, t)} == {S.READY, S.REJECTED}
    assert not any(is_allowed(K.REVERSAL, AWAITING, t) for t in S)
    for s in (S.PENDING, S.INVALID):
        assert is_allowed(K.ISSUE, s, AWAITING)
    # nothing that may have reached the provider can go back to waiting for a person
    for s in MAY_HAVE_BEEN_SENT:
        assert not is_allowed(K.ISSUE, s, AWAITING)
        assert not is_allowed(K.REVERSAL, s, AWAITING)
    with pytest.raises(InvalidTransitionError):
        check_transition("d", K.ISSUE, AWAITING, S.SUBMITTED)


def test_awaiting_approval_is_frozen_unsent_and_blocks_a_second_issue() -> None:
    assert AWAITING not in MAY_HAVE_BEEN_SENT  # never at the provider
    assert AWAITING in PAYLOAD_FROZEN  # what is approved is what is sent
    assert AWAITING in ISSUE_EXISTS and AWAITING in INVOICE_MAY_STILL_COME
    assert AWAITING not in TERMINAL_STATES and AWAITING not in PAYLOAD_PRUNABLE
    # ISSUED keeps its payload: a later red invoice is built from it
    assert S.ISSUED not in PAYLOAD_PRUNABLE and S.DEAD not in PAYLOAD_PRUNABLE


# ------------------------------------------------------------------ comparisons


def cond(**data: Any) -> Condition:
    return Condition.model_validate(data)


@given(
    value=st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    bound=st.decimals(min_value=-(10**9), max_value=10**9, places=2),
)
def test_comparisons_are_exact_decimals(value: D, bound: D) -> None:
    ev = update(order_row(), total_amount=value)
    for name, holds in (
        ("above", value > bound),
        ("at_least", value >= bound),
        ("below", value < bound),
        ("at_most", value <= bound),
    ):
        outcome = evaluate(cond(column="total_amount", **{name: str(bound)}), ev)
        assert outcome.truth is (Truth.TRUE if holds else Truth.FALSE), (name, outcome)


def test_a_float_bound_means_its_decimal_text() -> None:
    c = cond(column="total_amount", above=0.1)
    assert c.above == D("0.1")
    assert evaluate(c, update(order_row(), total_amount=D("0.10"))).truth is Truth.FALSE
    assert evaluate(c, update(order_row(), total_amount=D("0.11"))).truth is Truth.TRUE


def test_null_or_text_cannot_be_compared() -> None:
    c = cond(column="remark", at_least=1)
    assert evaluate(c, update(order_row(), remark=None)).truth is Truth.UNKNOWN
    assert evaluate(c, update(order_row(), remark="abc")).truth is Truth.UNKNOWN
    assert c.describe() == "remark >= 1"


@pytest.mark.parametrize(
    "bad",
    [
        {"column": "x", "above": None},
        {"column": "x", "above": "many"},
        {"column": "x", "above": 1, "below": 2},
        {"above": 1},
    ],
)
def test_malformed_comparisons_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Condition.model_validate(bad)


# ------------------------------------------------------------------ the approval condition


def config_with(approval: Any, where: str = "approval") -> str:
    data = yaml.safe_load(DEMO.read_text())
    data["documents"]["sales_order"][where] = approval
    return str(yaml.safe_dump(data))


def test_invoice_columns_only_in_approval() -> None:
    with pytest.raises(ConfigError, match=r"invoice\.gross"):
        parse_config(config_with({"column": "invoice.gross", "above": 1}, "qualifies"))
    with pytest.raises(ConfigError, match="unknown invoice column"):
        parse_config(config_with({"column": "invoice.grosss", "above": 1}))
    ok = parse_config(config_with({"column": "invoice.gross", "above": 1}))
    assert ok.documents["sales_order"].approval is not None


def held(approval: Any, **order: Any) -> Any:
    doc = parse_config(config_with(approval)).documents["sales_order"]
    ev = update(order_row(**order), status="CONFIRMED")
    ident = DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)])
    invoice = build_blue(doc, ev.after or {}, [line_row()], ident).invoice
    assert invoice is not None and invoice.totals.gross_amount == D("180.00")
    return approval_needed(doc, ev, invoice)


def test_gross_above_a_limit_waits_for_approval() -> None:
    assert held({"column": "invoice.gross", "above": "179.99"}) is not None
    assert held({"column": "invoice.gross", "above": "180.00"}) is None
    assert held({"column": "invoice.gross", "at_least": 180}) is not None
    assert held({"column": "invoice.lines", "above": 1}) is None


def test_special_invoices_or_columns_of_the_row() -> None:
    special = {"column": "invoice.type", "equals": "SPECIAL"}
    assert held(special, invoice_type="SPECIAL") is not None
    assert held(special) is None
    assert held({"column": "total_amount", "above": 100}) is not None


def test_an_undecidable_condition_waits_for_a_person() -> None:
    outcome = held({"column": "remark", "above": 1})  # remark is NULL
    assert outcome is not None and outcome.truth is Truth.UNKNOWN
    assert "approval cannot be decided" in outcome.reason


def test_no_condition_no_approval() -> None:
    doc = demo_config().documents["sales_order"]
    ev = update(order_row(), status="CONFIRMED")
    ident = DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)])
    invoice = build_blue(doc, ev.after or {}, [line_row()], ident).invoice
    assert invoice is not None and approval_needed(doc, ev, invoice) is None


# ------------------------------------------------------------------ the decision


def decision(kind: str, session: str = "alice", current: str = "alice") -> Approval:
    return Approval(
        id=7,
        document_id=1,
        decision=kind,
        reason="credit checked",
        os_user="alice",
        db_session_user=session,
        db_current_user=current,
        decided_at=datetime(2026, 12, 3, tzinfo=UTC),
    )


def test_approved_becomes_ready_with_the_decision_audited() -> None:
    change = approval_change(row(AWAITING), decision("approve"))
    assert change.new_state is S.READY and change.writeback is None and change.outcome is None
    assert change.reason == "approved by alice: credit checked"
    assert change.details is not None
    assert change.details["approval"]["db_session_user"] == "alice"
    assert change.details["approval"]["os_user"] == "alice"


def test_rejected_is_rejected_and_written_back() -> None:
    change = approval_change(row(AWAITING), decision("reject", "bob", "syncd_approver"))
    assert change.new_state is S.REJECTED
    assert change.outcome is DocumentOutcome.REJECTED
    assert change.writeback is not None and change.writeback.status is ResultStatus.REJECTED
    assert change.writeback.error == "rejected by approver bob as syncd_approver: credit checked"
    assert change.fields["last_error_code"] == REJECTED_BY_APPROVER


def test_a_decision_on_a_row_not_waiting_is_a_bug() -> None:
    with pytest.raises(InvalidTransitionError):
        approval_change(row(S.READY), decision("approve"))
    with pytest.raises(InvalidTransitionError):
        approval_change(replace(row(S.ISSUED)), decision("reject"))


# ------------------------------------------------------------------ the grants


def test_runtime_grants_follow_the_config() -> None:
    config = demo_config()
    sql = grant_statements("rt", runtime_grants(config))
    assert 'GRANT SELECT ON "erp"."sales_order" TO "rt";' in sql
    assert 'GRANT SELECT ON "erp"."sales_order_line" TO "rt";' in sql
    wb = config.documents["sales_order"].write_back.columns.mapped().values()
    cols = ", ".join(f'"{c}"' for c in wb)
    assert f'GRANT UPDATE ({cols}) ON "erp"."sales_order" TO "rt";' in sql
    assert 'GRANT SELECT, INSERT ON "syncd"."audit" TO "rt";' in sql
    assert 'GRANT SELECT ON "syncd"."approvals" TO "rt";' in sql
    text = "\n".join(sql)
    for never in ("DELETE", "TRUNCATE", "TRIGGER", "REFERENCES", "ALL"):
        assert never not in text


def test_each_grant_names_the_config_key_behind_it() -> None:
    grants = runtime_grants(demo_config())
    assert all(g.because for g in grants)
    status = [g for g in grants if g.columns == ("invoice_status",)]
    # the order table's and the return table's (config/demo.yaml has both) status columns
    assert sorted(g.because for g in status) == [
        "documents.sales_order.returns.write_back.status",
        "documents.sales_order.write_back.columns.status",
    ]


def test_only_the_approver_may_insert_decisions() -> None:
    names = RoleNames()
    roles = {r.role: r for r in plan(demo_config(), names, people=True)}
    writers = {
        role
        for role, r in roles.items()
        for g in r.grants
        if g.name == "approvals" and g.privilege != "SELECT"
    }
    assert writers == {names.approver}
    audit_writes = {
        (role, g.privilege)
        for role, r in roles.items()
        for g in r.grants
        if g.name == "audit" and g.privilege != "SELECT"
    }
    assert audit_writes == {(names.runtime, "INSERT"), (names.operator, "INSERT")}
    assert not roles[names.readonly].grants or all(
        g.privilege in ("SELECT", "USAGE") for g in roles[names.readonly].grants
    )


def test_the_script_is_one_transaction_with_quoted_names() -> None:
    config = demo_config()
    names = RoleNames(owner='we"ird')
    script = render_sql(config, names, people=False, source="demo.yaml")
    assert script.splitlines()[3] == "BEGIN;" and script.rstrip().endswith("COMMIT;")
    assert 'AUTHORIZATION "we""ird"' in script
    assert "syncd_approver" not in script  # people's roles only with --people


def test_grants_json_names_every_privilege_and_its_reason() -> None:
    data = render_json(demo_config(), RoleNames(), people=True)
    assert data["database"] == "erp" and data["schema"] == "syncd"
    by_role = {r["role"]: r for r in data["roles"]}
    assert set(by_role) == {
        "syncd_owner",
        "syncd_runtime",
        "syncd_readonly",
        "syncd_operator",
        "syncd_approver",
    }
    runtime = by_role["syncd_runtime"]
    assert runtime["login"] and not by_role["syncd_approver"]["login"]
    assert all(g["because"] for g in runtime["grants"])
    assert {"privilege": "INSERT", "on": "table", "object": "syncd.audit"}.items() <= next(
        g for g in runtime["grants"] if g["object"] == "syncd.audit" and g["privilege"] == "INSERT"
    ).items()


def test_runtime_grants_cover_returns_related_rows_and_side_tables() -> None:
    config = demo_config()
    doc = config.documents["sales_order"]
    returns = ReturnsConfig.model_validate(
        {
            "table": "erp.sales_return_line",
            "document_key": "order_id",
            "line": "line_no",
            "quantity": "quantity",
            "qualifies": {"column": "status", "becomes": "CONFIRMED"},
            "write_back": {"red_invoice_no": "red_invoice_no", "error": "invoice_error"},
        }
    )
    config.documents["sales_order"] = doc.model_copy(update={"returns": returns})
    sql = "\n".join(grant_statements("rt", runtime_grants(config)))
    assert 'GRANT SELECT ON "erp"."sales_return_line" TO "rt";' in sql
    assert 'GRANT UPDATE ("red_invoice_no", "invoice_error") ON "erp"."sales_return_line"' in sql
