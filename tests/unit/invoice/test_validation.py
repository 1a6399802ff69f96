import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from syncd.invoice.model import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceType,
    LineNature,
    PriceBasis,
    ReversalReason,
    TaxPolicy,
    TaxSubtotal,
    Totals,
)
from syncd.invoice.taxmath import build_lines, tax_breakdown, totals
from syncd.invoice.validation import PROBLEM_CODES, Problem, validate
from tests.unit.invoice_samples import (
    OTHER_VALID_TAX_ID,
    blue,
    buyer,
    line,
    multi_rate,
    red_of,
    seller,
    with_discount,
)

D = Decimal

DOC = Path(__file__).resolve().parents[3] / "docs" / "invoice-format.md"


def relined(invoice: Invoice, lines: list[InvoiceLine]) -> Invoice:
    """The invoice with other lines and consistent breakdown/totals (isolates line rules)."""
    return invoice.model_copy(
        update={
            "lines": tuple(lines),
            "tax_breakdown": tuple(tax_breakdown(lines)),
            "totals": totals(lines),
        }
    )


def change_line(invoice: Invoice, index: int, **changes) -> Invoice:
    lines = list(invoice.lines)
    lines[index] = lines[index].model_copy(update=changes)
    return relined(invoice, lines)


def only(invoice: Invoice, code: str) -> Problem:
    problems = validate(invoice)
    assert {p.code for p in problems} <= PROBLEM_CODES
    assert [p.code for p in problems] == [code], problems
    return problems[0]


def codes(invoice: Invoice) -> set[str]:
    found = {p.code for p in validate(invoice)}
    assert found <= PROBLEM_CODES
    return found


# -- valid invoices ----------------------------------------------------------------


@pytest.mark.parametrize("basis", list(PriceBasis))
def test_built_invoices_are_valid(basis):
    assert validate(blue(basis=basis)) == []
    assert validate(with_discount(basis)) == []
    assert validate(red_of(with_discount(basis))) == []


def test_multi_rate_invoice_is_valid():
    assert validate(multi_rate()) == []
    assert validate(red_of(multi_rate())) == []


def test_document_example_is_valid_except_for_its_placeholder_tax_ids():
    text = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S).group(1)
    problems = validate(Invoice.model_validate_json(text))
    # The example's tax IDs (as first written) fail the USCC check character.
    assert {p.code for p in problems} <= {"SELLER_TAX_ID_INVALID", "BUYER_TAX_ID_INVALID"}
    assert all("check character" in p.message for p in problems)


def test_validate_never_raises_and_str_shows_path():
    broken = blue().model_copy(
        update={
            "lines": (),
            "tax_breakdown": (),
            "totals": Totals(net_amount=D("1.001"), tax_amount=D(0), gross_amount=D(5)),
        }
    )
    problems = validate(broken)
    assert "NO_LINES" in {p.code for p in problems}
    assert str(problems[0]).startswith(problems[0].path + ": ")


# -- rates, codes, policies --------------------------------------------------------


def test_rate_not_in_the_allowed_list():
    invoice = blue([line(rate="0.17")])
    p = only(invoice, "TAX_RATE_NOT_ALLOWED")
    assert p.path == "lines[0].tax_rate"
    assert p.message.startswith("line 1: tax rate 17 % is not allowed")


@pytest.mark.parametrize("rate", ["0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0"])
def test_every_allowed_rate_is_accepted(rate):
    assert validate(blue([line(rate=rate)])) == []


def test_tax_policy_only_with_zero_rate():
    p = only(blue([line(rate="0.06", tax_policy=TaxPolicy.EXEMPT)]), "TAX_POLICY_RATE")
    assert p.path == "lines[0].tax_policy"
    assert "requires a 0 % rate" in p.message


def test_tax_code_must_be_19_digits_with_the_notes_message():
    invoice = blue([line(), line(), line(tax_code="30402")])
    p = only(invoice, "TAX_CODE_FORMAT")
    assert p.path == "lines[2].tax_code"
    assert p.message == "line 3: tax classification code '30402' must be 19 digits"
    assert codes(blue([line(tax_code="304020100000000000X")])) == {"TAX_CODE_FORMAT"}


# -- precision ------------------------------------------------------------------------


def test_quantity_and_unit_price_at_most_8_decimals():
    assert validate(blue([line(quantity="1.12345678", unit_price="10")])) == []
    p = only(blue([line(quantity="1.123456789", unit_price="10")]), "QUANTITY_PRECISION")
    assert p.path == "lines[0].quantity"
    p = only(blue([line(quantity="1", unit_price="10.123456789")]), "UNIT_PRICE_PRECISION")
    assert "more than 8 decimal places" in p.message


def test_trailing_zeros_do_not_count_as_decimals():
    assert validate(blue([line(quantity="2.0000000000", unit_price="82.5700000000")])) == []


def test_amounts_must_be_whole_cents():
    invoice = change_line(blue(), 0, net_amount=D("165.141"), gross_amount=D("180.001"))
    assert "AMOUNT_PRECISION" in codes(invoice)
    p = next(p for p in validate(invoice) if p.code == "AMOUNT_PRECISION")
    assert p.path == "lines[0].net_amount"
    assert "whole number of cents" in p.message


def test_totals_and_breakdown_amounts_must_be_whole_cents():
    inv = blue()
    bad = inv.model_copy(
        update={
            "totals": inv.totals.model_copy(update={"tax_amount": D("14.855")}),
            "tax_breakdown": (
                inv.tax_breakdown[0].model_copy(update={"net_amount": D("165.145")}),
            ),
        }
    )
    paths = {p.path for p in validate(bad) if p.code == "AMOUNT_PRECISION"}
    assert paths == {"totals.tax_amount", "tax_breakdown[0].net_amount"}


# -- line arithmetic ------------------------------------------------------------------


def test_quantity_times_price_within_one_cent_of_net():
    ok = change_line(blue(), 0, unit_price=D("82.575"))  # 165.15 vs 165.14
    assert validate(ok) == []
    bad = change_line(blue(), 0, unit_price=D("82.58"))  # 165.16 vs 165.14
    p = only(bad, "LINE_AMOUNT_MISMATCH")
    assert p.path == "lines[0].net_amount"
    assert "quantity 2 × unit price 82.58 = 165.16" in p.message


def test_tax_inclusive_lines_compare_against_gross():
    invoice = blue([line("x", "1", "180.00", "0.09")], basis=PriceBasis.TAX_INCLUSIVE)
    assert validate(invoice) == []
    # The same line read as tax-exclusive fails: 1 x 180 != 165.14.
    p = only(
        invoice.model_copy(update={"price_basis": PriceBasis.TAX_EXCLUSIVE}), "LINE_AMOUNT_MISMATCH"
    )
    assert p.path == "lines[0].net_amount"
    bad = change_line(invoice, 0, unit_price=D("180.02"))
    assert only(bad, "LINE_AMOUNT_MISMATCH").path == "lines[0].gross_amount"


def test_tax_within_6_cents_of_net_times_rate():
    ok = change_line(blue(), 0, tax_amount=D("14.92"), gross_amount=D("180.06"))  # 14.8626
    assert validate(ok) == []
    bad = change_line(blue(), 0, tax_amount=D("14.93"), gross_amount=D("180.07"))
    p = only(bad, "LINE_TAX_MISMATCH")
    assert p.path == "lines[0].tax_amount"
    assert "9 %" in p.message


def test_zero_rate_line_has_no_tax():
    inv = change_line(blue([line(rate="0")]), 0, tax_amount=D("0.01"), gross_amount=D("165.15"))
    p = only(inv, "ZERO_RATE_TAX")
    assert p.message == "line 1: a 0 % line cannot carry tax (got 0.01)"


def test_net_plus_tax_must_equal_gross_exactly():
    problems = validate(change_line(blue(), 0, gross_amount=D("180.01")))
    assert [(p.code, p.path) for p in problems] == [
        ("LINE_GROSS_MISMATCH", "lines[0].gross_amount"),
        ("TOTALS_GROSS_MISMATCH", "totals.gross_amount"),  # the totals are sums of lines
    ]


def test_invoice_tax_error_sum_within_1_27():
    lines = build_lines([line("bolt", "1", "0.05", "0.09")] * 250, PriceBasis.TAX_EXCLUSIVE)
    assert validate(relined(blue(), lines)) == []  # 250 x 0.0045 = 1.125
    more = lines + [
        ln.model_copy(update={"line_no": 251 + i})
        for i, ln in enumerate(
            build_lines([line("bolt", "1", "0.05", "0.09")] * 50, PriceBasis.TAX_EXCLUSIVE)
        )
    ]
    # Force the unbalanced formula (what a naive builder would send): all taxes 0.00.
    more = [
        ln.model_copy(update={"tax_amount": D("0.00"), "gross_amount": ln.net_amount})
        for ln in more
    ]
    p = only(relined(blue(), more), "INVOICE_TAX_ERROR")
    assert "1.35" in p.message  # 300 x 0.0045


# -- quantity / price presence and signs ------------------------------------------------


def test_quantity_and_price_both_or_neither():
    assert validate(change_line(blue(), 0, quantity=None, unit_price=None)) == []
    p = only(change_line(blue(), 0, unit_price=None), "QUANTITY_PRICE_PAIR")
    assert p.path == "lines[0].unit_price"


def test_blue_lines_must_be_positive():
    neg = change_line(
        blue(),
        0,
        quantity=D(-2),
        net_amount=D("-165.14"),
        tax_amount=D("-14.86"),
        gross_amount=D("-180.00"),
    )
    assert {"LINE_SIGN", "QUANTITY_SIGN", "TOTALS_SIGN"} <= codes(neg)
    p = next(p for p in validate(neg) if p.code == "LINE_SIGN")
    assert "on a blue invoice the amounts of a line must be positive" in p.message


def test_unit_price_must_be_positive():
    inv = change_line(blue(), 0, quantity=D(-2), unit_price=D("-82.57"))
    assert "UNIT_PRICE_SIGN" in codes(inv)


def test_zero_line_is_rejected():
    assert "LINE_SIGN" in codes(blue([line(quantity="1", unit_price="0.001"), line()]))


# -- discount lines ---------------------------------------------------------------------


def discount_invoice() -> Invoice:
    return with_discount()


def test_discount_line_must_follow_its_discounted_line():
    inv = discount_invoice()
    swapped = [inv.lines[1], inv.lines[0], inv.lines[2]]
    renumbered = [ln.model_copy(update={"line_no": i + 1}) for i, ln in enumerate(swapped)]
    found = codes(relined(inv, renumbered))
    assert {"DISCOUNT_ORPHAN", "DISCOUNT_MISSING"} <= found


def test_discounted_line_without_discount_line():
    inv = discount_invoice()
    lines = [inv.lines[0], inv.lines[2].model_copy(update={"line_no": 2})]
    p = only(relined(inv, lines), "DISCOUNT_MISSING")
    assert p.path == "lines[0].nature"


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Other"), ("tax_code", "1090101000000000001"), ("tax_policy", TaxPolicy.EXEMPT)],
)
def test_discount_line_must_match_name_code_and_policy(field, value):
    inv = blue([line(rate="0", tax_policy=TaxPolicy.ZERO_RATE, discount_amount=D(5))])
    assert validate(inv) == []
    p = only(change_line(inv, 1, **{field: value}), "DISCOUNT_MISMATCH")
    assert p.path == f"lines[1].{field}"


def test_discount_line_must_match_rate():
    inv = change_line(
        discount_invoice(), 1, tax_rate=D("0.09"), tax_amount=D("-27.00"), gross_amount=D("-327.00")
    )
    assert only(inv, "DISCOUNT_MISMATCH").path == "lines[1].tax_rate"


def test_discount_line_must_be_negative_on_blue():
    inv = change_line(
        discount_invoice(),
        1,
        net_amount=D("300.00"),
        tax_amount=D("39.00"),
        gross_amount=D("339.00"),
    )
    p = only(inv, "LINE_SIGN")
    assert "amounts of a discount line must be negative" in p.message


def test_discount_not_larger_than_the_discounted_line():
    inv = discount_invoice()
    first = inv.lines[0]
    too_big = change_line(
        inv,
        1,
        net_amount=-first.net_amount - D("0.01"),
        tax_amount=-first.tax_amount,
        gross_amount=-first.gross_amount - D("0.01"),
    )
    p = only(too_big, "DISCOUNT_TOO_LARGE")
    assert p.path == "lines[1].net_amount"
    full = change_line(
        inv,
        1,
        net_amount=-first.net_amount,
        tax_amount=-first.tax_amount,
        gross_amount=-first.gross_amount,
    )
    assert validate(full) == []


def test_discount_line_has_no_quantity_or_price():
    inv = change_line(discount_invoice(), 1, quantity=D(1), unit_price=D(300))
    assert "DISCOUNT_QUANTITY" in codes(inv)


# -- breakdown and totals -----------------------------------------------------------------


def test_breakdown_must_match_lines():
    inv = multi_rate()
    wrong = list(inv.tax_breakdown)
    wrong[1] = wrong[1].model_copy(update={"tax_amount": wrong[1].tax_amount + D("0.01")})
    p = only(inv.model_copy(update={"tax_breakdown": tuple(wrong)}), "BREAKDOWN_MISMATCH")
    assert p.path == "tax_breakdown[1]"
    assert "the sums of the lines" in p.message


def test_breakdown_must_be_ascending_and_complete():
    inv = multi_rate()
    reversed_ = inv.model_copy(update={"tax_breakdown": tuple(reversed(inv.tax_breakdown))})
    assert codes(reversed_) == {"BREAKDOWN_ORDER"}
    missing = inv.model_copy(update={"tax_breakdown": inv.tax_breakdown[1:]})
    assert codes(missing) == {"BREAKDOWN_MISMATCH"}
    extra = inv.model_copy(
        update={
            "tax_breakdown": (
                *inv.tax_breakdown,
                TaxSubtotal(tax_rate=D("0.05"), net_amount=D(0), tax_amount=D(0)),
            )
        }
    )
    assert {"BREAKDOWN_MISMATCH", "BREAKDOWN_ORDER"} == codes(extra)


def test_totals_must_be_sums_of_lines():
    inv = blue()
    bad = inv.model_copy(
        update={
            "totals": Totals(
                net_amount=D("165.15"), tax_amount=D("14.85"), gross_amount=D("180.00")
            )
        }
    )
    problems = validate(bad)
    assert {(p.code, p.path) for p in problems} == {
        ("TOTALS_MISMATCH", "totals.net_amount"),
        ("TOTALS_MISMATCH", "totals.tax_amount"),
    }
    assert problems[0].message == "total amount is 165.15 but the lines add up to 165.14"


def test_totals_gross_is_net_plus_tax():
    inv = blue()
    bad = inv.model_copy(
        update={"totals": inv.totals.model_copy(update={"gross_amount": D("180.01")})}
    )
    assert codes(bad) == {"TOTALS_MISMATCH", "TOTALS_GROSS_MISMATCH"}


def test_line_count_limits():
    assert only(relined(blue(), []), "NO_LINES").path == "lines"
    lines = build_lines([line("x", "1", "1", "0")] * 2001, PriceBasis.TAX_EXCLUSIVE)
    assert only(relined(blue(), lines), "TOO_MANY_LINES").message.startswith(
        "the invoice has 2001 lines"
    )
    assert validate(relined(blue(), lines[:2000])) == []


def test_line_numbers_are_sequential():
    p = only(change_line(blue([line(), line()]), 1, line_no=5), "LINE_NO")
    assert p.path == "lines[1].line_no"


# -- parties and tax IDs --------------------------------------------------------------------


def test_buyer_tax_id_checksum():
    p = only(blue(buyer=buyer(tax_id="91110108MA01ABCD2X")), "BUYER_TAX_ID_INVALID")
    assert p.path == "buyer.tax_id"
    assert "check character does not match" in p.message
    assert "18 characters" in only(blue(buyer=buyer(tax_id="9111")), "BUYER_TAX_ID_INVALID").message


def test_tax_id_must_be_written_compactly():
    p = only(blue(buyer=buyer(tax_id=OTHER_VALID_TAX_ID.lower())), "BUYER_TAX_ID_INVALID")
    assert "without spaces" in p.message


def test_buyer_tax_id_mandatory_for_special_invoices():
    p = only(blue(buyer=buyer(tax_id=None)), "BUYER_TAX_ID_REQUIRED")
    assert "special VAT invoice" in p.message


def test_natural_person_may_omit_tax_id_on_ordinary_invoice():
    person = buyer(tax_id=None, natural_person=True, name="Zhang San")
    assert validate(blue(buyer=person, invoice_type=InvoiceType.ORDINARY)) == []
    company = buyer(tax_id=None)
    assert codes(blue(buyer=company, invoice_type=InvoiceType.ORDINARY)) == {
        "BUYER_TAX_ID_REQUIRED"
    }


def test_natural_person_tax_id_checked_when_present():
    bad = buyer(tax_id="91110108MA01ABCD2X", natural_person=True)
    assert codes(blue(buyer=bad, invoice_type=InvoiceType.ORDINARY)) == {"BUYER_TAX_ID_INVALID"}
    id_card = "11010519491231002" + ric.calc_check_digit("11010519491231002?")
    person = buyer(tax_id=id_card, natural_person=True)
    assert validate(blue(buyer=person, invoice_type=InvoiceType.ORDINARY)) == []


def test_special_invoice_not_for_natural_persons():
    person = buyer(natural_person=True)
    assert codes(blue(buyer=person)) == {"SPECIAL_NATURAL_PERSON"}


def test_seller_tax_id_must_be_present_and_valid():
    no_id = seller().model_copy(update={"tax_id": None})
    assert only(blue(seller=no_id), "SELLER_TAX_ID_MISSING").path == "seller.tax_id"
    bad = seller().model_copy(update={"tax_id": "91310115MA1K4PLN8E"})
    assert only(blue(seller=bad), "SELLER_TAX_ID_INVALID").path == "seller.tax_id"


def test_buyer_email_format():
    assert only(blue(buyer=buyer(email="not-an-address")), "BUYER_EMAIL_FORMAT")


# -- lengths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (lambda: blue(buyer=buyer(name="B" * 101)), "buyer.name"),
        (
            lambda: blue(
                seller=seller().model_copy(update={"address": "A" * 90, "phone": "1" * 11})
            ),
            "seller.address",
        ),
        (lambda: blue(buyer=buyer(bank_name="B" * 50, bank_account="1" * 51)), "buyer.bank_name"),
        (lambda: blue([line(name="N" * 101)]), "lines[0].name"),
        (lambda: blue([line(spec="S" * 41)]), "lines[0].spec"),
        (lambda: blue([line(unit="U" * 41)]), "lines[0].unit"),
        (lambda: blue(remark="R" * 201), "remark"),
        (lambda: blue().model_copy(update={"drawer": "D" * 21}), "drawer"),
    ],
)
def test_field_length_limits(build, path):
    p = only(build(), "FIELD_TOO_LONG")
    assert p.path == path
    assert "at most" in p.message


def test_limits_count_characters_not_bytes():
    assert validate(blue(buyer=buyer(name="测" * 100))) == []


def test_empty_names_are_reported():
    assert codes(blue(buyer=buyer(name=" "))) == {"PARTY_NAME_MISSING"}
    assert codes(blue([line(name="")])) == {"LINE_NAME_MISSING"}


# -- red / blue header rules ---------------------------------------------------------------


def test_red_needs_20_digit_original_number_and_reason():
    red = red_of(blue())
    assert validate(red) == []
    assert (
        only(red.model_copy(update={"original_invoice_no": None}), "RED_ORIGINAL_MISSING").path
        == "original_invoice_no"
    )
    p = only(red.model_copy(update={"original_invoice_no": "0442"}), "RED_ORIGINAL_FORMAT")
    assert "must be 20 digits" in p.message
    assert (
        only(red.model_copy(update={"reversal_reason": None}), "RED_REASON_MISSING").path
        == "reversal_reason"
    )


def test_red_amounts_must_be_negative():
    as_red = blue().model_copy(
        update={
            "kind": InvoiceKind.RED,
            "original_invoice_no": "1" * 20,
            "reversal_reason": ReversalReason.ALLOWANCE,
        }
    )
    found = codes(as_red)
    assert {"LINE_SIGN", "QUANTITY_SIGN", "TOTALS_SIGN"} == found
    p = next(p for p in validate(as_red) if p.code == "TOTALS_SIGN")
    assert "red invoice must be negative" in p.message


def test_red_discount_lines_are_positive():
    red = red_of(with_discount())
    assert red.lines[1].nature is LineNature.DISCOUNT and red.lines[1].net_amount > 0
    assert validate(red) == []


def test_blue_must_not_carry_reversal_fields():
    inv = blue().model_copy(
        update={"original_invoice_no": "1" * 20, "reversal_reason": ReversalReason.ALLOWANCE}
    )
    assert codes(inv) == {"BLUE_HAS_ORIGINAL", "BLUE_HAS_REASON"}


def test_serial_and_currency_format():
    assert codes(blue().model_copy(update={"serial": "s-1"})) == {"SERIAL_FORMAT"}
    assert codes(blue().model_copy(update={"currency": "rmb"})) == {"CURRENCY_FORMAT"}


# -- robustness: validate reports, it never raises ------------------------------------------

amounts = st.one_of(
    *(
        st.decimals(
            min_value=D(-10) ** 15 + 1,
            max_value=D(10) ** 15 - 1,
            places=p,
            allow_nan=False,
            allow_infinity=False,
        )
        for p in (0, 2, 3, 8, 20)
    )
)


@st.composite
def arbitrary_lines(draw):
    return InvoiceLine(
        line_no=draw(st.integers(-5, 5000)),
        nature=draw(st.sampled_from(list(LineNature))),
        name=draw(st.text(max_size=120)),
        tax_code=draw(st.text(max_size=25)),
        spec=draw(st.none() | st.text(max_size=50)),
        unit=draw(st.none() | st.text(max_size=5)),
        quantity=draw(st.none() | amounts),
        unit_price=draw(st.none() | amounts),
        net_amount=draw(amounts),
        tax_rate=draw(st.sampled_from([D("0.13"), D("0"), D("0.17"), D("-1"), D("1")]) | amounts),
        tax_amount=draw(amounts),
        gross_amount=draw(amounts),
        tax_policy=draw(st.none() | st.sampled_from(list(TaxPolicy))),
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(arbitrary_lines(), max_size=5),
    st.sampled_from(list(InvoiceKind)),
    st.sampled_from(list(InvoiceType)),
    st.sampled_from(list(PriceBasis)),
    st.none() | st.text(max_size=25),
    st.none() | st.text(max_size=20),
    amounts,
)
def test_validate_never_raises_on_arbitrary_data(
    lines, kind, itype, basis, original, tax_id, total
):
    inv = blue().model_copy(
        update={
            "lines": tuple(lines),
            "kind": kind,
            "invoice_type": itype,
            "price_basis": basis,
            "original_invoice_no": original,
            "buyer": buyer(tax_id=tax_id),
            "totals": Totals(net_amount=total, tax_amount=total, gross_amount=total),
            "tax_breakdown": (TaxSubtotal(tax_rate=total, net_amount=total, tax_amount=total),),
        }
    )
    problems = validate(inv)
    assert all(isinstance(p, Problem) and p.message for p in problems)
    assert {p.code for p in problems} <= PROBLEM_CODES
    assert "INTERNAL" not in {p.code for p in problems}
