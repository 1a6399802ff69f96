"""The demo generator's order plan: deterministic, realistic, and valid where it should be."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from decimal import ROUND_HALF_UP, Decimal

import pytest
from stdnum.cn import uscc

from syncd.demo.generate import (
    CATALOGUE,
    build_orders,
    invalid_uscc,
    order_no,
    order_prefix,
    valid_uscc,
)
from syncd.identity import DocumentIdentity, DocumentKind
from syncd.invoice.from_erp import build_blue
from syncd_sandbox.rules import uscc_is_valid
from tests.unit.config_helpers import demo_config


def test_same_seed_same_orders_other_seed_other_numbers() -> None:
    a = build_orders(30, seed=5)
    assert a == build_orders(30, seed=5)
    b = build_orders(30, seed=6)
    assert {o.order_no for o in a}.isdisjoint(o.order_no for o in b)
    assert all(o.order_no.startswith(order_prefix(5)) for o in a)
    assert order_no(5, 3) == "DEMO-5-00003"
    assert len(order_no(999_999, 99_999)) <= 32  # erp.sales_order.order_no is varchar(32)


def test_shares_are_exact_and_cancellations_only_on_valid_orders() -> None:
    orders = build_orders(200, seed=1, invalid_ratio=0.05, cancel_ratio=0.1)
    invalid = [o for o in orders if o.invalid]
    cancel = [o for o in orders if o.cancel_reason is not None]
    assert len(invalid) == 10
    assert len(cancel) == 19  # 10 % of the 190 valid ones
    assert not any(o.invalid for o in cancel)
    assert all(o.invoice_type == "SPECIAL" for o in invalid)


def test_orders_look_like_real_sales() -> None:
    orders = build_orders(300, seed=11)
    lines = [ln for o in orders for ln in o.lines]
    assert {len(o.lines) for o in orders} == {1, 2, 3, 4}
    assert {ln.tax_rate for ln in lines} == {Decimal("0.13"), Decimal("0.09"), Decimal("0.06")}
    assert {o.price_includes_tax for o in orders} == {True, False}
    assert {o.invoice_type for o in orders} == {"SPECIAL", "ORDINARY"}
    assert any(ln.discount_amount > 0 for ln in lines)
    for o in orders:
        assert [ln.line_no for ln in o.lines] == list(range(1, len(o.lines) + 1))
        assert len({ln.item_name for ln in o.lines}) == len(o.lines)
        assert o.total_amount == sum(ln.amount - ln.discount_amount for ln in o.lines)
    for ln in lines:
        assert len(ln.tax_code) == 19 and ln.tax_code.isdigit()
        assert ln.amount == (ln.quantity * ln.unit_price).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert 0 <= ln.discount_amount < ln.amount
        assert ln.quantity > 0 and ln.unit_price > 0
    assert all(len(i.tax_code) == 19 for i in CATALOGUE)


def test_generated_tax_ids_pass_or_fail_both_checkers() -> None:
    import random

    rng = random.Random(3)
    for _ in range(200):
        good, bad = valid_uscc(rng), invalid_uscc(rng)
        assert uscc.is_valid(good) and uscc_is_valid(good)
        assert not uscc.is_valid(bad) and not uscc_is_valid(bad)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_valid_orders_map_to_valid_invoices_and_invalid_ones_do_not(seed: int) -> None:
    config = demo_config()
    doc = config.documents["sales_order"]
    orders = build_orders(60, seed=seed, invalid_ratio=0.1)
    problems: Counter[str] = Counter()
    for n, order in enumerate(orders, start=1):
        row = {
            **asdict(order),
            "id": n,
            "currency": "CNY",
            "status": "CONFIRMED",
            "cancel_reason": None,
        }
        lines = [asdict(ln) for ln in order.lines]
        ident = DocumentIdentity.of("sales_order", doc.table, [("id", n)], DocumentKind.ISSUE)
        mapped = build_blue(doc, row, lines, ident)
        if order.invalid:
            assert not mapped.ok
            problems.update(p.code for p in mapped.problems)
        else:
            assert mapped.ok, (order.order_no, mapped.summary())
    assert set(problems) == {"BUYER_TAX_ID_INVALID"}


def test_reissues_and_returns_leave_the_rest_of_the_plan_alone() -> None:
    from dataclasses import replace

    plain = build_orders(200, seed=3)
    mixed = build_orders(200, seed=3, return_ratio=0.1, reissue_ratio=0.05)
    assert mixed == build_orders(200, seed=3, return_ratio=0.1, reissue_ratio=0.05)
    valid = sum(not o.invalid for o in plain)
    reissued = [o for o in mixed if o.reissue]
    returned = [o for o in mixed if o.returns]
    assert len(reissued) == round(valid * 0.05)
    assert len(returned) == round(valid * 0.1)
    assert not {o.index for o in reissued} & {o.index for o in returned}
    for before, after in zip(plain, mixed, strict=True):
        if after.reissue:
            assert before.cancel_reason is None and not before.invalid
            assert after.cancel_reason is not None
            assert replace(after, reissue=False, cancel_reason=None) == before
        elif after.returns:
            assert before.cancel_reason is None and not before.invalid
            assert after.invoice_type == "ORDINARY" and after.lines[0].discount_amount == 0
            assert sum(after.returns) == after.lines[0].quantity
            assert all(q > 0 for q in after.returns)
            assert replace(after, returns=()) == before
        else:
            assert after == before


def test_correction_ratios_are_checked() -> None:
    import pytest

    with pytest.raises(ValueError, match="return_ratio"):
        build_orders(10, seed=1, return_ratio=1.5)
    with pytest.raises(ValueError, match="reissue_ratio"):
        build_orders(10, seed=1, reissue_ratio=-0.1)
