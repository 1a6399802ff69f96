"""Named issuer accounts (`issuers:`) and the per-row account choice of a document type."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from syncd.config import ConfigError, parse_config
from syncd.config.documents import SellerIdentity
from syncd.identity import DocumentIdentity, DocumentKind
from syncd.invoice.from_erp import build_blue
from tests.unit.config_helpers import DEMO

SH = {"name": "Acme Shanghai Co., Ltd.", "tax_id": "91310115MA1K4PLN89"}
BJ = {"name": "Acme Beijing Co., Ltd.", "tax_id": "91110108MA01ABCD2H"}


def _data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    issuer = data.pop("issuer")
    data["issuers"] = {
        "sh": {**issuer, "provider": "nuonuo", "seller": SH},
        "bj": {**issuer, "provider": "nuonuo", "seller": BJ},
    }
    data["documents"]["sales_order"]["account"] = {
        "column": "company_id",
        "map": {1: "sh", 2: "bj"},
    }
    return data


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(data, sort_keys=False), "c.yaml")
    return str(caught.value)


def test_the_single_issuer_section_is_the_default_account() -> None:
    config = parse_config(DEMO.read_text(encoding="utf-8"))
    assert list(config.accounts()) == ["default"]
    assert config.primary_issuer is config.issuer


def test_two_accounts_each_with_its_seller_and_user_tax() -> None:
    config = parse_config(yaml.safe_dump(_data(), sort_keys=False))
    accounts = config.accounts()
    assert list(accounts) == ["sh", "bj"]
    assert accounts["sh"].seller_tax_id == SH["tax_id"]
    assert accounts["bj"].provider_settings()["seller_tax_id"] == BJ["tax_id"]
    assert "seller" not in accounts["bj"].provider_settings()
    doc = config.documents["sales_order"]
    assert "company_id" in doc.source_columns()
    sh = doc.seller_for({"company_id": 1})
    bj = doc.seller_for({"company_id": "2"})  # a text column holding the same values
    assert isinstance(sh, SellerIdentity) and sh.tax_id == SH["tax_id"]
    assert isinstance(bj, SellerIdentity) and bj.name == BJ["name"]
    assert doc.seller_for({"company_id": 3}) == (
        "company_id = 3 maps to no issuer account (documents.sales_order.account.map)"
    )


def test_an_unknown_account_is_refused_with_its_line() -> None:
    data = _data()
    data["documents"]["sales_order"]["account"]["map"][3] = "gz"
    text = _problems(data)
    assert "documents.sales_order.account.map.3: unknown issuer account 'gz'" in text
    assert "(accounts: bj, sh)" in text
    assert text.startswith("c.yaml:")
    assert text.split(":")[1].isdigit()  # the line of the map entry


def test_several_accounts_need_a_choice_and_sellers() -> None:
    data = _data()
    del data["documents"]["sales_order"]["account"]
    assert "documents.sales_order: several issuer accounts (bj, sh)" in _problems(data)
    data = _data()
    del data["issuers"]["bj"]["seller"]
    data["issuers"]["bj"]["seller_tax_id"] = BJ["tax_id"]
    assert "issuers.bj: seller: is needed with several accounts" in _problems(data)
    data = _data()
    data["issuers"]["bj"]["seller"] = SH
    assert "is also the seller of account sh" in _problems(data)


def test_issuer_and_issuers_together_or_neither_are_refused() -> None:
    data = _data()
    data["issuer"] = {**data["issuers"]["sh"], "provider": "sandbox"}
    del data["issuer"]["seller"]
    assert "either issuer: (one account) or issuers:" in _problems(data)
    data = _data()
    del data["issuers"]
    assert "issuer: missing" in _problems(data)


def test_user_tax_must_be_the_accounts_seller() -> None:
    data = _data()
    data["issuers"]["sh"]["seller_tax_id"] = BJ["tax_id"]
    assert "differs from seller.tax_id" in _problems(data)


def test_an_unmapped_company_is_a_problem_of_the_document_not_a_crash() -> None:
    config = parse_config(yaml.safe_dump(_data(), sort_keys=False))
    doc = config.documents["sales_order"]
    row = {"id": 7, "company_id": 9, "buyer_name": "Buyer Ltd.", "invoice_type": "ORDINARY"}
    identity = DocumentIdentity("sales_order", doc.table, (("id", 7),), DocumentKind.ISSUE)
    result = build_blue(doc, row, [], identity)
    assert result.invoice is None
    codes = {p.code: p.message for p in result.problems}
    assert codes["NO_ACCOUNT"].startswith("company_id = 9 maps to no issuer account")


def test_account_secrets_from_environment_and_files_stay_secret(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    for account in data["issuers"].values():
        del account["app_secret"]
    secret = tmp_path / "bj-secret"
    secret.write_text("bj-secret-value\n")
    data["issuers"]["bj"]["app_secret_file"] = str(secret)
    monkeypatch.setenv("SYNCD_ISSUERS__SH__APP_SECRET", "sh-secret-value")
    config = parse_config(yaml.safe_dump(data, sort_keys=False))
    accounts = config.accounts()
    assert accounts["sh"].provider_settings()["app_secret"].get_secret_value() == (
        "sh-secret-value"
    )
    assert accounts["bj"].provider_settings()["app_secret"].get_secret_value() == (
        "bj-secret-value"
    )
    assert {"sh-secret-value", "bj-secret-value"} <= set(config.secret_values())
    dumped = str(config.masked_dump())
    assert "sh-secret-value" not in dumped and "bj-secret-value" not in dumped
