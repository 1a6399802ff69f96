"""IssuerAccounts: a document goes through the account of the seller on its payload."""

from __future__ import annotations

from typing import Any, cast

import pytest

from syncd.issuers.accounts import IssuerAccounts
from syncd.issuers.base import Issuer, NeedsHuman


class Named:
    """Stands in for a provider client: only identity and close() matter here."""

    provider = "fake"

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _payload(tax_id: str) -> dict[str, Any]:
    return {"serial": "S1", "seller": {"name": "x", "tax_id": tax_id}}


def test_routes_by_the_sellers_tax_number() -> None:
    fakes = Named(), Named()
    sh, bj = (cast(Issuer, f) for f in fakes)
    accounts = IssuerAccounts({"sh": sh, "bj": bj}, {"TAXSH": "sh", "TAXBJ": "bj"})
    assert accounts.route(_payload("TAXBJ")) == ("bj", bj)
    assert accounts.route(_payload("TAXSH")) == ("sh", sh)
    assert accounts.route(_payload("TAXGZ")) is None
    assert accounts.route(None) is None
    answer = IssuerAccounts.unrouted("S1", _payload("TAXGZ"))
    assert isinstance(answer, NeedsHuman) and answer.reason.code == "NO_ACCOUNT"
    accounts.close()
    assert all(f.closed for f in fakes)


def test_a_single_account_takes_everything() -> None:
    only = cast(Issuer, Named())
    accounts = IssuerAccounts.single(only)
    assert accounts.names == ["default"]
    assert accounts.route(None) == ("default", only)
    assert accounts.route(_payload("ANY")) == ("default", only)


def test_sellers_must_name_configured_accounts() -> None:
    with pytest.raises(ValueError, match="unknown accounts"):
        IssuerAccounts({"sh": cast(Issuer, Named())}, {"TAX": "bj"})
