"""The sandbox's Nuonuo dialect: its own signature check and order rules, held against
syncd's client (two independent implementations must agree)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from syncd.issuers.nuonuo import order_payload, sign
from syncd_sandbox.nuonuo import protocol as p
from tests.unit import invoice_samples as samples

NOW = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)


def order(invoice: Any) -> dict[str, Any]:
    data: dict[str, Any] = order_payload(json.loads(invoice.to_json()), now=NOW)["order"]
    return data


def test_the_sandbox_verifies_what_the_client_signs() -> None:
    body = json.dumps({"order": {"buyerName": "中文"}}, ensure_ascii=False).encode()
    params = {"appkey": "k", "senid": "a" * 32, "nonce": "12345678", "timestamp": "1700000000"}
    good = sign("s", "k", "a" * 32, "12345678", "1700000000", body)
    assert p.check_signature(params, {"x-nuonuo-sign": good}, body, {"k": "s"}) is None
    refused = p.check_signature(params, {"x-nuonuo-sign": good}, body + b" ", {"k": "s"})
    assert refused is not None and refused[0] == p.BAD_SIGNATURE
    unknown = p.check_signature({**params, "appkey": "x"}, {}, body, {"k": "s"})
    assert unknown is not None and unknown[0] == p.BAD_APP_KEY


def test_the_clients_orders_pass_the_sandbox_rules() -> None:
    from syncd.invoice.model import PriceBasis

    for invoice in (
        samples.blue(),
        samples.multi_rate(),
        samples.with_discount(),
        samples.with_discount(PriceBasis.TAX_INCLUSIVE),
    ):
        assert p.check_order(order(invoice), samples.SELLER_TAX_ID) == []


def test_the_sandbox_refuses_broken_orders() -> None:
    good = order(samples.blue())
    assert p.check_order(good, samples.OTHER_VALID_TAX_ID) == [
        "salerTaxNum must equal the userTax header"
    ]
    bad_line = {**good["invoiceDetail"][0], "tax": "20.00", "goodsCode": "123"}
    problems = p.check_order({**good, "invoiceDetail": [bad_line]}, samples.SELLER_TAX_ID)
    assert any("goodsCode" in x for x in problems)
    assert any("0.06" in x for x in problems)
    assert any("taxIncludedAmount" in x for x in problems)
    no_tax_id = {**good, "buyerTaxNum": None}
    assert any("buyerTaxNum" in x for x in p.check_order(no_tax_id, samples.SELLER_TAX_ID))


def test_partial_red_forms_never_return_more_than_the_blue_line() -> None:
    import json as _json

    from syncd_sandbox.nuonuo.app import NuonuoApp

    blue = order(samples.blue())
    units = blue["invoiceDetail"][0]["num"]
    taken, why = NuonuoApp._partial(
        blue, [{"blueDetailIndex": "1", "goodsNum": f"-{units}"}], live=[]
    )
    assert why is None
    assert taken[0]["gross_amount"] == str(-Decimal(blue["invoiceDetail"][0]["taxIncludedAmount"]))
    live = [{"payload": _json.dumps({"_red_lines": taken})}]
    _, why = NuonuoApp._partial(blue, [{"blueDetailIndex": "1", "goodsNum": "-1"}], live=live)
    assert why is not None and "would exceed the original" in why
    _, why = NuonuoApp._partial(blue, [{"blueDetailIndex": "9", "goodsNum": "-1"}], live=[])
    assert why is not None and "no line 9" in why
    _, why = NuonuoApp._partial(blue, [{"blueDetailIndex": "1", "goodsNum": "1"}], live=[])
    assert why is not None and "negative" in why
