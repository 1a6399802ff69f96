"""The sandbox platform's own rule checks (pure)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import uscc

from syncd_sandbox.faults import TokenBucket
from syncd_sandbox.rules import check_invoice, negate_amount, uscc_is_valid
from tests import sandbox_samples as samples

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def codes(doc: object) -> set[str]:
    return {v.code for v in check_invoice(doc, today=date(2026, 11, 27))}


def test_the_sample_invoice_is_acceptable():
    assert codes(samples.invoice()) == set()
    assert codes(samples.invoice(invoice_type="SPECIAL")) == set()


@given(st.text(alphabet=ALPHABET, min_size=17, max_size=17).filter(lambda s: s[:8].isdigit()))
def test_uscc_check_agrees_with_stdnum(body: str):
    # stdnum is an independent implementation of GB 32100-2015
    for check in ALPHABET:
        assert uscc_is_valid(body + check) == uscc.is_valid(body + check)


def test_uscc_known_values():
    assert uscc_is_valid("91110000600037341L")
    assert uscc_is_valid(samples.VALID_BUYER_USCC)
    assert not uscc_is_valid("91110000600037341M")
    assert not uscc_is_valid("9111000060003734")


def test_ordinary_invoice_to_natural_person_needs_no_tax_id():
    doc = samples.invoice()
    doc["buyer"].update(tax_id=None, natural_person=True)
    assert codes(doc) == set()
    doc["buyer"]["natural_person"] = False
    assert codes(doc) == {"MISSING_BUYER_TAX_ID"}


def test_special_invoice_refuses_natural_person():
    doc = samples.invoice(invoice_type="SPECIAL")
    doc["buyer"]["natural_person"] = True
    assert "SPECIAL_FOR_NATURAL_PERSON" in codes(doc)


def test_all_allowed_rates_pass_and_others_fail():
    for rate in ("0.13", "0.09", "0.06", "0.05", "0.03", "0.01"):
        assert codes(samples.invoice(lines=[samples.line("x", "1", "10.00", rate)])) == set()
    zero = samples.line("x", "1", "10.00", "0")
    zero["tax_policy"] = "EXEMPT"
    assert codes(samples.invoice(lines=[zero])) == set()
    assert codes(samples.invoice(lines=[samples.line("x", "1", "10.00", "0.17")])) == {
        "INVALID_TAX_RATE"
    }


def test_tax_policy_needs_rate_zero():
    ln = samples.line("x", "1", "10.00", "0.13")
    ln["tax_policy"] = "EXEMPT"
    assert "INVALID_TAX_POLICY" in codes(samples.invoice(lines=[ln]))


def test_tax_inclusive_lines_compare_price_with_gross():
    ln = samples.line("x", "1", "165.14", "0.09")  # net 165.14, tax 14.86, gross 180.00
    ln["unit_price"] = "180.00"
    doc = samples.invoice(lines=[ln], price_basis="TAX_INCLUSIVE")
    assert codes(doc) == set()
    doc["price_basis"] = "TAX_EXCLUSIVE"
    assert codes(doc) == {"LINE_AMOUNT_MISMATCH"}


def test_eight_decimal_prices_are_fine_nine_are_not():
    ln = samples.line("x", "3", "0.33333333", "0.13")  # 0.99999999 -> net 1.00
    assert codes(samples.invoice(lines=[ln])) == set()
    ln["unit_price"] = "0.333333333"
    assert codes(samples.invoice(lines=[ln])) == {"INVALID_AMOUNT"}


def test_totals_and_breakdown_must_be_sums_of_lines():
    doc = samples.invoice()
    doc["totals"]["net_amount"] = "165.15"
    assert codes(doc) == {"TOTALS_MISMATCH"}
    doc = samples.invoice()
    doc["tax_breakdown"][0]["tax_amount"] = "14.87"
    assert codes(doc) == {"TAX_BREAKDOWN_MISMATCH"}
    doc = samples.invoice()
    doc["tax_breakdown"] = []
    assert codes(doc) == {"TAX_BREAKDOWN_MISMATCH"}


def test_discounted_line_without_discount_is_refused():
    ln = samples.line("Widget", "1", "10.00", "0.13", nature="DISCOUNTED")
    assert codes(samples.invoice(lines=[ln])) == {"INVALID_DISCOUNT_LINE"}


def test_discount_must_share_name_and_rate():
    ln = samples.line("Widget", "2", "50.00", "0.13", nature="DISCOUNTED")
    disc = samples.discount(ln, "10.00", no=2)
    disc["name"] = "Other"
    assert "INVALID_DISCOUNT_LINE" in codes(samples.invoice(lines=[ln, disc]))


def test_line_numbers_lengths_and_limits():
    doc = samples.invoice()
    doc["lines"][0]["line_no"] = 2
    assert codes(doc) == {"INVALID_LINE_NO"}
    doc = samples.invoice()
    doc["buyer"]["address"] = "a" * 80
    doc["buyer"]["phone"] = "1" * 25
    assert codes(doc) == {"FIELD_TOO_LONG"}
    doc = samples.invoice()
    doc["lines"] = []
    assert codes(doc) == {"NO_LINES"}
    many = [samples.line("x", "1", "1.00", "0.13", no=i + 1) for i in range(2001)]
    assert "TOO_MANY_LINES" in codes(samples.invoice(lines=many))


def test_shape_errors_are_reported_not_raised():
    assert codes([]) == {"INVALID_TYPE"}
    doc = samples.invoice()
    del doc["seller"]
    doc["serial"] = "lower-case"
    assert {"MISSING_FIELD", "INVALID_SERIAL"} <= codes(doc)
    doc = samples.invoice(issue_date="2026-12-01")
    assert codes(doc) == {"INVALID_VALUE"}
    doc = samples.invoice(currency="EUR")
    assert codes(doc) == {"UNSUPPORTED_CURRENCY"}


def test_negation_keeps_two_decimals_and_no_negative_zero():
    assert negate_amount("180.00") == "-180.00"
    assert negate_amount("-3.50") == "3.50"
    assert negate_amount("0.00") == "0.00"
    assert Decimal(negate_amount("0.01")) == Decimal("-0.01")


@pytest.mark.parametrize("rate", [1, 5, 50])
def test_token_bucket_allows_bursts_then_asks_to_wait(rate: int):
    bucket = TokenBucket.full(rate, now=0.0)
    assert all(bucket.take(now=0.0) == 0.0 for _ in range(rate))
    wait = bucket.take(now=0.0)
    assert wait == pytest.approx(1 / rate)
    assert bucket.take(now=wait) == 0.0


# --- partial red-letter forms (the sandbox's own rule) -------------------------------


def _blue_payload() -> dict:  # type: ignore[type-arg]
    return {
        "price_basis": "TAX_EXCLUSIVE",
        "lines": [
            {"line_no": 1, "nature": "NORMAL", "quantity": "2", "net_amount": "165.14",
             "tax_amount": "14.86", "gross_amount": "180.00"},
            {"line_no": 2, "nature": "NORMAL", "quantity": "3", "net_amount": "100.00",
             "tax_amount": "13.00", "gross_amount": "113.00"},
        ],
    }  # fmt: skip


def test_partial_form_lines_are_checked() -> None:
    from decimal import Decimal

    from syncd_sandbox.rules import check_red_form_lines

    problems, parsed = check_red_form_lines([{"line_no": 2, "quantity": "1"}])
    assert not problems and parsed == [(2, Decimal(1))]
    twice = [{"line_no": 1, "quantity": "1"}, {"line_no": 1, "quantity": "1"}]
    bad_lines: tuple[object, ...] = (
        [],
        [{"line_no": 0, "quantity": "1"}],
        [{"line_no": 1, "quantity": "-1"}],
        twice,
    )
    for bad in (*bad_lines, "x"):
        assert check_red_form_lines(bad)[0], bad


def test_returned_units_never_exceed_the_blue_line() -> None:
    from decimal import Decimal

    from syncd_sandbox.rules import ReturnedUnits, check_returnable, partial_red_lines

    blue = _blue_payload()
    assert check_returnable(blue, [(2, Decimal(3))], {}) == []
    assert check_returnable(blue, [(2, Decimal(1))], {2: Decimal(2)}) == []
    (v,) = check_returnable(blue, [(2, Decimal(1))], {2: Decimal(3)})
    assert v.code == "EXCEEDS_ORIGINAL"
    assert check_returnable(blue, [(9, Decimal(1))], {})[0].code == "UNKNOWN_LINE"
    first = partial_red_lines(blue, [(2, Decimal(1))], {})
    assert first == [{"line_no": 2, "quantity": "-1", "net_amount": "-33.33",
                      "tax_amount": "-4.33", "gross_amount": "-37.66"}]  # fmt: skip
    prior = ReturnedUnits(Decimal(2), Decimal("66.66"), Decimal("8.66"), Decimal("75.32"))
    (last,) = partial_red_lines(blue, [(2, Decimal(1))], {2: prior})
    assert (last["net_amount"], last["tax_amount"], last["gross_amount"]) == (
        "-33.34", "-4.34", "-37.68",
    )  # fmt: skip


def test_red_form_limits_count_and_deadline_on_the_platform_calendar() -> None:
    from datetime import UTC, datetime

    from syncd_sandbox.rules import RedFormLimits, check_red_form_limits

    issued = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)  # 2026-01-02 on the platform (UTC+8)
    none = RedFormLimits()
    assert check_red_form_limits(none, issued_at=issued, live_forms=99, now=datetime.now(UTC)) == []
    limits = RedFormLimits(within_days=30, max_forms=2)
    ok = datetime(2026, 2, 1, 15, 59, tzinfo=UTC)
    assert check_red_form_limits(limits, issued_at=issued, live_forms=1, now=ok) == []
    late = datetime(2026, 2, 1, 16, 0, tzinfo=UTC)
    (v,) = check_red_form_limits(limits, issued_at=issued, live_forms=1, now=late)
    assert v.code == "RED_DEADLINE_PASSED" and "2026-01-02" in v.message
    (v,) = check_red_form_limits(limits, issued_at=issued, live_forms=2, now=ok)
    assert v.code == "RED_LIMIT_EXCEEDED"
