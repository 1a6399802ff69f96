"""Provider access tokens that a whole fleet shares: at most one fetch at a time.

Some platforms (Nuonuo: 50 token fetches per app per 30 days, docs/issuers.md) limit how
often an app may ask for an access token. Every replica fetching its own would spend the
month's quota in days, so a token is cached where all replicas see it (the ledger
database: `syncd.ledger.tokens.LedgerTokenStore`) and refreshed by one process while the
others wait for its result. The invariants a store keeps:

* a caller gets a token that is valid for at least `refresh_margin` more seconds, or a
  value saying why there is none -- never an exception for provider trouble;
* while one caller fetches, every other caller of the same app waits and then uses the
  fetched token: concurrent callers cause **one** fetch, not one each;
* a refusal of the app's credentials is remembered for `refusal_hold` seconds and
  answered from memory, so a wrong secret does not burn the quota with a fetch per
  document (the document goes to needs-human instead).

The token itself is a secret: it never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class Grant:
    """A usable access token and when it stops working (epoch seconds)."""

    token: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The token endpoint refused the app's credentials: only a person can fix it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No answer from the token endpoint (network, 5xx, garbled): try again later."""

    reason: str


TokenAnswer: TypeAlias = Grant | Refused | Unavailable
Fetch: TypeAlias = Callable[[], TokenAnswer]


class TokenStore(Protocol):
    """Where an app's access token is cached and refreshed (thread- and process-safe)."""

    def token(
        self,
        app_key: str,
        fetch: Fetch,
        *,
        refresh_margin: float,
        refusal_hold: float,
        now: float | None = None,
    ) -> TokenAnswer: ...

    def invalidate(self, app_key: str, token: str) -> None:
        """The platform no longer accepts `token`: the next caller fetches a new one
        (unless another caller already replaced it)."""


def usable(grant: Grant | None, now: float, refresh_margin: float) -> bool:
    return grant is not None and grant.expires_at - refresh_margin > now


@dataclass
class _Entry:
    grant: Grant | None = None
    refused: Refused | None = None
    refused_at: float = 0.0
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryTokenStore:
    """One process's cache (tests, single-replica tools): the same rules, in memory."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._guard = threading.Lock()

    def _entry(self, app_key: str) -> _Entry:
        with self._guard:
            return self._entries.setdefault(app_key, _Entry())

    def fetches(self, app_key: str) -> int:
        return self._entry(app_key).fetches

    def token(
        self,
        app_key: str,
        fetch: Fetch,
        *,
        refresh_margin: float,
        refusal_hold: float,
        now: float | None = None,
    ) -> TokenAnswer:
        entry = self._entry(app_key)
        at = time.time() if now is None else now
        if entry.grant is not None and usable(entry.grant, at, refresh_margin):
            return entry.grant
        with entry.lock:  # one fetch at a time; the waiters then find its result
            if entry.grant is not None and usable(entry.grant, at, refresh_margin):
                return entry.grant
            if entry.refused is not None and at < entry.refused_at + refusal_hold:
                return entry.refused
            answer = fetch()
            entry.fetches += 1
            if isinstance(answer, Grant):
                entry.grant, entry.refused = answer, None
            elif isinstance(answer, Refused):
                entry.refused, entry.refused_at = answer, at
            return answer

    def invalidate(self, app_key: str, token: str) -> None:
        entry = self._entry(app_key)
        with entry.lock:
            if entry.grant is not None and entry.grant.token == token:
                entry.grant = None


__all__ = [
    "Fetch",
    "Grant",
    "MemoryTokenStore",
    "Refused",
    "TokenAnswer",
    "TokenStore",
    "Unavailable",
    "usable",
]
