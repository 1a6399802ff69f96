"""The judgement of `syncd reconcile`: every exception class from hand-made sides."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from syncd.identity import DocumentKind
from syncd.issuers.base import PlatformInvoice, Totals
from syncd.lifecycle import DocumentState
from syncd.reconcile.compare import (
    Amounts,
    ErpDocument,
    ExceptionClass,
    Inputs,
    LedgerDocument,
    PlatformEntry,
    compare,
)
from syncd.reconcile.report import CSV_FIELDS, to_csv, to_json, to_table

C = ExceptionClass
S = DocumentState
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
DAY = datetime(2026, 11, 15, tzinfo=UTC)
TABLE = "erp.sales_order"
A = Amounts(Decimal("100.00"), Decimal("13.00"), Decimal("113.00"))


def P(
    invoice_no: str,
    serial: str | None,
    kind: Literal["BLUE", "RED"] = "BLUE",
    state: Literal["ISSUED", "REVERSED", "VOIDED"] = "ISSUED",
    issued_at: datetime = DAY,
    totals: Totals | None = None,
) -> PlatformInvoice:
    return PlatformInvoice(
        invoice_no=invoice_no,
        kind=kind,
        issued_at=issued_at,
        totals=totals or T(Decimal("100.00"), Decimal("13.00"), Decimal("113.00")),
        state=state,
        serial=serial,
    )


T = Totals


def key(n: int) -> str:
    return f'{{"id":{n}}}'


def erp(
    n: int, *, qualifies: bool = True, cancelled: bool = False, no: str | None = None
) -> ErpDocument:
    return ErpDocument("sales_order", key(n), qualifies, cancelled, no)


_ids = iter(range(1, 10_000))


def led(
    n: int,
    state: DocumentState = S.ISSUED,
    *,
    no: str | None = None,
    revision: int = 0,
    kind: DocumentKind = DocumentKind.ISSUE,
    reverses: int | None = None,
    amounts: Amounts | None = A,
) -> LedgerDocument:
    return LedgerDocument(
        id=next(_ids),
        document_type="sales_order",
        source_table=TABLE,
        key=key(n),
        kind=kind,
        revision=revision,
        state=state,
        serial=f"S{n}{kind.value[0]}{revision}",
        invoice_no=no,
        issued_at=DAY,
        amounts=amounts,
        reverses_id=reverses,
    )


def run(
    erp_rows: list[ErpDocument],
    ledger: list[LedgerDocument],
    platform: list[PlatformEntry] | None = None,
    known: tuple[frozenset[str], frozenset[str]] | None = None,
):
    listed = (
        platform
        if platform is not None
        else [P(r.invoice_no, r.serial) for r in ledger if r.invoice_no]
    )
    if known is None:
        known = (
            frozenset(r.serial for r in ledger),
            frozenset(r.invoice_no for r in ledger if r.invoice_no),
        )
    return compare(
        Inputs(START, END, erp_rows, ledger, listed, known[0], known[1], {"sales_order": TABLE})
    )


def classes(report) -> list[ExceptionClass]:
    return [e.cls for e in report.exceptions]


def test_agreeing_sides_are_clean() -> None:
    report = run([erp(1, no="N1")], [led(1, no="N1")])
    assert report.clean
    assert report.by_state["issue/ISSUED"] == A
    assert all(t.count == 0 for t in report.by_class().values())


def test_qualifying_row_without_ledger_document() -> None:
    report = run([erp(1), erp(2, qualifies=False), erp(3, qualifies=False, no="N3")], [])
    assert classes(report) == [C.MISSING_IN_LEDGER, C.MISSING_IN_LEDGER]
    assert [e.key for e in report.exceptions] == [key(1), key(3)]
    assert report.exceptions[1].invoice_nos == ("N3",)


def test_ledger_document_without_erp_row() -> None:
    report = run([], [led(1, no="N1")])
    assert classes(report) == [C.MISSING_IN_ERP]
    e = report.exceptions[0]
    assert (e.serial, e.invoice_nos, e.ledger) == ("S1i0", ("N1",), A)


def test_issued_but_erp_number_missing_or_different() -> None:
    report = run([erp(1), erp(2, no="OTHER")], [led(1, no="N1"), led(2, no="N2")])
    assert classes(report) == [C.INVOICE_NO_MISMATCH, C.INVOICE_NO_MISMATCH]
    assert report.exceptions[1].invoice_nos == ("N2", "OTHER")


def test_cancelled_not_reversed_and_reversed_not_cancelled() -> None:
    blue = led(1, no="N1")
    pending = led(1, S.REVERSAL_PENDING, kind=DocumentKind.REVERSAL, reverses=blue.id)
    gone = led(2, S.REVERSED, no="N2")
    red = led(2, S.REVERSED, no="R2", kind=DocumentKind.REVERSAL, reverses=gone.id)
    report = run(
        [erp(1, qualifies=False, cancelled=True, no="N1"), erp(2, no="N2")],
        [blue, pending, gone, red],
    )
    assert classes(report) == [C.CANCELLED_NOT_REVERSED, C.REVERSED_NOT_CANCELLED]
    assert "REVERSAL_PENDING" in report.exceptions[0].detail
    assert report.exceptions[1].invoice_nos == ("N2", "R2")


def test_cancelled_and_reversed_is_clean() -> None:
    gone = led(2, S.REVERSED, no="N2")
    red = led(2, S.REVERSED, no="R2", kind=DocumentKind.REVERSAL, reverses=gone.id)
    assert run([erp(2, qualifies=False, cancelled=True, no="N2")], [gone, red]).clean


def test_platform_amounts_differ() -> None:
    theirs = T(Decimal("100.00"), Decimal("13.01"), Decimal("113.01"))
    report = run([erp(1, no="N1")], [led(1, no="N1")], [P("N1", "S1i0", totals=theirs)])
    assert classes(report) == [C.AMOUNT_MISMATCH]
    e = report.exceptions[0]
    assert e.platform is not None and e.platform.gross == Decimal("113.01")
    assert e.ledger == A


def test_red_invoice_amounts_compare_without_sign() -> None:
    gone = led(2, S.REVERSED, no="N2")
    red = led(2, S.REVERSED, no="R2", kind=DocumentKind.REVERSAL, reverses=gone.id)
    minus = T(Decimal("-100.00"), Decimal("-13.00"), Decimal("-113.00"))
    report = run(
        [erp(2, qualifies=False, cancelled=True, no="N2")],
        [gone, red],
        [P("N2", gone.serial, state="REVERSED"), P("R2", red.serial, "RED", totals=minus)],
    )
    assert report.clean


def test_invoice_issued_by_hand_and_invoice_the_platform_lacks() -> None:
    report = run(
        [erp(1, no="N1")],
        [led(1, no="N1")],
        [P("HAND1", None), P("OLD", None, issued_at=datetime(2026, 10, 5, tzinfo=UTC))],
    )
    assert classes(report) == [C.UNKNOWN_TO_LEDGER, C.UNKNOWN_TO_PLATFORM]
    assert report.exceptions[0].invoice_nos == ("HAND1",)
    assert report.exceptions[0].platform == A
    assert report.exceptions[1].invoice_nos == ("N1",)


def test_platform_invoice_of_a_serial_the_ledger_knows_later_is_not_by_hand() -> None:
    report = run(
        [erp(1, no="N1")],
        [led(1, no="N1")],
        [P("N1", "S1i0"), P("N9", "LATE")],
        known=(frozenset({"S1i0", "LATE"}), frozenset({"N1"})),
    )
    assert report.clean


def test_two_blue_invoices_for_one_document() -> None:
    first, second = led(1, no="N1"), led(1, no="N1B", revision=1)
    report = run([erp(1, no="N1B")], [first, second])
    assert classes(report) == [C.DUPLICATE_BLUE]
    assert report.exceptions[0].invoice_nos == ("N1", "N1B")
    # the platform holding two live blue invoices under one document's serial
    one = led(3, no="N3")
    report = run(
        [erp(3, no="N3")],
        [one],
        [P("N3", one.serial), P("N3X", one.serial)],
        known=(frozenset({one.serial}), frozenset({"N3"})),
    )
    assert classes(report) == [C.DUPLICATE_BLUE]
    assert report.exceptions[0].invoice_nos == ("N3", "N3X")


def test_blue_invoice_reversed_in_the_portal_of_a_live_order() -> None:
    report = run([erp(1, no="N1")], [led(1, no="N1")], [P("N1", "S1i0", state="REVERSED")])
    assert classes(report) == [C.REVERSED_NOT_CANCELLED]
    assert "portal" in report.exceptions[0].detail


def test_without_platform_list_its_classes_are_not_judged() -> None:
    report = compare(
        Inputs(
            START,
            END,
            [erp(1, no="N1")],
            [led(1, no="N1")],
            [],
            frozenset(),
            frozenset(),
            {"sales_order": TABLE},
            platform_listed=False,
        )
    )
    assert report.clean


def test_totals_per_class_and_state_are_decimal_sums() -> None:
    cents = Amounts(Decimal("0.10"), Decimal("0.01"), Decimal("0.11"))
    rows = [led(n, no=f"N{n}", amounts=cents) for n in range(1, 11)]
    report = run([], rows)
    total = report.by_class()[C.MISSING_IN_ERP]
    assert total.count == 10
    assert total.amounts == Amounts(Decimal("1.00"), Decimal("0.10"), Decimal("1.10"))
    assert report.by_state["issue/ISSUED"].gross == Decimal("1.10")


def test_renderings_carry_every_exception() -> None:
    report = run([erp(1)], [led(2, no="N2")])
    data = json.loads(to_json(report, exit_code=1))
    assert data["exceptions_total"] == 2 and data["exit_code"] == 1
    assert data["classes"]["missing_in_erp"] == {
        "count": 1,
        "net": "100.00",
        "tax": "13.00",
        "gross": "113.00",
    }
    assert set(data["classes"]) == {c.value for c in ExceptionClass}
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r["class"] for r in rows] == ["missing_in_ledger", "missing_in_erp"]
    assert rows[1]["ledger_gross"] == "113.00"
    table = to_table(report)
    assert "missing_in_erp" in table and "2 exception(s)" in table
    assert "clean: no exceptions" in to_table(run([], []))
