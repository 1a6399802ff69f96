from decimal import Decimal

import pytest

from syncd.changes import UNAVAILABLE
from syncd.config import SnapshotPolicy
from syncd.config.conditions import Condition
from syncd.identity import DocumentKind, serial_for
from syncd.rules.decide import Action, decide, decide_event, identity, route
from tests.unit.config_helpers import demo_config, event, order_row, update

BLUE_NO = "26312000000000000042"


@pytest.fixture(scope="module")
def config():
    return demo_config()


@pytest.fixture(scope="module")
def doc(config):
    return config.documents["sales_order"]


@pytest.fixture(scope="module")
def guarded(doc):
    """A reversal rule that also needs the invoice number in the row."""
    rule = Condition.model_validate(
        {
            "all": [
                {"column": "status", "becomes": "CANCELLED"},
                {"column": "invoice_no", "is_null": False},
            ]
        }
    )
    return doc.model_copy(update={"reverses": rule})


def test_status_became_confirmed_issues(doc):
    d = decide(update(order_row(), status="CONFIRMED"), doc)
    assert d.action is Action.ISSUE
    assert d.reason == "status became CONFIRMED"
    assert d.document == "sales_order"
    assert d.identity is not None
    assert d.identity.key == (("id", 42),)
    assert d.identity.kind is DocumentKind.ISSUE
    assert d.identity.document_type == "sales_order"
    assert d.identity.source_table == "erp.sales_order"


def test_created_confirmed_issues(doc):
    d = decide(event("c", None, order_row(status="CONFIRMED")), doc)
    assert d.action is Action.ISSUE
    assert d.reason == "row was created with status CONFIRMED"


def test_not_a_qualifying_change(doc):
    d = decide(update(order_row(), remark="call first"), doc)
    assert d.action is Action.IGNORE
    assert d.reason.startswith("not a qualifying change")


def test_own_write_back_is_ignored(doc):
    before = order_row(status="CONFIRMED")
    d = decide(update(before, invoice_no=BLUE_NO, invoice_status="ISSUED"), doc)
    assert d.action is Action.IGNORE
    assert d.reason == "own write-back: only write-back columns changed"


def test_incidental_columns_count_as_own_write_back(doc):
    before = order_row(status="CONFIRMED", updated_at="t1")
    ev = update(before, invoice_no=BLUE_NO, updated_at="t2")
    assert decide(ev, doc).reason.startswith("not a qualifying change")
    touched = doc.model_copy(deep=True)
    touched.write_back.incidental_columns = ["updated_at"]
    assert decide(ev, touched).reason == "own write-back: only write-back columns changed"


def test_write_back_together_with_other_change_is_decided(doc):
    before = order_row(status="CONFIRMED", invoice_no=BLUE_NO)
    d = decide(update(before, status="CANCELLED", invoice_status="REVERSAL_PENDING"), doc)
    assert d.action is Action.REVERSE


def test_no_column_changed(doc):
    d = decide(update(order_row()), doc)
    assert d.action is Action.IGNORE
    assert d.reason == "no column changed"


def test_unavailable_values_do_not_count_as_changes(doc):
    before = order_row(status="CONFIRMED", remark="long text")
    d = decide(update(before, remark=UNAVAILABLE, invoice_no=BLUE_NO), doc)
    assert d.reason == "own write-back: only write-back columns changed"


def test_reversal(doc, guarded):
    before = order_row(status="CONFIRMED", invoice_no=BLUE_NO)
    d = decide(update(before, status="CANCELLED"), doc)
    assert d.action is Action.REVERSE
    assert d.reason == "status became CANCELLED"
    d = decide(update(before, status="CANCELLED"), guarded)
    assert d.action is Action.REVERSE
    assert d.reason == "status became CANCELLED and invoice_no is not null"
    assert d.identity is not None and d.identity.kind is DocumentKind.REVERSAL
    issue = decide(update(order_row(), status="CONFIRMED"), doc).identity
    assert serial_for(d.identity) != serial_for(issue)


def test_cancel_before_write_back(doc, guarded):
    # demo: the ledger decides whether there is an invoice to reverse
    ev = update(order_row(status="CONFIRMED"), status="CANCELLED")
    assert decide(ev, doc).action is Action.REVERSE
    # a rule that needs the invoice number ignores it
    d = decide(ev, guarded)
    assert d.action is Action.IGNORE
    assert "not a qualifying change" in d.reason


def test_qualifying_again_when_already_invoiced_is_ignored(doc):
    before = order_row(status="SHIPPED", invoice_no=BLUE_NO)
    d = decide(update(before, status="CONFIRMED"), doc)
    assert d.action is Action.IGNORE
    assert d.reason == f"status became CONFIRMED, but already invoiced ({BLUE_NO})"


def test_delete_truncate_message(doc):
    assert decide(event("d", order_row(), None), doc).reason.startswith("delete")
    assert decide(event("t", None, None), doc).reason.startswith("truncate")
    assert decide(event("m", None, None), doc).action is Action.IGNORE


def test_unknown_status_is_undecided(doc, guarded):
    d = decide(update(order_row(), status=UNAVAILABLE, remark="x"), doc)
    assert d.action is Action.UNDECIDED
    assert d.reason.startswith(
        "cannot tell whether the change reverses an invoice: status: value not sent"
    )
    # the guarded reversal rule is false anyway (no invoice number); qualification is unknown
    d = decide(update(order_row(), status=UNAVAILABLE, remark="x"), guarded)
    assert d.action is Action.UNDECIDED
    assert d.reason.startswith("cannot tell whether the change qualifies: status: value not sent")
    invoiced = order_row(status="CONFIRMED", invoice_no=BLUE_NO)
    d2 = decide(update(invoiced, status=UNAVAILABLE, remark="x"), guarded)
    assert d2.action is Action.UNDECIDED
    assert d2.reason.startswith("cannot tell whether the change reverses an invoice")


def test_update_without_before_image_is_undecided(doc):
    d = decide(event("u", None, order_row(status="CONFIRMED")), doc)
    assert d.action is Action.UNDECIDED
    assert "REPLICA IDENTITY FULL" in d.reason


def test_unavailable_invoice_no_when_qualifying_is_undecided(config):
    # a document type without a reversal rule reaches the invoice-number check
    doc = config.documents["sales_order"].model_copy(update={"reverses": None})
    d = decide(update(order_row(), status="CONFIRMED", invoice_no=UNAVAILABLE), doc)
    assert d.action is Action.UNDECIDED
    assert "invoice_no is not in the row" in d.reason


class TestSnapshot:
    def test_uninvoiced_qualifying_row_issues(self, doc):
        d = decide(event("r", None, order_row(status="CONFIRMED")), doc)
        assert d.action is Action.ISSUE
        assert d.reason.startswith("snapshot row qualifies and carries no invoice")

    def test_invoiced_row_is_ignored(self, doc):
        d = decide(event("r", None, order_row(status="CONFIRMED", invoice_no=BLUE_NO)), doc)
        assert d.action is Action.IGNORE
        assert d.reason == f"snapshot row already invoiced ({BLUE_NO})"

    def test_cancelled_invoiced_row_never_reverses(self, doc):
        row = order_row(status="CANCELLED", invoice_no=BLUE_NO)
        assert decide(event("r", None, row), doc).action is Action.IGNORE

    def test_not_qualifying_row(self, doc):
        d = decide(event("r", None, order_row(status="DRAFT")), doc)
        assert d.action is Action.IGNORE
        assert d.reason.startswith("snapshot row does not qualify")

    def test_policy_ignore(self, doc):
        ignoring = doc.model_copy(update={"snapshot": SnapshotPolicy.IGNORE})
        d = decide(event("r", None, order_row(status="CONFIRMED")), ignoring)
        assert d.action is Action.IGNORE
        assert d.reason == "snapshot row (snapshot policy: ignore)"

    def test_unavailable_invoice_no_is_undecided(self, doc):
        row = order_row(status="CONFIRMED", invoice_no=UNAVAILABLE)
        assert decide(event("r", None, row), doc).action is Action.UNDECIDED


def test_identity_needs_the_key(doc):
    row = order_row(status="CONFIRMED")
    del row["id"]
    ev = event("c", None, row)
    d = decide(ev, doc)
    assert d.action is Action.UNDECIDED
    assert "key column id missing" in d.reason


def test_identity_from_decimal_key_equals_int_key(doc):
    a = identity(event("c", None, order_row(id=Decimal(42))), doc)
    b = identity(event("c", None, order_row(id=42)), doc)
    assert serial_for(a) == serial_for(b)


def test_routing(config):
    assert route(config, "erp.sales_order") is config.documents["sales_order"]
    assert route(config, "erp.sales_order_line") is None
    assert route(config, "erp.customer") is None
    line = decide_event(event("c", None, {"id": 1}, table="erp.sales_order_line"), config)
    assert line.action is Action.IGNORE
    assert line.reason.startswith("line table of sales_order")
    other = decide_event(event("c", None, {"id": 1}, table="erp.customer"), config)
    assert other.reason == "table erp.customer is not configured"
    assert decide_event(update(order_row(), status="CONFIRMED"), config).action is Action.ISSUE


# ------------------------------------------------------------------ re-issue after a reversal


@pytest.fixture(scope="module")
def reissuing(doc):
    rule = Condition.model_validate({"column": "status", "becomes": "CONFIRMED"})
    return doc.model_copy(update={"reissues": rule})


def test_reconfirmation_of_a_reversed_row_is_a_reissue(reissuing):
    before = order_row(status="CANCELLED", invoice_no=BLUE_NO, invoice_status="REVERSED")
    d = decide(update(before, status="CONFIRMED"), reissuing)
    assert d.action is Action.ISSUE
    assert d.reissue
    assert d.reason == "re-issue: status became CONFIRMED"
    assert d.identity is not None and d.identity.revision == 0  # the ledger picks it


def test_reissue_condition_is_not_an_issue_without_it(doc):
    before = order_row(status="CANCELLED", invoice_no=BLUE_NO)
    d = decide(update(before, status="CONFIRMED"), doc)
    assert d.action is Action.IGNORE
    assert not d.reissue


def test_reversal_wins_over_reissue(reissuing):
    before = order_row(status="CONFIRMED", invoice_no=BLUE_NO)
    d = decide(update(before, status="CANCELLED"), reissuing)
    assert d.action is Action.REVERSE
    assert not d.reissue


def test_reissue_condition_unknown_is_undecided(reissuing):
    ev = event("u", None, order_row(status="CONFIRMED", invoice_no=BLUE_NO))
    d = decide(ev, reissuing)
    assert d.action is Action.UNDECIDED
    assert "re-issues" in d.reason


def test_reissues_columns_are_source_columns(reissuing):
    assert "status" in reissuing.source_columns()
