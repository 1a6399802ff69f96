"""Issuer accounts: one platform account per legal entity, and which one a document uses.

A group of companies issues through one platform app but one account (and one seller
identity) per company: Shanghai's orders must never go out under Beijing's tax number.
This module checks, before the daemon starts, that every document type names accounts
that exist, that every account a row can reach has a seller to print, and that the
accounts' sellers differ -- the seller's tax number on a frozen invoice is what routes it
(and its queries) to its account after any restart, so two accounts with one seller would
make that routing ambiguous.

Errors name their key path first (`documents.x.account.map.3: ...`) so the loader can
point at the file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import Field, model_validator

from syncd.config.documents import AccountChoice, DocumentConfig, SellerIdentity
from syncd.config.settings import IssuerSettings

#: The name of the account of a config with a single `issuer:` section.
DEFAULT_ACCOUNT: Final = "default"
#: Account names: short, lower case (they become a metric label value).
ACCOUNT_NAME: Final = r"[a-z][a-z0-9_]{0,31}"


class AccountSettings(IssuerSettings):
    """One named account of `issuers:`: the platform settings of `issuer:` plus the legal
    entity it issues for. For Nuonuo, `seller_tax_id` (the userTax) defaults to the
    seller's tax number and must equal it when given."""

    seller: SellerIdentity | None = Field(
        default=None,
        description="the company this account issues for, printed as the seller of its "
        "documents (needed when there are several accounts)",
    )

    @model_validator(mode="before")
    @classmethod
    def _user_tax(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("provider") == "nuonuo":
            seller = data.get("seller")
            if "seller_tax_id" not in data and isinstance(seller, dict):
                tax_id = seller.get("tax_id")
                if isinstance(tax_id, str):
                    data = {**data, "seller_tax_id": tax_id.replace(" ", "").upper()}
        return data

    @model_validator(mode="after")
    def _same_company(self) -> AccountSettings:
        seller = self.seller
        if self.provider == "nuonuo" and seller is not None and self.seller_tax_id != seller.tax_id:
            raise ValueError(
                f"seller_tax_id {self.seller_tax_id} differs from seller.tax_id "
                f"{seller.tax_id}: the platform issues only as the userTax company"
            )
        return self

    def provider_settings(self) -> dict[str, Any]:
        settings = super().provider_settings()
        settings.pop("seller", None)
        return settings


def account_seller(account: IssuerSettings) -> SellerIdentity | None:
    return account.seller if isinstance(account, AccountSettings) else None


def resolve_accounts(
    issuer: IssuerSettings | None,
    issuers: Mapping[str, AccountSettings],
    documents: Mapping[str, DocumentConfig],
    seller: SellerIdentity | None,
) -> None:
    """Check the accounts against the documents and give each document its accounts'
    sellers. Raises ValueError with the key path of the first problem."""
    if issuer is not None and issuers:
        raise ValueError("issuers: give either issuer: (one account) or issuers:, not both")
    if issuer is None and not issuers:
        raise ValueError("issuer: missing (or issuers: with named accounts)")
    accounts: dict[str, IssuerSettings] = (
        {DEFAULT_ACCOUNT: issuer} if issuer is not None else dict(issuers)
    )
    names = ", ".join(sorted(accounts))
    if len(accounts) > 1:
        owners: dict[str, str] = {}
        for name, account in accounts.items():
            if account_seller(account) is None:
                raise ValueError(
                    f"issuers.{name}: seller: is needed with several accounts (the seller "
                    "printed on a document decides the account it goes through)"
                )
            tax_id = account_seller(account).tax_id  # type: ignore[union-attr]
            other = owners.setdefault(tax_id, name)
            if other != name:
                raise ValueError(
                    f"issuers.{name}.seller.tax_id: {tax_id} is also the "
                    f"seller of account {other}: one account per legal entity"
                )
    sellers = {n: s for n, a in accounts.items() if (s := account_seller(a)) is not None}
    for doc_name, doc in documents.items():
        choice = doc.account
        where = f"documents.{doc_name}.account"
        if choice is None:
            if len(accounts) > 1:
                raise ValueError(
                    f"documents.{doc_name}: several issuer accounts ({names}): choose one "
                    "with account: <name> or account: {column: ..., map: {...}}"
                )
            used = list(accounts)
        elif isinstance(choice, AccountChoice):
            for value, name in choice.map.items():
                if name not in accounts:
                    raise ValueError(
                        f"{where}.map.{value}: unknown issuer account '{name}' (accounts: {names})"
                    )
            used = sorted(set(choice.map.values()))
        else:
            if choice not in accounts:
                raise ValueError(f"{where}: unknown issuer account '{choice}' (accounts: {names})")
            used = [choice]
        doc._account_sellers = {n: sellers[n] for n in used if n in sellers}
        if len(used) == 1 and used[0] in sellers:
            doc.seller = sellers[used[0]]
        if doc.seller is None:
            doc.seller = seller
        missing = [n for n in used if n not in sellers]
        if missing and doc.seller is None:
            raise ValueError(
                f"documents.{doc_name}: no seller for account {missing[0]} (set seller: in "
                "the account, the document or at the top)"
            )


__all__ = ["ACCOUNT_NAME", "DEFAULT_ACCOUNT", "AccountSettings", "resolve_accounts"]
