"""Several platform accounts behind one router: a document goes through its seller's account.

Each account is its own client -- its own connections, access token, back-pressure and
`AccountGate` -- so an account whose bureau session dropped or whose credit ran out pauses
only its own documents. The router is chosen by the seller's tax number on the frozen
invoice (the reversal's payload carries the blue invoice's seller), not by anything held
in memory: after a restart, a query finds the account the document was sent through.
`syncd.config.accounts` guarantees one account per seller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.issuers.base import Issuer, IssueResult, NeedsHuman, Reason


class IssuerAccounts:
    """Account name -> issuer, routed by the seller of a document's payload."""

    def __init__(self, issuers: Mapping[str, Issuer], sellers: Mapping[str, str]) -> None:
        """`sellers`: seller tax number -> account name (needed with several accounts)."""
        if not issuers:
            raise ValueError("no issuer account")
        self._issuers = dict(issuers)
        self._sellers = dict(sellers)
        unknown = set(self._sellers.values()) - set(self._issuers)
        if unknown:
            raise ValueError(f"sellers name unknown accounts {sorted(unknown)}")
        self._only = next(iter(self._issuers.items())) if len(self._issuers) == 1 else None

    @classmethod
    def single(cls, issuer: Issuer, name: str = "default") -> IssuerAccounts:
        return cls({name: issuer}, {})

    @property
    def names(self) -> list[str]:
        return list(self._issuers)

    def items(self) -> list[tuple[str, Issuer]]:
        return list(self._issuers.items())

    def route(self, payload: Mapping[str, Any] | None) -> tuple[str, Issuer] | None:
        """The account a document's frozen payload belongs to; None when its seller has no
        account (the config changed since the document was frozen)."""
        if self._only is not None:
            return self._only
        seller = (payload or {}).get("seller")
        tax_id = seller.get("tax_id") if isinstance(seller, Mapping) else None
        name = self._sellers.get(tax_id) if isinstance(tax_id, str) else None
        return (name, self._issuers[name]) if name is not None else None

    @staticmethod
    def unrouted(serial: str, payload: Mapping[str, Any] | None) -> IssueResult:
        """The answer for a document no account issues for: a person must look."""
        seller = (payload or {}).get("seller")
        tax_id = seller.get("tax_id") if isinstance(seller, Mapping) else None
        return NeedsHuman(
            serial,
            Reason(
                "NO_ACCOUNT",
                f"no issuer account has seller {tax_id!r} (issuers: in the config)",
            ),
        )

    def close(self) -> None:
        for issuer in self._issuers.values():
            issuer.close()


__all__ = ["IssuerAccounts"]
