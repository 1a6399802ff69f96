"""The sandbox platform as one ASGI application.

A small hand-written router rather than framework routing, because faults must
wrap a request *around* its commit: a "lost answer" commits the invoice and
then breaks the HTTP response, which needs control over when the response
start is sent. The signed /v1 requests read their headers and body straight
from the ASGI scope and messages (see `_headers`, `_read_body`); the unsigned
control plane uses Starlette's `Request`.

Everything runs on the server's event loop thread; the store is synchronous
SQLite (fast enough; no two requests interleave inside a transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from syncd_sandbox import auth, fastjson, rules
from syncd_sandbox.faults import Dice, Faults, TokenBucket
from syncd_sandbox.render import render_html, render_pdf, render_xml
from syncd_sandbox.store import BEIJING, Store

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Dialect = Literal["idempotent", "refuse-duplicates"]

log = logging.getLogger("syncd_sandbox")

_SERIAL: Final = r"(?P<serial>[A-Z0-9]{8,32})"
_ROUTES: Final = [
    ("POST", re.compile(r"/v1/invoices"), "issue"),
    ("GET", re.compile(r"/v1/invoices"), "list"),
    ("GET", re.compile(rf"/v1/invoices/{_SERIAL}"), "query"),
    ("GET", re.compile(rf"/v1/invoices/{_SERIAL}/(?P<fmt>xml|html|pdf)"), "document"),
    ("POST", re.compile(r"/v1/red-forms"), "reverse"),
    ("GET", re.compile(rf"/v1/red-forms/{_SERIAL}"), "query_red"),
    ("GET", re.compile(r"/v1/buyer-red-forms"), "list_buyer_forms"),
    (
        "POST",
        re.compile(rf"/v1/buyer-red-forms/{_SERIAL}/(?P<decision>confirm|reject)"),
        "decide_buyer_form",
    ),
]
_CONTROL: Final = [
    ("GET", re.compile(r"/_sandbox/faults"), "get_faults"),
    ("POST", re.compile(r"/_sandbox/faults"), "set_faults"),
    ("DELETE", re.compile(r"/_sandbox/faults"), "reset_faults"),
    ("GET", re.compile(r"/_sandbox/invoices"), "audit_invoices"),
    ("GET", re.compile(r"/_sandbox/requests"), "audit_requests"),
    ("POST", re.compile(r"/_sandbox/portal-invoices"), "portal_invoice"),
    (
        "POST",
        re.compile(rf"/_sandbox/red-forms/{_SERIAL}/(?P<decision>confirm|reject)"),
        "decide_red",
    ),
    ("POST", re.compile(r"/_sandbox/buyer-red-forms"), "raise_buyer_form"),
]
RED_FORM_FIELDS: Final = frozenset({"serial", "original_invoice_no", "reason"})
#: the invoice list: one page's default and largest size, the longest range (days after
#: the first) -- the real platforms page and bound the range too (docs/sandbox.md)
LIST_PAGE_SIZE: Final = 50
LIST_MAX_PAGE_SIZE: Final = 100
LIST_MAX_DAYS: Final = 366


class DropConnection(Exception):  # noqa: N818 - it is a deliberate action, not an error
    """Raised after the response start is sent, so the server breaks the connection."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


def quiet_deliberate_drops() -> None:
    """Keep uvicorn from logging a traceback for every fault we inject on purpose."""
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass
class SandboxConfig:
    credentials: dict[str, str]
    issue_delay: float = 1.0
    red_form_ttl: float = 72 * 3600.0
    dialect: Dialect = "idempotent"
    strict: bool = False
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    #: a longer request body is refused with 413 (an invoice of 2000 lines is ~1 MB)
    max_body_bytes: int = 4 * 1024 * 1024
    #: the platform's deadline and count limits on red-letter forms (rules.RedFormLimits)
    red_limits: rules.RedFormLimits = field(default_factory=rules.RedFormLimits)


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    code: str | None = None
    committed: bool = False


def json_reply(status: int, payload: object, *, committed: bool = False) -> Reply:
    code = payload.get("code") if isinstance(payload, dict) else None
    body = fastjson.reply_bytes(payload)
    return Reply(status, body, code=code if isinstance(code, str) else None, committed=committed)


def error(status: int, code: str, message: str, **extra: Any) -> Reply:
    return json_reply(status, {"code": code, "message": message, **extra})


@dataclass
class _Ctx:
    params: dict[str, str]
    body: bytes
    app_key: str
    now: float
    base_url: str


class SandboxApp:
    def __init__(self, store: Store, config: SandboxConfig) -> None:
        self.store = store
        self.config = config
        self.initial_faults = config.faults
        self.faults = config.faults
        self.dice = Dice(config.seed)
        #: issue calls still to fail (`fail_next_issue_calls`, counted down)
        self.issue_failures_left = 0
        #: accepted submissions still to forget at once (`forget_next_serials`)
        self.forget_left = 0
        self.buckets: dict[str, TokenBucket] = {}
        self._worker: asyncio.Task[None] | None = None
        self._commit: asyncio.Future[None] | None = None

    # --- ASGI entry -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.monotonic()
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/health":
            await _send(send, json_reply(200, {"status": "ok"}))
            return
        try:
            body = await _read_body(receive, scope, self.config.max_body_bytes)
        except BodyTooLarge:
            limit = self.config.max_body_bytes
            await _send(
                send,
                error(413, "BODY_TOO_LARGE", f"the body is larger than {limit} bytes"),
                close=True,
            )
            return
        if path.startswith("/_sandbox/"):
            with self.store.unit():
                reply = self._control(method, path, Request(scope, receive), body)
                if method != "GET":  # fault changes and confirmations belong in the audit
                    self._log(method, path, None, None, None, reply, started)
            await self._committed()
            await _send(send, reply)
            return
        faults = self.faults
        if faults.latency_ms and path.startswith("/v1/"):
            await asyncio.sleep(faults.latency_ms / 1000)
        with self.store.unit():
            reply, app_key, serial, fault = self._platform(scope, body, faults)
            self._log(method, path, app_key, serial, fault, reply, started)
        await self._committed()
        # committed: from here on, a broken answer is a *lost* answer
        if fault in ("drop:reset", "drop:hang", "error:reset", "error:hang"):
            await self._break(send, reply, fault or "")
        if faults.file_delay_ms and reply.status == 200 and _FILE_PATH.match(path):
            await _send_slowly(send, reply, faults.file_delay_ms / 1000)
            return
        await _send(send, reply)

    async def _committed(self) -> None:
        """Wait for the group commit that makes this request's unit durable.

        The first request of an event-loop turn schedules one COMMIT for the end
        of the turn; every request that finishes its unit in the same turn
        shares it. No answer leaves before its data is committed.
        """
        if self._commit is None:
            self._commit = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit_now)
        await asyncio.shield(self._commit)

    def _commit_now(self) -> None:
        pending, self._commit = self._commit, None
        if pending is None:
            return
        try:
            self.store.commit()
        except Exception as exc:  # every waiting request fails rather than answer unsaved
            pending.set_exception(exc)
            return
        pending.set_result(None)

    def _log(
        self,
        method: str,
        path: str,
        app_key: str | None,
        serial: str | None,
        fault: str | None,
        reply: Reply,
        started: float,
    ) -> None:
        self.store.log_request(
            ts=time.time(),
            method=method,
            path=path,
            app_key=app_key,
            status=reply.status,
            code=reply.code,
            serial=serial,
            fault=fault,
            duration_ms=(time.monotonic() - started) * 1000,
        )

    async def _break(self, send: Send, reply: Reply, fault: str) -> None:
        if fault.endswith(":hang"):
            await asyncio.sleep(self.faults.hang_ms / 1000)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    (b"content-length", str(len(reply.body)).encode()),
                    *reply.headers,
                ],
            }
        )
        raise DropConnection(fault)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._worker = asyncio.create_task(self._issue_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._worker is not None:
                    self._worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._worker
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _issue_loop(self) -> None:
        """Finish accepted work in the background, as the real platform's queue would."""
        last_prune = 0.0
        while True:
            now = time.time()
            try:
                with self.store.unit():
                    self.store.issue_due(now, self._seal_fails)
                    if now - last_prune > 60:
                        self.store.prune_nonces(now - auth.NONCE_TTL_SECONDS)
                        last_prune = now
                self.store.commit()
            except Exception:  # a bad row must not stop issuance of the others
                log.exception("background issuance failed")
            await asyncio.sleep(min(0.25, max(self.config.issue_delay / 4, 0.02)))

    def _seal_fails(self) -> bool:
        return self.dice.hit(self.faults.issue_failure_rate)

    # --- the platform API -------------------------------------------------------------

    def _platform(
        self, scope: Scope, body: bytes, faults: Faults
    ) -> tuple[Reply, str | None, str | None, str | None]:
        """(reply, app_key, serial, fault) for a /v1 request, faults applied.

        Synchronous on purpose: it runs inside one store unit (see `Store.unit`).
        """
        method, path = scope["method"], scope["path"]
        route, params = _match(_ROUTES, method, path)
        serial = params.get("serial")
        if route is None:
            return error(404, "NOT_FOUND", f"no route {method} {path}"), None, serial, None
        now = time.time()
        headers = _headers(scope)
        base_url = _base_url(scope, headers)

        if route == "document":
            query = QueryParams(scope["query_string"])  # what Starlette's request.query_params is
            if "token" in query:
                return self._document(params, query["token"]), None, serial, None

        raw_path = scope.get("raw_path") or path.encode()
        signed_path = raw_path.decode("latin-1")
        if scope.get("query_string"):
            signed_path += "?" + scope["query_string"].decode("latin-1")
        verdict = auth.check_request(
            headers, method, signed_path, body, self.config.credentials, now
        )
        if isinstance(verdict, auth.AuthFailure):
            return error(401, verdict.code, verdict.message), None, serial, None
        app_key, nonce = verdict
        if not self.store.remember_nonce(app_key, nonce, now, auth.NONCE_TTL_SECONDS):
            return (
                error(401, "NONCE_REUSED", "this X-Nonce was used in the last 10 minutes"),
                app_key,
                serial,
                None,
            )

        wait = self._rate_limit(app_key, faults)
        if wait > 0:
            reply = error(
                429,
                "RATE_LIMITED",
                "too many requests for this app key",
                retry_after=round(wait, 3),
            )
            reply.headers.append((b"retry-after", str(max(1, int(wait + 0.999))).encode()))
            return reply, app_key, serial, None

        if route == "issue" and self.issue_failures_left > 0:
            self.issue_failures_left -= 1
            reply = error(500, "INTERNAL_ERROR", "the platform failed; try again")
            return reply, app_key, serial, "error:http_500"
        if self.dice.hit(faults.error_rate):
            kind = self.dice.error_kind(faults)
            reply = error(500, "INTERNAL_ERROR", "the platform failed; try again")
            return reply, app_key, serial, f"error:{kind.value}"

        if method == "POST":
            if faults.session_expired:
                return (
                    error(
                        403,
                        "SESSION_EXPIRED",
                        "the drawer's tax-bureau session expired; a person must log in "
                        "again (scan or face check)",
                    ),
                    app_key,
                    serial,
                    None,
                )
            if route == "issue" and faults.credit_exhausted:
                return (
                    error(
                        403, "CREDIT_EXHAUSTED", "the invoicing credit line (授信额度) is exhausted"
                    ),
                    app_key,
                    serial,
                    None,
                )

        ctx = _Ctx(params, body, app_key, now, base_url)
        if route == "issue":
            reply, serial = self._issue(ctx)
        elif route == "query":
            reply = self._query(ctx)
        elif route == "list":
            reply = self._list(ctx, QueryParams(scope["query_string"]))
        elif route == "document":
            reply = self._document(params, None)
        elif route == "reverse":
            reply, serial = self._reverse(ctx)
        elif route == "list_buyer_forms":
            reply = self._list_buyer_forms(ctx)
        elif route == "decide_buyer_form":
            reply = self._decide_buyer_form(ctx)
        else:
            reply = self._query_red(ctx)
        fault = None
        if reply.committed and self.dice.hit(faults.drop_response_after_commit_rate):
            fault = f"drop:{faults.drop_mode}"
        return reply, app_key, serial, fault

    def _rate_limit(self, app_key: str, faults: Faults) -> float:
        if faults.rate_limit_rps is None:
            return 0.0
        bucket = self.buckets.get(app_key)
        if bucket is None or bucket.rate != faults.rate_limit_rps:
            bucket = self.buckets[app_key] = TokenBucket.full(faults.rate_limit_rps)
        return bucket.take()

    def _issue(self, ctx: _Ctx) -> tuple[Reply, str | None]:
        try:
            payload = fastjson.loads_request(ctx.body)
        except fastjson.NestingTooDeepError as exc:
            return error(422, "NESTING_TOO_DEEP", str(exc)), None
        except (ValueError, UnicodeDecodeError):
            return error(400, "INVALID_JSON", "the body is not JSON"), None
        serial = payload.get("serial") if isinstance(payload, dict) else None
        serial = serial if isinstance(serial, str) else None
        today = datetime.fromtimestamp(ctx.now, BEIJING).date()
        violations = rules.check_invoice(payload, today=today)
        if violations:
            return error(
                422,
                "VALIDATION_FAILED",
                "the invoice breaks the platform's rules",
                serial=serial,
                errors=[v.as_json() for v in violations],
            ), serial
        if self.dice.hit(self.faults.rejection_rate):
            return error(
                422,
                "VALIDATION_FAILED",
                "the invoice breaks the platform's rules",
                serial=serial,
                errors=[
                    {
                        "code": "BUYER_NOT_REGISTERED",
                        "path": "buyer.tax_id",
                        "message": "the buyer's taxpayer ID is not registered with the tax bureau",
                    }
                ],
            ), serial
        outcome = self.store.submit_invoice(
            payload,
            app_key=ctx.app_key,
            now=ctx.now,
            delay=self.config.issue_delay,
            refuse_duplicates=self.config.dialect == "refuse-duplicates",
        )
        if outcome.kind == "CONFLICT":
            return error(
                409,
                "SERIAL_CONFLICT",
                "this serial was already used for a different invoice",
                serial=serial,
            ), serial
        if outcome.kind == "DUPLICATE":
            return error(
                409,
                "DUPLICATE_SERIAL",
                "the serial must not repeat; query it instead",
                serial=serial,
            ), serial
        if outcome.kind == "ACCEPTED" and self.forget_left > 0:
            self.forget_left -= 1
            self.store.forget(outcome.row["serial"])
        view = self._invoice_view(outcome.row, ctx.base_url)
        status = 202 if outcome.kind in ("ACCEPTED", "REQUEUED") else 200
        return json_reply(status, view, committed=True), serial

    def _fresh_invoice(self, serial: str, now: float) -> dict[str, Any] | None:
        row = self.store.invoice(serial)
        if row is not None and row["status"] == "PROCESSING" and row["due_at"] <= now:
            row = self.store.finish_due_invoice(row, now, self._seal_fails)
        return row

    def _query(self, ctx: _Ctx) -> Reply:
        row = self._fresh_invoice(ctx.params["serial"], ctx.now)
        if row is None or self._forgotten(row, ctx.now):
            return error(404, "NOT_FOUND", "no invoice with this serial")
        return json_reply(200, self._invoice_view(row, ctx.base_url))

    def _forgotten(self, row: Mapping[str, Any], now: float) -> bool:
        return self.store.is_forgotten(row, now, self.faults.forget_after_seconds)

    def _list(self, ctx: _Ctx, query: QueryParams) -> Reply:
        """`GET /v1/invoices?seller_tax_id=&issued_from=&issued_to=[&buyer_tax_id=]
        [&gross_amount=][&page=1][&page_size=50]`: issued invoices, by invoice number."""
        problems = []
        seller = query.get("seller_tax_id") or ""
        if not seller:
            problems.append(("MISSING_FIELD", "seller_tax_id", "field is required"))
        days = []
        for name in ("issued_from", "issued_to"):
            try:
                days.append(date.fromisoformat(query.get(name) or ""))
            except ValueError:
                problems.append(("INVALID_VALUE", name, "an ISO date (YYYY-MM-DD)"))
        if len(days) == 2 and days[1] < days[0]:
            problems.append(("INVALID_VALUE", "issued_to", "before issued_from"))
        elif len(days) == 2 and (days[1] - days[0]).days > LIST_MAX_DAYS:
            problems.append(
                ("RANGE_TOO_LONG", "issued_to", f"at most {LIST_MAX_DAYS + 1} days per list")
            )
        gross = None
        if query.get("gross_amount"):
            try:
                gross = Decimal(query["gross_amount"])
            except InvalidOperation:
                problems.append(("INVALID_VALUE", "gross_amount", "a decimal amount"))
        page = _int(query.get("page"), 1)
        size = _int(query.get("page_size"), LIST_PAGE_SIZE)
        if page is None or page < 1:
            problems.append(("INVALID_VALUE", "page", "a whole number from 1"))
        if size is None or not 1 <= size <= LIST_MAX_PAGE_SIZE:
            problems.append(("INVALID_VALUE", "page_size", f"1 to {LIST_MAX_PAGE_SIZE}"))
        if problems:
            return error(
                422,
                "VALIDATION_FAILED",
                "the list query is not valid",
                errors=[{"code": c, "path": p, "message": m} for c, p, m in problems],
            )
        assert page is not None and size is not None
        self.store.issue_due(ctx.now, self._seal_fails)  # the list shows the platform as it is
        total, rows = self.store.list_invoices(
            seller_tax_id=seller,
            issued_from=days[0].isoformat(),
            issued_to=days[1].isoformat(),
            buyer_tax_id=query.get("buyer_tax_id") or None,
            gross_amount=gross,
            offset=(page - 1) * size,
            limit=size,
        )
        items = [self._list_item(row, ctx.now) for row in rows]
        return json_reply(200, {"page": page, "page_size": size, "total": total, "invoices": items})

    def _list_item(self, row: Mapping[str, Any], now: float) -> dict[str, Any]:
        payload = json.loads(row["payload"])
        doc = payload.get("blue", payload) if row["kind"] == "RED" else payload
        buyer = doc.get("buyer") or {}
        known = not row["portal"] and not self._forgotten(row, now)
        return {
            "serial": row["serial"] if known else None,
            "invoice_no": row["invoice_no"],
            "kind": row["kind"],
            "invoice_type": row["invoice_type"],
            "status": "REVERSED" if row["red_invoice_no"] else "ISSUED",
            "original_invoice_no": row["original_invoice_no"],
            "red_invoice_no": row["red_invoice_no"],
            "issued_at": row["issued_at"],
            "seller_tax_id": (doc.get("seller") or {}).get("tax_id"),
            "buyer_tax_id": buyer.get("tax_id"),
            "buyer_name": buyer.get("name"),
            "totals": {
                "net_amount": row["net_amount"],
                "tax_amount": row["tax_amount"],
                "gross_amount": row["gross_amount"],
            },
        }

    def _document(self, params: dict[str, str], token: str | None) -> Reply:
        row = self.store.invoice(params["serial"])
        if row is None or row["status"] != "ISSUED":
            return error(404, "NOT_FOUND", "no issued invoice with this serial")
        if token is not None:
            secret = self.config.credentials.get(row["app_key"], "")
            if not secret or not _same(token, auth.file_token(secret, row["serial"])):
                return error(401, "BAD_TOKEN", "the file link token is not valid")
        if params["fmt"] == "xml":
            return Reply(200, render_xml(row), content_type="application/xml")
        if params["fmt"] == "pdf":
            return Reply(200, render_pdf(row), content_type="application/pdf")
        return Reply(200, render_html(row).encode(), content_type="text/html; charset=utf-8")

    def _reverse(self, ctx: _Ctx) -> tuple[Reply, str | None]:
        try:
            payload = fastjson.loads_request(ctx.body)
        except fastjson.NestingTooDeepError as exc:
            return error(422, "NESTING_TOO_DEEP", str(exc)), None
        except (ValueError, UnicodeDecodeError):
            return error(400, "INVALID_JSON", "the body is not JSON"), None
        problems = _check_red_form(payload)
        serial = payload.get("serial") if isinstance(payload, dict) else None
        serial = serial if isinstance(serial, str) else None
        if problems:
            return error(
                422,
                "VALIDATION_FAILED",
                "the red-letter form is not valid",
                serial=serial,
                errors=[p.as_json() for p in problems],
            ), serial
        assert serial is not None
        lines = None
        if "lines" in payload:  # a partial form (returns); see rules.check_red_form_lines
            line_problems, lines = rules.check_red_form_lines(payload["lines"])
            if line_problems:
                return error(
                    422,
                    "VALIDATION_FAILED",
                    "the red-letter form is not valid",
                    serial=serial,
                    errors=[p.as_json() for p in line_problems],
                ), serial
        outcome, row = self.store.submit_red_form(
            serial,
            payload["original_invoice_no"],
            payload["reason"],
            app_key=ctx.app_key,
            now=ctx.now,
            delay=self.config.issue_delay,
            ttl=self.config.red_form_ttl,
            refuse_duplicates=self.config.dialect == "refuse-duplicates",
            lines=lines,
            limits=self.config.red_limits,
        )
        if outcome == "EXCEEDS_ORIGINAL":
            return error(
                422,
                "EXCEEDS_ORIGINAL",
                "the red invoices would exceed the original invoice",
                serial=serial,
                errors=[v.as_json() for v in row["violations"]],
            ), serial
        if outcome == "LIMIT_EXCEEDED":
            return error(
                422,
                row["violations"][0].code,
                "the rules allow no more red-letter forms against this invoice",
                serial=serial,
                errors=[v.as_json() for v in row["violations"]],
            ), serial
        refusals = {
            "CONFLICT": (409, "SERIAL_CONFLICT", "this serial was already used differently"),
            "DUPLICATE": (409, "DUPLICATE_SERIAL", "the serial must not repeat; query it"),
            "ORIGINAL_NOT_FOUND": (422, "ORIGINAL_NOT_FOUND", "no issued invoice has that number"),
            "NOT_REVERSIBLE": (422, "NOT_REVERSIBLE", "only an issued blue invoice is reversed"),
            "ALREADY_REVERSED": (
                409,
                "ALREADY_REVERSED",
                "this invoice already has a red-letter form",
            ),
        }
        if outcome in refusals:
            status, code, message = refusals[outcome]
            extra: dict[str, Any] = {"serial": serial}
            if outcome == "ALREADY_REVERSED":
                extra["existing_serial"] = row["serial"]
            if status == 422:
                extra["errors"] = [
                    {"code": code, "path": "original_invoice_no", "message": message}
                ]
            return error(status, code, message, **extra), serial
        view = self._red_view(row, ctx.now, ctx.base_url)
        return json_reply(202 if outcome == "ACCEPTED" else 200, view, committed=True), serial

    def _query_red(self, ctx: _Ctx) -> Reply:
        serial = ctx.params["serial"]
        row = self.store.red_form(serial, ctx.now)
        if row is None:
            return error(404, "NOT_FOUND", "no red-letter form with this serial")
        if row["status"] == "PROCESSING" and row["due_at"] <= ctx.now:
            self.store.issue_due(ctx.now, self._seal_fails, serial=serial)
            row = self.store.red_form(serial, ctx.now)
            assert row is not None
        return json_reply(200, self._red_view(row, ctx.now, ctx.base_url))

    def _list_buyer_forms(self, ctx: _Ctx) -> Reply:
        forms = self.store.buyer_forms(ctx.app_key, ctx.now)
        views = [self._red_view(f, ctx.now, ctx.base_url) for f in forms]
        return json_reply(200, {"count": len(views), "forms": views})

    def _decide_buyer_form(self, ctx: _Ctx) -> Reply:
        """The seller confirms or rejects a form its buyer raised: `{"reason": "..."}`."""
        try:
            payload = fastjson.loads_request(ctx.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return error(400, "INVALID_JSON", "the body is not JSON")
        reason = payload.get("reason") if isinstance(payload, dict) else None
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
            return error(
                422,
                "VALIDATION_FAILED",
                "the decision needs a reason",
                errors=[{"code": "INVALID_VALUE", "path": "reason", "message": "1 to 200 chars"}],
            )
        form_id = ctx.params["serial"]
        outcome, row = self.store.decide_buyer_form(
            form_id,
            ctx.app_key,
            confirm=ctx.params["decision"] == "confirm",
            reason=reason.strip(),
            now=ctx.now,
            delay=self.config.issue_delay,
        )
        if row is None:
            return error(404, "NOT_FOUND", "no red-letter form raised by a buyer with this id")
        view = self._red_view(row, ctx.now, ctx.base_url)
        if outcome == "EXPIRED":
            return error(409, "FORM_EXPIRED", "the form expired before it was decided", form=view)
        if outcome == "DECIDED_OTHERWISE":
            return error(409, "FORM_DECIDED", "the form was already decided otherwise", form=view)
        return json_reply(200, {**view, "unchanged": outcome == "SAME"}, committed=True)

    # --- views ------------------------------------------------------------------------

    def _invoice_view(self, row: dict[str, Any], base_url: str) -> dict[str, Any]:
        files = None
        if row["status"] == "ISSUED":
            token = auth.file_token(self.config.credentials.get(row["app_key"], ""), row["serial"])
            files = {
                fmt: f"{base_url}/v1/invoices/{row['serial']}/{fmt}?token={token}"
                for fmt in ("pdf", "xml", "html")
            }
        return {
            "serial": row["serial"],
            "status": row["status"],
            "kind": row["kind"],
            "invoice_type": row["invoice_type"],
            "invoice_no": row["invoice_no"],
            "issued_at": row["issued_at"],
            "check_code": row["check_code"],
            "original_invoice_no": row["original_invoice_no"],
            "red_invoice_no": row["red_invoice_no"],
            "totals": {
                "net_amount": row["net_amount"],
                "tax_amount": row["tax_amount"],
                "gross_amount": row["gross_amount"],
            },
            "files": files,
            "failure_code": row["failure_code"],
            "failure_reason": row["failure_reason"],
            "attempts": row["attempts"],
        }

    def _red_view(self, row: dict[str, Any], now: float, base_url: str) -> dict[str, Any]:
        red = self.store.invoice(row["serial"]) if row.get("red_invoice_no") else None
        return {
            "files": None if red is None else self._invoice_view(red, base_url)["files"],
            "serial": row["serial"],
            "status": row["status"],
            "original_invoice_no": row["original_invoice_no"],
            "reason": row["reason"],
            "raised_by": row.get("raised_by") or "SELLER",
            "created_at": datetime.fromtimestamp(row["created_at"], UTC).isoformat(
                timespec="seconds"
            ),
            "decision_reason": row.get("decision_reason"),
            "totals_of_original": self._original_totals(row["original_invoice_no"]),
            "red_invoice_no": row["red_invoice_no"],
            "issued_at": red["issued_at"] if red else None,
            "check_code": red["check_code"] if red else None,
            "totals": None
            if red is None
            else {
                "net_amount": red["net_amount"],
                "tax_amount": red["tax_amount"],
                "gross_amount": red["gross_amount"],
            },
            "expires_at": datetime.fromtimestamp(row["expires_at"], UTC).isoformat(
                timespec="seconds"
            ),
            "failure_code": row["failure_code"],
            "failure_reason": row["failure_reason"],
        }

    def _original_totals(self, invoice_no: str) -> dict[str, str] | None:
        blue = self.store.invoice_by_no(invoice_no)
        if blue is None:
            return None
        return {k: blue[k] for k in ("net_amount", "tax_amount", "gross_amount")}

    # --- the unsigned test control plane ----------------------------------------------

    def _control(self, method: str, path: str, request: Request, body: bytes) -> Reply:
        if self.config.strict:
            return error(404, "NOT_FOUND", "the control plane is disabled (--strict)")
        route, params = _match(_CONTROL, method, path)
        if route is None:
            return error(404, "NOT_FOUND", f"no route {method} {path}")
        if route == "get_faults":
            return json_reply(200, self.faults.model_dump())
        if route == "reset_faults":
            self.faults = self.initial_faults
            return json_reply(200, self.faults.model_dump())
        if route == "set_faults":
            try:
                update = fastjson.loads_request(body or b"{}")
                if not isinstance(update, dict):
                    raise ValueError("not an object")
                self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
            except (ValueError, ValidationError) as exc:
                return error(422, "INVALID_FAULTS", str(exc))
            if "fail_next_issue_calls" in update:
                self.issue_failures_left = self.faults.fail_next_issue_calls
            if "forget_next_serials" in update:
                self.forget_left = self.faults.forget_next_serials
            log.warning("faults now %s", self.faults.model_dump_json())
            return json_reply(200, self.faults.model_dump())
        if route == "audit_invoices":
            invoices = self.store.issued_invoices()
            return json_reply(200, {"count": len(invoices), "invoices": invoices})
        if route == "portal_invoice":
            return self._portal_invoice(body)
        if route == "audit_requests":
            q = request.query_params
            since = int(q.get("since_id", "0") or 0)
            limit = min(int(q.get("limit", "1000") or 1000), 10_000)
            return json_reply(200, {"requests": self.store.requests(since, limit)})
        if route == "raise_buyer_form":
            return self._raise_buyer_form(request, body)
        # decide_red
        now = time.time()
        row = self.store.decide_red_form(
            params["serial"],
            confirm=params["decision"] == "confirm",
            now=now,
            delay=self.config.issue_delay,
        )
        if row is None:
            return error(404, "NOT_FOUND", "no red-letter form with this serial")
        return json_reply(200, self._red_view(row, now, _base_url(request.scope, request.headers)))

    def _raise_buyer_form(self, request: Request, body: bytes) -> Reply:
        """A buyer raises a red-letter form against one of our invoices (tests, demo):
        `{"original_invoice_no": "...", "reason": "SALES_RETURN", "ttl_seconds": 259200}`."""
        try:
            payload = fastjson.loads_request(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return error(400, "INVALID_JSON", "the body is not JSON")
        if not isinstance(payload, dict):
            return error(422, "VALIDATION_FAILED", "the body must be a JSON object")
        number, reason = payload.get("original_invoice_no"), payload.get("reason", "SALES_RETURN")
        ttl = payload.get("ttl_seconds", self.config.red_form_ttl)
        if not isinstance(number, str) or not rules.INVOICE_NO_RE.fullmatch(number):
            return error(422, "VALIDATION_FAILED", "original_invoice_no: 20 digits")
        if reason not in rules.REVERSAL_REASONS:
            allowed = ", ".join(sorted(rules.REVERSAL_REASONS))
            return error(422, "VALIDATION_FAILED", f"reason: one of {allowed}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            return error(422, "VALIDATION_FAILED", "ttl_seconds: a positive number")
        now = time.time()
        outcome, row = self.store.raise_buyer_form(number, reason, now=now, ttl=float(ttl))
        if outcome == "ORIGINAL_NOT_FOUND":
            return error(404, "ORIGINAL_NOT_FOUND", "no issued invoice has that number")
        if outcome == "NOT_REVERSIBLE":
            return error(422, "NOT_REVERSIBLE", "only an issued blue invoice is reversed")
        if outcome == "ALREADY_REVERSED":
            return error(
                409,
                "ALREADY_REVERSED",
                "this invoice already has a red-letter form",
                existing_serial=row["serial"],
            )
        base_url = _base_url(request.scope, request.headers)
        return json_reply(201, self._red_view(row, now, base_url))

    def _portal_invoice(self, body: bytes) -> Reply:
        """`POST /_sandbox/portal-invoices` `{"invoice": {...}, "issued_at": ISO?,
        "app_key": ?}` (or a JSON list of those, all or none): invoices issued by hand in
        the platform's portal. An invoice is the canonical shape without a serial, checked
        by the platform's rules; it is issued at once (at `issued_at` when given) and
        appears in the list only, without a serial."""
        try:
            data = fastjson.loads_request(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return error(400, "INVALID_JSON", "the body is not JSON")
        entries = data if isinstance(data, list) else [data]
        now = time.time()
        accepted: list[tuple[dict[str, Any], str, float]] = []
        for n, entry in enumerate(entries):
            invoice = entry.get("invoice") if isinstance(entry, dict) else None
            if not isinstance(invoice, dict):
                return error(422, "VALIDATION_FAILED", f"[{n}].invoice: a JSON object")
            issued_at = now
            if entry.get("issued_at"):
                try:
                    issued_at = datetime.fromisoformat(str(entry["issued_at"])).timestamp()
                except ValueError:
                    return error(422, "VALIDATION_FAILED", f"[{n}].issued_at: ISO date-time")
            # the portal checks like the API; the serial is the platform's own
            checked = {**invoice, "serial": "PORTAL000000"}
            today = datetime.fromtimestamp(issued_at, BEIJING).date()
            violations = rules.check_invoice(checked, today=today)
            if violations:
                return error(
                    422,
                    "VALIDATION_FAILED",
                    f"[{n}]: the invoice breaks the platform's rules",
                    errors=[v.as_json() for v in violations],
                )
            app_key = str(entry.get("app_key") or next(iter(self.config.credentials), ""))
            accepted.append((invoice, app_key, issued_at))
        items = [
            self._list_item(
                self.store.add_portal_invoice(invoice, app_key=key, now=now, issued_at=at), now
            )
            for invoice, key, at in accepted
        ]
        return json_reply(201, {"invoices": items} if isinstance(data, list) else items[0])


def _int(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    return int(value) if value.isdigit() else None


def _check_red_form(payload: object) -> list[rules.Violation]:
    if not isinstance(payload, dict):
        return [rules.Violation("INVALID_TYPE", "$", "must be a JSON object")]
    out = [
        rules.Violation("UNKNOWN_FIELD", k, "not a red-letter form field")
        for k in sorted(set(payload) - RED_FORM_FIELDS - {"lines"})
    ]
    out += [
        rules.Violation("MISSING_FIELD", k, "field is required")
        for k in sorted(RED_FORM_FIELDS - set(payload))
    ]
    serial = payload.get("serial")
    if "serial" in payload and not (isinstance(serial, str) and rules.SERIAL_RE.fullmatch(serial)):
        out.append(
            rules.Violation("INVALID_SERIAL", "serial", "must be 8 to 32 characters of A-Z and 0-9")
        )
    number = payload.get("original_invoice_no")
    if "original_invoice_no" in payload and not (
        isinstance(number, str) and rules.INVOICE_NO_RE.fullmatch(number)
    ):
        out.append(
            rules.Violation(
                "INVALID_VALUE", "original_invoice_no", "an invoice number has 20 digits"
            )
        )
    if "reason" in payload and payload.get("reason") not in rules.REVERSAL_REASONS:
        out.append(
            rules.Violation(
                "INVALID_VALUE", "reason", f"one of {', '.join(sorted(rules.REVERSAL_REASONS))}"
            )
        )
    return out


def _match(
    table: list[tuple[str, re.Pattern[str], str]], method: str, path: str
) -> tuple[str | None, dict[str, str]]:
    for want, pattern, name in table:
        m = pattern.fullmatch(path)
        if m is not None and want == method:
            return name, m.groupdict()
    return None, {}


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lower-case) name, as Starlette's `Request.headers.get` sees
    them: latin-1 text, the first of a repeated header winning. One dict per request is
    cheaper than Starlette's `Headers`, which scans the whole list on every lookup."""
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        if name not in out:
            out[name] = value.decode("latin-1")
    return out


class BodyTooLarge(Exception):  # noqa: N818 - answered with 413
    """The request body is (or announces to be) longer than the configured limit."""


async def _read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """The whole request body, exactly as Starlette's `Request.body()` reads it (and
    `ClientDisconnect` if the client goes away first), without its async generator.

    `BodyTooLarge` as soon as the body is known to exceed `limit`: from its
    Content-Length before reading a byte, or while reading a chunked one -- so a huge
    body is never held in memory."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and (len(value) > 18 or int(value) > limit):
                raise BodyTooLarge()
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _base_url(scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


async def _send(send: Send, reply: Reply, *, close: bool = False) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type.encode()),
                (b"content-length", str(len(reply.body)).encode()),
                *([(b"connection", b"close")] if close else []),
                *reply.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})


#: The path of an invoice file (`file_delay_ms` slows these down).
_FILE_PATH = re.compile(r"/v1/invoices/[^/]+/(?:xml|html|pdf)$")
#: How many pieces a slowed-down file is sent in.
FILE_PIECES = 10


async def _send_slowly(send: Send, reply: Reply, pause: float) -> None:
    """The reply's body in `FILE_PIECES` pieces with `pause` seconds before each: a slow
    download a test can interrupt at a known point."""
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type.encode()),
                (b"content-length", str(len(reply.body)).encode()),
                *reply.headers,
            ],
        }
    )
    size = -(-len(reply.body) // FILE_PIECES)
    for i in range(FILE_PIECES):
        await asyncio.sleep(pause)
        piece = reply.body[i * size : (i + 1) * size]
        await send({"type": "http.response.body", "body": piece, "more_body": i < FILE_PIECES - 1})


def parse_faults(value: str | Mapping[str, Any]) -> Faults:
    data = json.loads(value) if isinstance(value, str) else dict(value)
    return Faults.model_validate(data)
