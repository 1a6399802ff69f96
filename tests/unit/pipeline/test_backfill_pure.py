"""The backfill's pure parts: the --where condition (parsing, compiling to bound SQL), the
decision on a row as it is now, pacing, partition choice and the progress line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.commands.backfill import bar, progress_line
from syncd.config.conditions import Condition
from syncd.erp.backfill import (
    WhereError,
    canonical_condition,
    compile_where,
    cursor_of,
    parse_where,
    row_values,
)
from syncd.identity import DocumentKind, serial_for
from syncd.pipeline.backfill import Pacer, Planned, Totals, choose_partition, page_size_for
from syncd.rules.backfill import decide_current
from syncd.rules.decide import Action, decide
from tests.unit.config_helpers import demo_config, order_row

TABLE = sa.Table(
    "sales_order",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("status", sa.Text),
    sa.Column("total_amount", sa.Numeric(18, 2)),
    sa.Column("order_date", sa.Date),
    sa.Column("paid", sa.Boolean),
    schema="erp",
)


def _sql(text: str) -> tuple[str, dict[str, Any]]:
    compiled = compile_where(parse_where(text), TABLE).compile(dialect=postgresql.dialect())
    return str(compiled), dict(compiled.params)


# --------------------------------------------------------------------------- parsing


def test_parse_where_reads_the_condition_language() -> None:
    c = parse_where("{all: [{column: status, equals: CONFIRMED}, {column: id, at_least: 10}]}")
    assert c.all_ is not None and len(c.all_) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{column: status", "--where: "),
        ("status = 'x'", "expected a condition mapping"),
        ("{colum: status, equals: X}", "colum"),
        ("{column: status}", "exactly one of"),
        ("{column: total_amount, above: lots}", "above"),
        ("[1, 2]", "expected a condition mapping"),
    ],
)
def test_parse_where_errors_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(WhereError) as err:
        parse_where(text)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("--where")


def test_canonical_condition_is_stable_over_spelling() -> None:
    a = parse_where("{column: status, equals: CONFIRMED}")
    b = parse_where("column: status\nequals: CONFIRMED\n")
    assert canonical_condition(a) == canonical_condition(b)


# --------------------------------------------------------------------------- compiling


def test_values_are_bound_never_inlined() -> None:
    hostile = "x'); DROP TABLE erp.sales_order; --"
    sql, params = _sql("{column: status, equals: " + repr(hostile) + "}")
    assert "DROP" not in sql
    assert hostile in params.values()


def test_comparisons_and_combinators() -> None:
    sql, params = _sql(
        "{any: [{column: total_amount, above: 100.5}, {not: {column: status, in: [A, B, null]}}]}"
    )
    assert " OR " in sql and "NOT" in sql and "IS NULL" in sql
    assert Decimal("100.5") in params.values()
    assert ["A", "B"] in params.values()


def test_literals_take_the_column_type() -> None:
    sql, params = _sql(
        "{all: [{column: order_date, equals: '2026-07-01'}, {column: paid, equals: true}]}"
    )
    assert date(2026, 7, 1) in params.values()
    assert "paid = true" in sql


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{column: nope, equals: 1}", "no column 'nope'"),
        ("{changed: [status]}", "`changed`"),
        ("{column: status, row: before, equals: X}", "`row: before`"),
        ("{column: status, above: 3}", "not a number"),
        ("{column: id, equals: abc}", "does not fit column id"),
        ("{column: order_date, equals: yesterday}", "does not fit column order_date"),
        ("{column: invoice.gross, above: 1}", "built invoice"),
    ],
)
def test_compile_errors_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(WhereError) as err:
        compile_where(parse_where(text), TABLE)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- values


def test_row_values_type_as_the_decoder_does() -> None:
    import uuid

    u = uuid.uuid4()
    out = row_values({"a": 1.5, "b": u, "c": {"k": 1}, "d": memoryview(b"x"), "e": None})
    assert out == {"a": Decimal("1.5"), "b": str(u), "c": '{"k": 1}', "d": b"x", "e": None}


def test_cursor_of_is_json_safe() -> None:
    assert cursor_of({"id": Decimal("7.5"), "no": "A"}, ["id", "no"]) == ["7.5", "A"]


# --------------------------------------------------------------------------- deciding


def _read(row: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(
        RecordPosition("t", 0, -1), Op.READ, "erp.sales_order", None, None, row, 1, True
    )


def test_a_confirmed_row_is_issued_under_the_cdc_identity_and_serial() -> None:
    doc = demo_config().documents["sales_order"]
    row = order_row(status="CONFIRMED")
    now = decide_current(_read(row), doc)
    assert now.action is Action.ISSUE
    update = ChangeEvent(
        RecordPosition("t", 1, 5),
        Op.UPDATE,
        "erp.sales_order",
        None,
        order_row(status="DRAFT"),
        row,
        1,
        False,
    )
    cdc = decide(update, doc)
    assert cdc.action is Action.ISSUE
    assert now.identity == cdc.identity
    assert now.identity is not None and serial_for(now.identity) == serial_for(cdc.identity)  # type: ignore[arg-type]


def test_a_cancelled_row_asks_for_its_reversal() -> None:
    doc = demo_config().documents["sales_order"]
    now = decide_current(_read(order_row(status="CANCELLED", invoice_no="INV1")), doc)
    assert now.action is Action.REVERSE
    assert now.identity is not None and now.identity.kind is DocumentKind.REVERSAL


@pytest.mark.parametrize(
    ("changes", "action", "words"),
    [
        ({"status": "DRAFT"}, Action.IGNORE, "does not qualify"),
        ({"status": "CONFIRMED", "invoice_no": "N1"}, Action.IGNORE, "already invoiced"),
        ({"status": "CONFIRMED", "id": None}, Action.UNDECIDED, "key column id"),
    ],
)
def test_rows_not_to_issue(changes: dict[str, Any], action: Action, words: str) -> None:
    doc = demo_config().documents["sales_order"]
    decision = decide_current(_read(order_row(**changes)), doc)
    assert decision.action is action
    assert words in decision.reason


def test_decide_current_refuses_a_change() -> None:
    doc = demo_config().documents["sales_order"]
    event = ChangeEvent(
        RecordPosition("t", 0, 1), Op.UPDATE, "erp.sales_order", None, None, order_row(), 1, False
    )
    with pytest.raises(ValueError, match="op r"):
        decide_current(event, doc)


# --------------------------------------------------------------------------- pacing, partitions


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_holds_the_average_rate() -> None:
    clock = _Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(10):
        pacer.wait(5)
    # 50 documents at 10/s: about 5 s (one second of burst allowed at the start)
    assert 4.0 <= clock.now - start <= 5.0 + 1e-9


def test_pacer_idle_time_earns_at_most_one_second() -> None:
    clock = _Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    pacer.wait(30)
    assert clock.slept and clock.slept[-1] == pytest.approx(2.0)


def test_pacer_refuses_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        Pacer(0)


@given(st.text(max_size=30), st.lists(st.integers(0, 63), min_size=1, max_size=8, unique=True))
def test_choose_partition_is_stable_and_held(key: str, partitions: list[int]) -> None:
    chosen = choose_partition(key, partitions)
    assert chosen in partitions
    assert chosen == choose_partition(key, list(reversed(partitions)))


def test_choose_partition_without_known_partitions_is_zero() -> None:
    assert choose_partition("k", []) == 0


def test_page_size_follows_the_rate() -> None:
    assert page_size_for(1) == 10
    assert page_size_for(50) == 50
    assert page_size_for(10_000) == 500


# --------------------------------------------------------------------------- totals, progress


def test_totals_sum_decimals_per_action() -> None:
    t = Totals()
    t.add(
        [
            Planned(
                {"id": 1},
                "issue",
                "r",
                "S1",
                "READY",
                Decimal("1.10"),
                Decimal("0.14"),
                Decimal("1.24"),
            ),
            Planned(
                {"id": 2},
                "issue",
                "r",
                "S2",
                "READY",
                Decimal("2.20"),
                Decimal("0.29"),
                Decimal("2.49"),
            ),
            Planned(
                {"id": 3},
                "reverse",
                "r",
                "S3",
                "REVERSAL_PENDING",
                Decimal("-1"),
                Decimal("0"),
                Decimal("-1"),
            ),
            Planned({"id": 4}, "skip", "already"),
        ]
    )
    d = t.as_dict()
    assert d["scanned"] == 4
    assert d["counts"] == {"issue": 2, "reverse": 1, "invalid": 0, "skip": 1}
    assert d["amounts"]["issue"]["gross"] == Decimal("3.73")
    assert d["amounts"]["reverse"]["gross"] == Decimal("-1")
    assert t.ledger_counts() == {
        "scanned": 4,
        "issued": 2,
        "reversed": 1,
        "skipped": 1,
        "invalid": 0,
    }


def test_progress_line_and_bar() -> None:
    line = progress_line(120, 480, {"issue": 100, "skip": 20}, 6.0)
    assert line.startswith("120/480 rows (25%), issue 100, reverse 0, invalid 0, skip 20")
    assert "20.0 rows/s" in line and "~18 s left" in line
    assert bar(5, 10, width=10) == "[#####.....]"
    assert bar(0, 0, width=4) == "[####]"


def test_condition_model_is_the_configs() -> None:
    assert isinstance(parse_where("{column: id, equals: 1}"), Condition)


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_progress_is_a_bar_on_a_terminal_and_periodic_lines_otherwise() -> None:
    from syncd.commands.backfill import PROGRESS_EVERY, _Progress

    clock = _Clock()
    totals = Totals()
    totals.add([Planned({"id": 1}, "issue", "r")])
    tty = _Stream(True)
    bar_progress = _Progress(4, tty, clock)  # type: ignore[arg-type]
    clock.now += 1
    bar_progress.update(totals)
    bar_progress.close(totals)
    assert tty.text.startswith("\r[") and "1/4 rows (25%)" in tty.text and tty.text.endswith("\n")

    pipe = _Stream(False)
    lines = _Progress(4, pipe, clock)  # type: ignore[arg-type]
    lines.update(totals)  # too soon: nothing
    assert pipe.text == ""
    clock.now += PROGRESS_EVERY
    lines.update(totals)
    assert pipe.text.startswith("syncd backfill: 1/4 rows") and pipe.text.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--document", "nope", "--where", "{column: id, equals: 1}"], "no document type 'nope'"),
        (["--document", "sales_order", "--where", "{column: id}"], "--where"),
        (
            ["--document", "sales_order", "--where", "{column: id, equals: 1}", "--rate", "0"],
            "--rate",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    extra: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli import main
    from tests.unit.config_helpers import DEMO

    code = main(["backfill", "-c", str(DEMO), "--reason", "test", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and err.count("\n") == 1
