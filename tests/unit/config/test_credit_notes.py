"""Documents whose kind comes from the row: a Tryton credit note (config/tryton.yaml,
`credit_notes`) is decided as a credit, never a blue invoice; its lines find the credited
invoice through a `reference` relation; its red invoice credits several lines at once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.changes import Op
from syncd.config import ConfigError, load_config
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.invoice.from_erp import build_credit_red
from syncd.invoice.model import InvoiceKind, ReversalReason
from syncd.invoice.partial import Returned, ReturnRefusedError, build_partial_red_lines
from syncd.invoice.validation import validate
from syncd.ledger.models import DocumentRow
from syncd.pipeline.outcomes import is_partial_reversal
from syncd.rules.decide import Action, decide
from tests.unit.config_helpers import ROOT, event
from tests.unit.invoice_samples import blue, line

TRYTON = ROOT / "config" / "tryton.yaml"
TEXT = TRYTON.read_text(encoding="utf-8")
TABLE = "public.account_invoice"


def write(tmp_path: Path, old: str, new: str) -> Path:
    assert old in TEXT, old
    path = tmp_path / "tryton.yaml"
    path.write_text(TEXT.replace(old, new, 1), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


def line_no(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def invoice_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "state": "posted",
        "type": "out",
        "sequence_type_cache": "invoice",
        "number": "INV2026-00007",
        "party": 1,
        "invoice_address": 1,
        "invoice_date": "2026-12-03",
    }
    row.update(changes)
    return row


# ----------------------------------------------------------------------------- config


def test_tryton_credit_notes_load():
    doc = load_config(TRYTON).documents["customer_invoice"]
    credit = doc.credit_notes
    assert credit is not None
    assert (credit.original, credit.line, credit.quantity) == (
        "credited.invoice",
        "credited.id",
        "quantity",
    )
    assert doc.lines.related["credited"].reference == "account.invoice.line"
    assert {"credited.invoice", "credited.id", "quantity"} <= doc.line_reads()


def test_credit_notes_reading_an_unknown_relation(tmp_path):
    path = write(tmp_path, "original: credited.invoice", "original: credit.invoice")
    [problem] = problems(path)
    assert "credit_notes: 'credit.invoice' reads relation 'credit'" in problem
    assert problem.startswith(f"{path}:")


def test_credit_notes_quantity_is_a_plain_column(tmp_path):
    path = write(tmp_path, "quantity: quantity            #", "quantity: credited.quantity  #")
    [problem] = problems(path)
    assert "credit_notes.quantity: 'credited.quantity' is not a column name" in problem


def test_credit_notes_keys_are_checked_with_their_line(tmp_path):
    path = write(tmp_path, "      original: credited.invoice", "      orignal: credited.invoice")
    found = problems(path)
    assert any(f":{line_no(path, 'credit_notes:')}:" in p for p in found), found


def test_reference_needs_a_single_join_column(tmp_path):
    path = write(
        tmp_path,
        "          join: {id: origin}\n",
        "          join: {id: origin, invoice: invoice}\n",
    )
    [problem] = problems(path)
    assert "reference needs a join of exactly one column" in problem


def test_reference_values_follow_only_their_model():
    credited = load_config(TRYTON).documents["customer_invoice"].lines.related["credited"]
    assert credited.join_value("account.invoice.line,42") == 42
    assert credited.join_value("sale.line,42") is None  # another model: no related row
    assert credited.join_value("account.invoice.line,") is None
    assert credited.join_value(None) is None


# ----------------------------------------------------------------------------- decisions


def test_a_posted_credit_note_is_a_credit_not_an_invoice():
    doc = load_config(TRYTON).documents["customer_invoice"]
    draft = invoice_row(id=9, state="draft", sequence_type_cache=None, number=None)
    posted = dict(draft, state="posted", sequence_type_cache="credit_note", number="INV-9")
    decision = decide(event(Op.UPDATE, draft, posted, table=TABLE), doc)
    assert decision.action is Action.CREDIT
    assert decision.reason.startswith("credit note: state is posted")
    assert decision.identity is not None
    assert decision.identity.kind is DocumentKind.REVERSAL
    assert dict(decision.identity.key) == {"id": 9}


def test_a_posted_invoice_still_issues():
    doc = load_config(TRYTON).documents["customer_invoice"]
    draft = invoice_row(state="validated", sequence_type_cache=None, number=None)
    decision = decide(event(Op.UPDATE, draft, invoice_row(), table=TABLE), doc)
    assert decision.action is Action.ISSUE


def test_a_credit_note_of_unknown_kind_is_undecided():
    doc = load_config(TRYTON).documents["customer_invoice"]
    row = invoice_row(id=9)
    del row["sequence_type_cache"]
    decision = decide(event(Op.CREATE, None, row, table=TABLE), doc)
    assert decision.action is Action.UNDECIDED
    assert "credit note" in decision.reason


# ----------------------------------------------------------------------------- red invoice


def three_lines():  # type: ignore[no-untyped-def]
    return blue(
        [
            line(),
            line("Training", "3", "100", "0.06"),
            line("Freight", "1", "300", "0.09"),
        ]
    )


def test_one_red_invoice_for_several_credited_lines():
    inv = three_lines()
    red = build_partial_red_lines(
        inv,
        {3: Decimal(1), 2: Decimal(3)},
        before={},
        serial="S" * 26,
        original_invoice_no="26312000000000000042",
        reason=ReversalReason.SALES_RETURN,
    )
    assert red.kind is InvoiceKind.RED
    assert red.original_invoice_no == "26312000000000000042"
    assert [ln.line_no for ln in red.lines] == [2, 3]  # blue order
    assert red.totals.gross_amount == -(inv.lines[1].gross_amount + inv.lines[2].gross_amount)
    assert validate(red) == []


def test_credited_lines_never_exceed_the_blue_lines():
    inv = three_lines()
    with pytest.raises(ReturnRefusedError, match="returning 1 more would make 4 of 3"):
        build_partial_red_lines(
            inv,
            {2: Decimal(1)},
            before={2: Returned(quantity=Decimal(3))},
            serial="S" * 26,
            original_invoice_no="26312000000000000042",
            reason=ReversalReason.SALES_RETURN,
        )
    with pytest.raises(ReturnRefusedError, match="has no line 4"):
        build_partial_red_lines(
            inv,
            {4: Decimal(1)},
            before={},
            serial="S" * 26,
            original_invoice_no="26312000000000000042",
            reason=ReversalReason.SALES_RETURN,
        )


def credit_identity() -> DocumentIdentity:
    return DocumentIdentity("customer_invoice", TABLE, (("id", 9),), DocumentKind.REVERSAL, 0)


def test_the_credit_note_red_invoice_references_the_original():
    doc = load_config(TRYTON).documents["customer_invoice"]
    inv = three_lines()
    result = build_credit_red(
        doc,
        invoice_row(id=9, sequence_type_cache="credit_note"),
        inv,
        "26312000000000000042",
        credit_identity(),
        {1: Decimal(2), 2: Decimal(3), 3: Decimal(1)},
        {},
    )
    assert result.ok and result.invoice is not None
    red = result.invoice
    assert red.serial == serial_for(credit_identity())
    assert red.original_invoice_no == "26312000000000000042"
    assert red.reversal_reason is ReversalReason.SALES_RETURN
    assert red.totals.gross_amount == -inv.totals.gross_amount


def test_a_credit_beyond_the_invoice_is_a_readable_problem():
    doc = load_config(TRYTON).documents["customer_invoice"]
    result = build_credit_red(
        doc,
        invoice_row(id=9),
        three_lines(),
        "26312000000000000042",
        credit_identity(),
        {2: Decimal(4)},
        {},
    )
    assert result.invoice is None
    [problem] = result.problems
    assert problem.path == "credit_notes"
    assert "returning 4 more would make 4 of 3 returned" in problem.message


def test_a_credit_note_red_leaves_the_blue_invoice_issued():
    """Sent with its lines (a partial red), it does not reverse the credited invoice's
    ledger row: the key of the row (the credit note) differs from the payload's source."""
    doc = load_config(TRYTON).documents["customer_invoice"]
    result = build_credit_red(
        doc,
        invoice_row(id=9),
        three_lines(),
        "26312000000000000042",
        credit_identity(),
        {1: Decimal(1)},
        {},
    )
    assert result.invoice is not None
    payload = result.invoice.model_dump(mode="json")
    payload["source"] = {"document": "customer_invoice", "table": TABLE, "key": {"id": 7}}
    row = _reversal_row(payload, key_id=9)
    assert is_partial_reversal(row)
    assert not is_partial_reversal(_reversal_row(payload, key_id=7))  # a full reversal


def _reversal_row(payload: dict[str, Any], key_id: int) -> DocumentRow:
    identity = DocumentIdentity(
        "customer_invoice", TABLE, (("id", key_id),), DocumentKind.REVERSAL, 0
    )
    return DocumentRow.from_mapping(
        _NoneForOthers(
            {
                "id": 1,
                "document_type": identity.document_type,
                "source_table": identity.source_table,
                "source_key": identity.source_key,
                "kind": identity.kind.value,
                "revision": 0,
                "serial": serial_for(identity),
                "state": "REVERSAL_PENDING",
                "payload": payload,
                "attempts": 0,
                "version": 1,
            }
        )
    )


class _NoneForOthers(dict[str, Any]):
    """A ledger row mapping whose other columns read NULL."""

    def __missing__(self, key: str) -> None:
        return None
