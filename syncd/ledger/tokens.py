"""The fleet's shared provider access tokens, in the ledger database.

Implements `syncd.issuers.tokens.TokenStore` for every replica at once. The lease on a
refresh is the row lock of the app's `issuer_tokens` row: the one process that needs a
new token takes `SELECT ... FOR UPDATE`, re-reads the row (another replica may have just
refreshed it), fetches only if it still must, stores the result and commits. Everyone
else who needed a token meanwhile waits on that lock and then reads the fresh token --
so N replicas asking at once cause one fetch. A holder that dies releases the lock with
its connection (no stale lease to expire); a holder that hangs is bounded by the HTTP
timeouts of the fetch, and a waiter gives up after `lock_timeout` with "unavailable",
which the document retries later.

The reads on the fast path take no lock: a usable token is returned straight away.
Refusals of the app's credentials are stored too, so no replica fetches again before
`refusal_hold` has passed (the platform's monthly fetch quota is small).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from syncd.issuers.tokens import Fetch, Grant, Refused, TokenAnswer, Unavailable, usable
from syncd.ledger.schema import issuer_tokens as t

log = logging.getLogger(__name__)

#: A waiter gives up on another replica's refresh after this long.
LOCK_TIMEOUT_MS = 30_000
#: The platform counts fetches per 30 days; `period_fetches` counts within one window.
PERIOD_SECONDS = 30 * 86400


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class LedgerTokenStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def token(
        self,
        app_key: str,
        fetch: Fetch,
        *,
        refresh_margin: float,
        refusal_hold: float,
        now: float | None = None,
    ) -> TokenAnswer:
        at = time.time() if now is None else now
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(t.c.access_token, t.c.expires_at).where(t.c.app_key == app_key)
                ).first()
            if row is not None and row.access_token and row.expires_at is not None:
                grant = Grant(row.access_token, row.expires_at.timestamp())
                if usable(grant, at, refresh_margin):
                    return grant
            return self._refresh(app_key, fetch, at, refresh_margin, refusal_hold)
        except SQLAlchemyError as exc:
            return Unavailable(f"token ledger: {type(exc).__name__}")

    def _refresh(
        self, app_key: str, fetch: Fetch, at: float, refresh_margin: float, refusal_hold: float
    ) -> TokenAnswer:
        with self._engine.begin() as conn:
            conn.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
            conn.execute(insert(t).values(app_key=app_key).on_conflict_do_nothing())
            row = conn.execute(sa.select(t).where(t.c.app_key == app_key).with_for_update()).one()
            if row.access_token and row.expires_at is not None:
                grant = Grant(row.access_token, row.expires_at.timestamp())
                if usable(grant, at, refresh_margin):
                    return grant  # another replica refreshed it while we waited
            if row.refused_at is not None and at < row.refused_at.timestamp() + refusal_hold:
                return Refused(row.refused_reason or "the platform refused the credentials")
            answer = fetch()
            period_start = row.period_start
            period_fetches = row.period_fetches
            if period_start is None or at - period_start.timestamp() >= PERIOD_SECONDS:
                period_start, period_fetches = _at(at), 0
            values: dict[str, object] = {
                "fetches": t.c.fetches + 1,
                "period_start": period_start,
                "period_fetches": period_fetches + 1,
                "updated_at": sa.func.now(),
            }
            if isinstance(answer, Grant):
                values.update(
                    access_token=answer.token,
                    expires_at=_at(answer.expires_at),
                    fetched_at=_at(at),
                    refused_reason=None,
                    refused_at=None,
                )
                log.info(
                    "issuer token for app %s refreshed (%d fetches in this 30-day window)",
                    app_key,
                    period_fetches + 1,
                )
            elif isinstance(answer, Refused):
                values.update(refused_reason=answer.reason, refused_at=_at(at))
                log.error("issuer token for app %s refused: %s", app_key, answer.reason)
            conn.execute(sa.update(t).where(t.c.app_key == app_key).values(**values))
            return answer

    def invalidate(self, app_key: str, token: str) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.update(t)
                    .where(t.c.app_key == app_key, t.c.access_token == token)
                    .values(access_token=None, expires_at=None, updated_at=sa.func.now())
                )
        except SQLAlchemyError as exc:  # the next call sees the refusal again and retries
            log.warning("could not invalidate the issuer token of app %s: %s", app_key, exc)

    def fetches(self, app_key: str) -> int:
        """Token fetches recorded for the app (tests, `syncd status`)."""
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(t.c.fetches).where(t.c.app_key == app_key)
            ).scalar_one_or_none()
        return int(value or 0)


__all__ = ["LedgerTokenStore"]
