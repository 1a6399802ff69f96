from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.invoice.model import InvoiceKind, LineNature, PriceBasis, ReversalReason, TaxPolicy
from syncd.invoice.taxmath import (
    TAX_ERROR_LIMIT_INVOICE,
    LineInput,
    TaxMathError,
    build_lines,
    build_red_invoice,
    line_tax_error,
    round_money,
    tax_breakdown,
    totals,
)
from syncd.invoice.validation import validate
from tests.unit.invoice_samples import BLUE_NO, blue, line, red_of, with_discount

D = Decimal

EXCL, INCL = PriceBasis.TAX_EXCLUSIVE, PriceBasis.TAX_INCLUSIVE


def one(quantity, price, rate, basis, **extra):
    return build_lines([line("x", quantity, price, rate, **extra)], basis)


# -- examples from the note / wire-format document ---------------------------------


def test_inclusive_180_at_9_percent_splits_into_165_14_and_14_86():
    (ln,) = one("1", "180.00", "0.09", INCL)
    assert (ln.net_amount, ln.tax_amount, ln.gross_amount) == (D("165.14"), D("14.86"), D("180.00"))


def test_inclusive_1_at_13_percent_splits_into_0_88_and_0_12():
    (ln,) = one("1", "1.00", "0.13", INCL)
    assert (ln.net_amount, ln.tax_amount, ln.gross_amount) == (D("0.88"), D("0.12"), D("1.00"))


def test_exclusive_document_example_2_hours_at_82_57():
    (ln,) = one("2", "82.57", "0.09", EXCL)
    assert (ln.net_amount, ln.tax_amount, ln.gross_amount) == (D("165.14"), D("14.86"), D("180.00"))


def test_rounding_is_half_up_not_bankers():
    assert round_money(D("0.125")) == D("0.13")
    assert round_money(D("0.135")) == D("0.14")
    assert round_money(D("-0.125")) == D("-0.13")
    assert str(round_money(D("-0.004"))) == "0.00"  # never negative zero
    (ln,) = one("1", "0.25", "0.1", EXCL)  # tax 0.025 -> 0.03 (banker's would give 0.02)
    assert ln.tax_amount == D("0.03")


def test_exclusive_net_is_rounded_product():
    (ln,) = one("3", "33.3333", "0.06", EXCL)
    assert ln.net_amount == D("100.00")  # 99.9999
    assert ln.tax_amount == D("6.00")


# -- discounts -----------------------------------------------------------------------


def test_discount_becomes_discounted_line_followed_by_discount_line():
    lines = build_lines(
        [line("Laptop", "3", "4999", "0.13", discount_amount=D("300"), spec="X1", unit="台")], EXCL
    )
    assert [ln.nature for ln in lines] == [LineNature.DISCOUNTED, LineNature.DISCOUNT]
    first, disc = lines
    assert (first.net_amount, first.tax_amount, first.gross_amount) == (
        D("14997.00"),
        D("1949.61"),
        D("16946.61"),
    )
    assert (disc.net_amount, disc.tax_amount, disc.gross_amount) == (
        D("-300.00"),
        D("-39.00"),
        D("-339.00"),
    )
    assert disc.name == first.name and disc.tax_code == first.tax_code
    assert disc.tax_rate == first.tax_rate
    # Documented choice: a discount line carries no quantity, unit price, spec or unit.
    assert (disc.quantity, disc.unit_price, disc.spec, disc.unit) == (None, None, None, None)
    assert [ln.line_no for ln in lines] == [1, 2]


def test_inclusive_discount_is_a_gross_amount_split_like_a_line():
    _, disc = build_lines([line("x", "1", "180", "0.09", discount_amount=D("18"))], INCL)
    assert (disc.net_amount, disc.tax_amount, disc.gross_amount) == (
        D("-16.51"),
        D("-1.49"),
        D("-18.00"),
    )


def test_zero_or_sub_cent_discount_adds_no_line():
    for amount in ("0", "0.004"):
        lines = build_lines([line(discount_amount=D(amount))], EXCL)
        assert [ln.nature for ln in lines] == [LineNature.NORMAL]


def test_line_numbers_continue_after_discount_pairs():
    lines = build_lines([line(discount_amount=D(1)), line(), line(discount_amount=D(2))], EXCL)
    assert [ln.line_no for ln in lines] == [1, 2, 3, 4, 5]
    assert [ln.nature.value for ln in lines] == [
        "DISCOUNTED",
        "DISCOUNT",
        "NORMAL",
        "DISCOUNTED",
        "DISCOUNT",
    ]


def test_discounted_invoice_is_valid():
    assert validate(with_discount(EXCL)) == []
    assert validate(with_discount(INCL)) == []


# -- breakdown and totals --------------------------------------------------------------


def test_breakdown_one_entry_per_rate_ascending_and_totals_are_sums():
    lines = build_lines(
        [
            line("a", "1", "10", "0.13"),
            line("b", "1", "10", "0"),
            line("c", "1", "10", "0.06"),
            line("d", "1", "20", "0.13"),
            line("e", "1", "5", "0", tax_policy=TaxPolicy.EXEMPT),
        ],
        EXCL,
    )
    rates = [(s.tax_rate, s.net_amount, s.tax_amount) for s in tax_breakdown(lines)]
    assert rates == [
        (D("0"), D("15.00"), D("0.00")),
        (D("0.06"), D("10.00"), D("0.60")),
        (D("0.13"), D("30.00"), D("3.90")),
    ]
    t = totals(lines)
    assert (t.net_amount, t.tax_amount, t.gross_amount) == (D("55.00"), D("4.50"), D("59.50"))


def test_totals_are_sums_of_rounded_lines_not_rounded_sums():
    lines = build_lines([line("a", "1", "0.05", "0.09")] * 3, EXCL)  # tax 0.0045 each -> 0
    assert totals(lines).tax_amount == D("0.00")  # a rounded sum would give 0.01


# -- invoice-level tax error -------------------------------------------------------------


@pytest.mark.parametrize("basis", [EXCL, INCL])
def test_many_lines_rounding_the_same_way_are_balanced_within_1_27(basis):
    # Each line's tax error is +0.0045 (exclusive); 400 of them would sum to 1.80.
    lines = build_lines([line("bolt", "1", "0.05", "0.09")] * 400, basis)
    total = sum(line_tax_error(ln) for ln in lines)
    assert abs(total) <= TAX_ERROR_LIMIT_INVOICE
    assert all(abs(line_tax_error(ln)) <= D("0.02") for ln in lines)
    if basis is EXCL:
        assert all(ln.net_amount == D("0.05") for ln in lines)
    else:
        assert all(ln.gross_amount == D("0.05") for ln in lines)
    invoice = blue([line("bolt", "1", "0.05", "0.09")] * 400, basis=basis)
    assert validate(invoice) == []


def test_short_invoices_are_never_adjusted():
    lines = build_lines([line("bolt", "1", "0.05", "0.09")] * 200, EXCL)
    assert {ln.tax_amount for ln in lines} == {D("0.00")}


# -- red invoices --------------------------------------------------------------------


def test_red_invoice_negates_amounts_and_quantities_and_keeps_prices():
    original = with_discount()
    red = build_red_invoice(
        original,
        serial="SRED0000001",
        original_invoice_no=BLUE_NO,
        reason=ReversalReason.INVOICING_ERROR,
    )
    assert red.kind is InvoiceKind.RED
    assert red.original_invoice_no == BLUE_NO
    assert red.reversal_reason is ReversalReason.INVOICING_ERROR
    assert red.serial == "SRED0000001"
    assert red.issue_date is None
    for b, r in zip(original.lines, red.lines, strict=True):
        assert r.net_amount == -b.net_amount and r.tax_amount == -b.tax_amount
        assert r.gross_amount == -b.gross_amount
        assert r.unit_price == b.unit_price
        assert r.quantity == (-b.quantity if b.quantity is not None else None)
    assert red.totals.gross_amount == -original.totals.gross_amount
    assert validate(red) == []


def test_red_of_zero_rated_line_has_no_negative_zero_in_json():
    red = red_of(blue([line("x", "1", "10", "0", tax_policy=TaxPolicy.EXEMPT)]))
    assert '"-0' not in red.to_json()
    assert '"tax_amount":"0.00"' in red.to_json()


# -- impossible input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"quantity": 2.0}, "quantity must be a finite Decimal"),
        ({"unit_price": D("NaN")}, "unit_price must be a finite Decimal"),
        ({"tax_rate": D("13")}, "tax_rate must be a fraction"),
        ({"tax_rate": D("-0.01")}, "tax_rate must be a fraction"),
        ({"discount_amount": D("-1")}, "discount_amount must not be negative"),
    ],
)
def test_uncomputable_input_raises_typed_error_naming_the_line(changes, fragment):
    values = {
        "name": "x",
        "tax_code": "1" * 19,
        "quantity": D(1),
        "unit_price": D(1),
        "tax_rate": D("0.13"),
    }
    values.update(changes)
    with pytest.raises(TaxMathError, match=fragment) as err:
        build_lines([line(), LineInput(**values)], EXCL)
    assert err.value.index == 1
    assert str(err.value).startswith("line 2: ")


# -- properties ------------------------------------------------------------------------

rates = st.sampled_from([D(r) for r in ("0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0")])
quantities = st.decimals(
    min_value=D("0.00000001"),
    max_value=D("100000"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
)
prices = st.decimals(
    min_value=D("0.01"), max_value=D("100000"), places=8, allow_nan=False, allow_infinity=False
)
bases = st.sampled_from([EXCL, INCL])


@st.composite
def line_inputs(draw):
    quantity, price, rate = draw(quantities), draw(prices), draw(rates)
    discount = None
    if draw(st.booleans()):
        discount = draw(st.decimals(min_value=0, max_value=quantity * price, places=2))
    policy = draw(st.sampled_from(list(TaxPolicy))) if rate == 0 and draw(st.booleans()) else None
    return LineInput(
        name="item",
        tax_code="1" * 19,
        quantity=quantity,
        unit_price=price,
        tax_rate=rate,
        discount_amount=discount,
        tax_policy=policy,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(line_inputs(), min_size=1, max_size=8), bases)
def test_built_lines_always_meet_line_tolerances(inputs, basis):
    for ln in build_lines(inputs, basis):
        assert ln.net_amount + ln.tax_amount == ln.gross_amount
        assert abs(line_tax_error(ln)) <= D("0.06")
        for amount in (ln.net_amount, ln.tax_amount, ln.gross_amount):
            assert amount == amount.quantize(D("0.01"))
        if ln.quantity is not None and ln.unit_price is not None:
            target = ln.gross_amount if basis is INCL else ln.net_amount
            assert abs(ln.quantity * ln.unit_price - target) <= D("0.01")


@settings(max_examples=300, deadline=None)
@given(quantities, prices, rates)
def test_inclusive_split_recomposes_the_rounded_gross_exactly(quantity, price, rate):
    (ln,) = build_lines([LineInput("x", "1" * 19, quantity, price, rate)], INCL)
    assert ln.net_amount + ln.tax_amount == round_money(quantity * price)
    assert abs(ln.net_amount - ln.gross_amount / (1 + rate)) <= D("0.005")


@settings(max_examples=200, deadline=None)
@given(st.lists(line_inputs(), min_size=1, max_size=8), bases)
def test_totals_and_breakdown_are_sums_of_lines(inputs, basis):
    lines = build_lines(inputs, basis)
    t = totals(lines)
    assert t.net_amount == sum(ln.net_amount for ln in lines)
    assert t.tax_amount == sum(ln.tax_amount for ln in lines)
    assert t.gross_amount == sum(ln.gross_amount for ln in lines)
    assert t.net_amount + t.tax_amount == t.gross_amount
    breakdown = tax_breakdown(lines)
    assert [s.tax_rate for s in breakdown] == sorted({ln.tax_rate for ln in lines})
    assert sum(s.net_amount for s in breakdown) == t.net_amount
    assert sum(s.tax_amount for s in breakdown) == t.tax_amount


@settings(max_examples=100, deadline=None)
@given(st.lists(line_inputs(), min_size=1, max_size=6), bases)
def test_red_is_exactly_minus_blue_and_both_validate(inputs, basis):
    original = blue(inputs, basis=basis)
    red = red_of(original)
    assert red.totals.net_amount == -original.totals.net_amount
    assert red.totals.tax_amount == -original.totals.tax_amount
    assert red.totals.gross_amount == -original.totals.gross_amount
    for b, r in zip(original.tax_breakdown, red.tax_breakdown, strict=True):
        assert (r.tax_rate, r.net_amount, r.tax_amount) == (
            b.tax_rate,
            -b.net_amount,
            -b.tax_amount,
        )
    # A 100 % discount or a sub-cent line has no positive amount left: that
    # is a data error the validator reports for both colours alike.
    blue_codes = {p.code for p in validate(original)}
    red_codes = {p.code for p in validate(red)}
    assert blue_codes == red_codes
    assert blue_codes <= {"LINE_SIGN", "TOTALS_SIGN", "DISCOUNT_TOO_LARGE"}


@pytest.mark.parametrize(
    ("quantity", "price", "rate", "discount", "count"),
    [
        ("0.10981756", "99999.80877376", "0.06", "2.04", 489),
        ("1638.92190329", "819.46097143", "0.05", "33.12", 464),
    ],
)
def test_invoice_tax_error_limit_holds_when_only_discount_lines_carry_the_error(
    quantity, price, rate, discount, count
):
    """Found by the property below: each discounted line leans one way, its discount line
    the other, and the discount lines (never moved) win -- the balancing must then move
    cents on the lines whose own error points the other way."""
    item = LineInput(
        name="item",
        tax_code="1111111111111111111",
        quantity=D(quantity),
        unit_price=D(price),
        tax_rate=D(rate),
        discount_amount=D(discount),
    )
    lines = build_lines([item] * count, PriceBasis.TAX_INCLUSIVE)
    assert abs(sum(line_tax_error(ln) for ln in lines)) <= TAX_ERROR_LIMIT_INVOICE
    assert all(abs(line_tax_error(ln)) <= D("0.02") for ln in lines)
    assert all(ln.net_amount + ln.tax_amount == ln.gross_amount for ln in lines)


@settings(max_examples=40, deadline=None)
@given(st.lists(line_inputs(), min_size=1, max_size=3), st.integers(230, 700), bases)
def test_invoice_tax_error_limit_holds_for_long_invoices(templates, count, basis):
    # Repeating a few lines is the worst case: every copy rounds the same way.
    inputs = (templates * count)[:count]
    lines = build_lines(inputs, basis)
    assert abs(sum(line_tax_error(ln) for ln in lines)) <= TAX_ERROR_LIMIT_INVOICE
    assert all(abs(line_tax_error(ln)) <= D("0.02") for ln in lines)
    assert all(ln.net_amount + ln.tax_amount == ln.gross_amount for ln in lines)


def test_red_of_a_red_invoice_is_refused():
    with pytest.raises(TaxMathError, match="only a blue invoice"):
        build_red_invoice(
            red_of(blue()),
            serial="SX0000000",
            original_invoice_no=BLUE_NO,
            reason=ReversalReason.ALLOWANCE,
        )
