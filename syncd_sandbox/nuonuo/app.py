"""`syncd sandbox --dialect nuonuo`: the sandbox speaking Nuonuo's open-platform protocol.

Same role as `syncd_sandbox.app` (a platform to test against, with faults on demand), a
different wire: `POST /accessToken` (form-encoded, counted against a monthly limit) and
`POST /open/v1/services` (signed query parameters, `accessToken`/`userTax`/`method`
headers, `{code, describe, result}` envelopes). Issuance is asynchronous as on the real
platform: `requestBillingNew` answers a platform serial at once, the invoice appears on a
later `queryInvoiceResult`. A repeated order number is refused (`E9106`). Reversal goes
through red-confirmation forms; a form on a 数电专票 waits for the buyer (the control
plane confirms or rejects for them).

Every request's effect is committed before its answer is sent, so the "lost answer"
faults lose only the answer. docs/sandbox.md ("Nuonuo dialect") lists every deviation
from the real platform that we know of.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

from pydantic import ValidationError

from syncd_sandbox import rules
from syncd_sandbox.app import DropConnection
from syncd_sandbox.faults import Dice, Faults, TokenBucket
from syncd_sandbox.nuonuo import protocol as p
from syncd_sandbox.nuonuo.store import BEIJING, NuonuoStore
from syncd_sandbox.render import pdf_sheet

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("syncd_sandbox.nuonuo")

SERVICES: Final = "/open/v1/services"
SENDS: Final = frozenset(
    {
        "nuonuo.OpeMplatform.requestBillingNew",
        "nuonuo.OpeMplatform.saveInvoiceRedConfirm",
        "nuonuo.OpeMplatform.confirm",
    }
)
#: the sandbox's reasons (control plane) -> Nuonuo's redReason
RED_REASON_CODES: Final = {
    "SALES_RETURN": "1",
    "INVOICING_ERROR": "2",
    "SERVICE_STOPPED": "3",
    "ALLOWANCE": "4",
}
RED_REASONS: Final = frozenset({"1", "2", "3", "4"})
MONTH: Final = 30 * 86400.0
#: `queryInvoiceList`: the longest time window (10 days, published) and the largest page
#: (not published: our assumption, docs/sandbox.md)
LIST_MAX_SECONDS: Final = 10 * 86400
LIST_MAX_PAGE_SIZE: Final = 100
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


def canonical_lines(order: Mapping[str, Any]) -> dict[str, Any]:
    """A Nuonuo order's lines in the shape `rules.check_returnable` and
    `rules.partial_red_lines` read (line numbers from 1, in order)."""
    natures = {"0": "NORMAL", "1": "DISCOUNT", "2": "DISCOUNTED"}
    details = order.get("invoiceDetail") or []
    return {
        "price_basis": "TAX_INCLUSIVE"
        if details and details[0].get("withTaxFlag") == "1"
        else "TAX_EXCLUSIVE",
        "lines": [
            {
                "line_no": i + 1,
                "nature": natures.get(str(d.get("invoiceLineProperty", "0")), "NORMAL"),
                "quantity": d.get("num"),
                "net_amount": d["taxExcludedAmount"],
                "tax_amount": d["tax"],
                "gross_amount": d["taxIncludedAmount"],
            }
            for i, d in enumerate(details)
        ],
    }


def _red_totals(lines: list[dict[str, Any]]) -> tuple[Decimal, Decimal, Decimal]:
    net = sum((Decimal(str(line["net_amount"])) for line in lines), Decimal(0))
    tax = sum((Decimal(str(line["tax_amount"])) for line in lines), Decimal(0))
    return net, tax, net + tax


@dataclass
class NuonuoConfig:
    credentials: dict[str, str]
    issue_delay: float = 1.0
    red_form_ttl: float = 72 * 3600.0
    token_ttl: float = 86400.0
    token_limit: int = 50
    #: each company's invoicing credit line (授信额度) per period, CNY incl. tax
    credit_limit: Decimal = Decimal("10000000.00")
    strict: bool = False
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    #: the platform's deadline and count limits on red-confirmation forms
    red_limits: rules.RedFormLimits = field(default_factory=rules.RedFormLimits)


@dataclass
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    code: str | None = None
    committed: bool = False
    content_type: bytes = b"application/json; charset=utf-8"


def answer(status: int, payload: Mapping[str, Any], *, committed: bool = False) -> Answer:
    code = payload.get("code")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Answer(status, body, code=str(code) if code is not None else None, committed=committed)


def env(code: str, describe: str = "", result: object = None, *, committed: bool = False) -> Answer:
    return answer(200, p.envelope(code, describe, result), committed=committed)


class NuonuoApp:
    def __init__(self, store: NuonuoStore, config: NuonuoConfig) -> None:
        self.store = store
        self.config = config
        self.faults = config.faults
        self.base_url = "http://sandbox.invalid"  # of the request being answered
        self.dice = Dice(config.seed)
        self.issue_failures_left = config.faults.fail_next_issue_calls
        #: accepted orders still to forget at once (`forget_next_serials`)
        self.forget_left = config.faults.forget_next_serials
        self.buckets: dict[str, TokenBucket] = {}
        self._worker: asyncio.Task[None] | None = None

    # --- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        body = await _read_body(receive)
        if path == "/health":
            await _send(send, answer(200, {"status": "ok", "dialect": "nuonuo"}))
            return
        if path.startswith("/_sandbox/"):
            with self.store.unit():
                reply = self._control(method, path, scope, body)
            await _send(send, reply)
            return
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        headers = _headers(scope)
        fault: str | None = None
        self.base_url = f"{scope.get('scheme', 'http')}://{headers.get('host', 'sandbox.invalid')}"
        with self.store.unit():
            if method == "GET" and (found := _FILE.fullmatch(path)):
                reply, app_key, serial = self._file(found["no"], found["fmt"]), None, None
            elif method == "POST" and path == "/accessToken":
                reply, app_key, serial = self._token(body), None, None
            elif method == "POST" and path == SERVICES:
                reply, app_key, serial, fault = self._services(scope, headers, body, faults)
            else:
                reply, app_key, serial = (
                    answer(404, {"code": "404", "describe": "no route"}),
                    None,
                    None,
                )
            self.store.log_request(
                ts=time.time(),
                method=headers.get("method"),
                path=path,
                app_key=app_key,
                status=reply.status,
                code=reply.code,
                serial=serial,
                fault=fault,
                user_tax=headers.get("usertax"),
            )
        # committed: from here on a broken answer is a lost answer
        if fault in ("drop:reset", "drop:hang", "error:reset", "error:hang"):
            await self._break(send, reply, fault or "")
        await _send(send, reply)

    async def _break(self, send: Send, reply: Answer, fault: str) -> None:
        if fault.endswith(":hang"):
            await asyncio.sleep(self.faults.hang_ms / 1000)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(reply.body)).encode()),
                ],
            }
        )
        raise DropConnection(fault)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._worker = asyncio.create_task(self._background())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._worker is not None:
                    self._worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._worker
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _background(self) -> None:
        """The platform's queue: issue accepted orders, move red forms along."""
        while True:
            try:
                with self.store.unit():
                    self._advance(time.time())
            except Exception:  # one bad row must not stop the others
                log.exception("background issuance failed")
            await asyncio.sleep(min(0.25, max(self.config.issue_delay / 4, 0.02)))

    def _advance(self, now: float) -> None:
        for order_no in self.store.due_orders(now):
            self._finish(order_no, now)
        for form in self.store.due_red_forms(now):
            self._advance_form(form, now)

    def _finish(self, order_no: str, now: float) -> None:
        row = self.store.order(order_no)
        if row is None or row["status"] != "20":
            return
        payload = json.loads(row["payload"])
        if payload.get("_fate") == "22":
            self.store.finish_order(
                order_no, now, "22", "购方税号未在税局登记 (buyer not registered)"
            )
        elif self.dice.hit(self.faults.issue_failure_rate):
            self.store.finish_order(order_no, now, "24", "签章失败 (seal failed)")
        else:
            self.store.finish_order(order_no, now, "2", None)

    def _advance_form(self, form: dict[str, Any], now: float) -> None:
        status = form["status"]
        if status == "15":  # the bureau answers the application
            payload = json.loads(form["payload"])
            needs_buyer = payload.get("blueInvoiceLine") == "bs"
            if needs_buyer:
                self.store.set_red_form(
                    form["bill_id"], status="02", due_at=now + self.config.red_form_ttl
                )
            else:
                self.store.set_red_form(form["bill_id"], status="01", due_at=now)
        elif status in ("02", "03"):  # nobody confirmed in time
            self.store.set_red_form(form["bill_id"], status="07", due_at=now)
        elif status in ("01", "04"):  # the bureau issues the red invoice itself
            self._issue_red(form, now)

    def _issue_red(self, form: dict[str, Any], now: float) -> None:
        blue = self.store.order_by_invoice_no(form["blue_no"])
        if blue is None:
            return
        order = json.loads(blue["payload"])
        red_order_no = "RED" + form["bill_id"]
        red = {**order, "orderNo": red_order_no, "invoiceType": "2"}
        totals = (-Decimal(blue["net"]), -Decimal(blue["tax"]), -Decimal(blue["gross"]))
        partial = json.loads(form["payload"]).get("_red_lines")
        if partial:  # just the returned units of those lines
            details = order.get("invoiceDetail") or []
            red["invoiceDetail"] = [
                {
                    **details[int(line["line_no"]) - 1],
                    "num": line["quantity"],
                    "taxExcludedAmount": line["net_amount"],
                    "tax": line["tax_amount"],
                    "taxIncludedAmount": line["gross_amount"],
                }
                for line in partial
            ]
            totals = _red_totals(partial)
        self.store.accept_order(
            red,
            app_key=blue["app_key"],
            now=now,
            due_at=now,
            totals=totals,
            kind="RED",
            original_invoice_no=blue["invoice_no"],
        )
        self.store.finish_order(red_order_no, now, "2", None)
        self.store.set_red_form(form["bill_id"], red_order_no=red_order_no)

    # --- the token endpoint -----------------------------------------------------------

    def _file(self, number: str, fmt: str) -> Answer:
        row = self.store.order_by_invoice_no(number)
        if row is None or row["status"] != "2" or fmt == "ofd":
            return answer(404, {"code": "404", "describe": "no such file"})
        return _file_answer(row, fmt)

    def _token(self, body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        app_key = form.get("client_id", "")
        now = time.time()
        if form.get("grant_type") != "client_credentials":
            return answer(400, {"error": "unsupported_grant_type", "error_description": ""})
        secret = self.config.credentials.get(app_key)
        if secret is None or not secrets.compare_digest(secret, form.get("client_secret", "")):
            self.store.record_fetch(app_key, now, None, 0)
            return answer(
                400, {"error": "invalid_client", "error_description": "appKey or appSecret wrong"}
            )
        if self.store.fetches_since(app_key, now - MONTH) >= self.config.token_limit:
            self.store.record_fetch(app_key, now, None, 0)
            return answer(
                400,
                {
                    "error": "070306",
                    "error_description": f"at most {self.config.token_limit} token fetches "
                    "per 30 days",
                },
            )
        token = secrets.token_hex(16)
        self.store.record_fetch(app_key, now, token, now + self.config.token_ttl)
        return answer(200, {"access_token": token, "expires_in": int(self.config.token_ttl)})

    # --- the business gateway ----------------------------------------------------------

    def _services(
        self, scope: Scope, headers: Mapping[str, str], body: bytes, faults: Faults
    ) -> tuple[Answer, str | None, str | None, str | None]:
        params = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        now = time.time()
        method = headers.get("method", "")
        refused = p.check_signature(params, headers, body, self.config.credentials)
        if refused is not None:
            return env(*refused), params.get("appkey"), None, None
        app_key = params["appkey"]
        if self.store.token_owner(headers.get("accesstoken", ""), now) != app_key:
            return env(p.TOKEN_INVALID, "accessToken invalid or expired"), app_key, None, None
        wait = self._rate_limit(app_key, faults)
        if wait > 0:
            reply = answer(429, p.envelope("429", "too many requests"))
            reply.headers.append((b"retry-after", str(max(1, int(wait + 0.999))).encode()))
            return reply, app_key, None, None
        if method == "nuonuo.OpeMplatform.requestBillingNew" and self.issue_failures_left > 0:
            self.issue_failures_left -= 1
            return answer(500, p.envelope("500", "internal error")), app_key, None, "error:http_500"
        if self.dice.hit(faults.error_rate):
            kind = self.dice.error_kind(faults)
            reply = answer(500, p.envelope("500", "internal error"))
            return reply, app_key, None, f"error:{kind.value}"
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return env(p.VALIDATION, "the body is not JSON"), app_key, None, None
        if not isinstance(data, dict):
            return env(p.VALIDATION, "the body is not a JSON object"), app_key, None, None
        user_tax = headers.get("usertax", "")
        if method in SENDS and (faults.session_expired or user_tax in faults.session_expired_for):
            reply = env(
                p.SESSION_EXPIRED, "开票员税局登录已失效 (the drawer's bureau session expired)"
            )
            return reply, app_key, None, None
        if method == "nuonuo.OpeMplatform.requestBillingNew" and (
            faults.credit_exhausted or user_tax in faults.credit_exhausted_for
        ):
            return env(p.CREDIT_EXHAUSTED, "授信额度不足 (credit exhausted)"), app_key, None, None
        if not user_tax:
            return env(p.MISSING_USER_TAX, "userTax is required"), app_key, None, None
        handler = _METHODS.get(method)
        if handler is None:
            return env(p.VALIDATION, f"unknown method {method!r}"), app_key, None, None
        reply, serial = handler(self, data, app_key, user_tax, now)
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

    def _issue(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        order = data.get("order")
        serial = order.get("orderNo") if isinstance(order, dict) else None
        serial = serial if isinstance(serial, str) else None
        problems = p.check_order(order, user_tax)
        if problems:
            return env(p.VALIDATION, "; ".join(problems)), serial
        assert isinstance(order, dict) and serial is not None
        if self.store.order(serial) is not None:
            return env(
                p.DUPLICATE_ORDER, "订单编号或流水号不能重复 (order number repeated)"
            ), serial
        stored = dict(order)
        if self.dice.hit(self.faults.rejection_rate):
            stored["_fate"] = "22"
        serial_no = self.store.accept_order(
            stored,
            app_key=app_key,
            now=now,
            due_at=now + self.config.issue_delay,
            totals=p.order_totals(order),
        )
        if self.forget_left > 0:
            self.forget_left -= 1
            self.store.forget(serial)
        result = {"invoiceSerialNum": serial_no}
        return env(p.SUCCESS, "开票提交成功", result, committed=True), serial

    def _forgotten(self, row: Mapping[str, Any], now: float) -> bool:
        after = self.faults.forget_after_seconds
        return bool(row["forgotten"]) or (
            after is not None and float(row["created_at"]) <= now - after
        )

    def _list(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        """`queryInvoiceList`: the seller's issued invoices in a window of at most 10 days."""
        problems = []
        if data.get("taxnum") != user_tax:
            problems.append("taxnum must equal the userTax header")
        window = []
        for name in ("startTime", "endTime"):
            try:
                moment = datetime.strptime(str(data.get(name) or ""), TIME_FORMAT)
                window.append(moment.replace(tzinfo=BEIJING).timestamp())
            except ValueError:
                problems.append(f"{name}: yyyy-MM-dd HH:mm:ss")
        if len(window) == 2 and not 0 <= window[1] - window[0] <= LIST_MAX_SECONDS:
            problems.append("endTime must follow startTime by at most 10 days")
        page, size = _whole(data.get("pageNo")), _whole(data.get("pageSize"))
        if page is None or page < 1:
            problems.append("pageNo: a whole number from 1")
        if size is None or not 1 <= size <= LIST_MAX_PAGE_SIZE:
            problems.append(f"pageSize: 1 to {LIST_MAX_PAGE_SIZE}")
        if problems:
            return env(p.VALIDATION, "; ".join(problems)), None
        assert page is not None and size is not None
        self._advance(now)  # the list shows the platform as it is
        total, rows = self.store.list_orders(
            user_tax,
            int(window[0] * 1000),
            int(window[1] * 1000) + 999,
            (page - 1) * size,
            size,
        )
        items = [self._list_item(row, now) for row in rows]
        return env(p.SUCCESS, "", {"totalCount": total, "invoices": items}), None

    def _list_item(self, row: Mapping[str, Any], now: float) -> dict[str, Any]:
        order = json.loads(row["payload"])
        item = _item(row, self.base_url)
        item.update(
            salerTaxNum=order.get("salerTaxNum"),
            payerName=order.get("buyerName"),
            payerTaxNo=order.get("buyerTaxNum") or "",
            invoiceLine=order.get("invoiceLine"),
        )
        if row.get("red_bill_id"):
            item["orderNo"] = row["red_bill_id"]
        elif row["portal"] or self._forgotten(row, now):
            del item["orderNo"]
        return item

    def _credit(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        """The company's credit line: `bysxed` this period's line, `kysyed` what is left,
        `ztsxbz` whether the bureau paused it (the bureau's own field names)."""
        faults = self.faults
        limit = self.config.credit_limit
        used = self.store.issued_gross(user_tax)
        left = max(Decimal(0), limit - used)
        if faults.credit_exhausted or user_tax in faults.credit_exhausted_for:
            left = Decimal(0)
        result = {"bysxed": str(limit), "kysyed": str(left), "ztsxbz": "N"}
        return env(p.SUCCESS, "查询成功", result), None

    def _query(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        serials, orders = data.get("serialNos"), data.get("orderNos")
        keys = serials if serials else orders
        if not isinstance(keys, list) or not 1 <= len(keys) <= 50 or (serials and orders):
            return env(p.VALIDATION, "serialNos or orderNos: 1 to 50 values"), None
        rows = []
        for key in keys:
            key = str(key)
            row = self.store.order_by_serial(key) if serials else self.store.order(key)
            if row is not None and self._forgotten(row, now):
                row = None
            if row is not None and row["status"] == "20" and row["due_at"] <= now:
                self._finish(row["order_no"], now)
                row = self.store.order(row["order_no"])
            if row is not None:
                rows.append(_item(row, self.base_url))
        if not rows:
            return env(p.NOT_FOUND, "发票不存在 (no invoice)"), None
        return env(p.SUCCESS, "", rows), str(keys[0])

    def _reinvoice(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        order_no = str(data.get("orderno") or "")
        row = self.store.order(order_no)
        if row is None or (data.get("fpqqlsh") and data["fpqqlsh"] != row["serial_no"]):
            return env(p.NOT_FOUND, "发票不存在 (no invoice)"), order_no
        if row["status"] in ("22", "24"):
            if row["reinvoices"] >= 20:
                return env(p.RETRY_LIMIT, "同一流水号单日最多重试20次"), order_no
            payload = json.loads(row["payload"])
            if payload.get("_fate") == "22" and row["status"] == "22":
                return env(p.SUCCESS, "重试开票中"), order_no  # fails the same way again
            self.store.requeue(order_no, now + self.config.issue_delay)
        return env(p.SUCCESS, "重试开票中"), order_no

    def _save_red_form(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        bill_id = data.get("billId")
        if not isinstance(bill_id, str) or not bill_id:
            return env(p.VALIDATION, "billId is required"), None
        problems = []
        if data.get("applySource") != "0":
            problems.append("applySource: 0 (seller)")
        if data.get("redReason") not in RED_REASONS:
            problems.append("redReason: 1, 2, 3 or 4")
        if data.get("sellerTaxNo") != user_tax:
            problems.append("sellerTaxNo must equal the userTax header")
        if not data.get("buyerName"):
            problems.append("buyerName is required")
        if problems:
            return env(p.VALIDATION, "; ".join(problems)), bill_id
        if self.store.red_form(bill_id) is not None:
            return env(p.RED_FORM_EXISTS, "红字确认单申请号不能重复 (billId repeated)"), bill_id
        blue_no = str(data.get("blueElecInvoiceNumber") or "")
        blue = self.store.order_by_invoice_no(blue_no)
        if blue is None or blue["kind"] != "BLUE" or blue["status"] != "2":
            return env(p.VALIDATION, "蓝字发票不存在 (no such issued blue invoice)"), bill_id
        live = self.store.red_forms_for_blue(blue_no)
        full = [f for f in live if "_red_lines" not in json.loads(f["payload"])]
        if full:
            return env(
                p.VALIDATION,
                f"该蓝票已有红字确认单 (already reversed by {full[0]['bill_id']})",
            ), bill_id
        detail = data.get("detail")
        if live and not detail:
            return env(
                p.VALIDATION,
                f"该蓝票已部分冲红 ({len(live)} partial form(s)); a full form would exceed it",
            ), bill_id
        over = rules.check_red_form_limits(
            self.config.red_limits,
            issued_at=(
                datetime.fromtimestamp(blue["invoice_time"] / 1000, UTC)
                if blue["invoice_time"]
                else None
            ),
            live_forms=len(live),
            now=datetime.fromtimestamp(now, UTC),
        )
        if over:
            return env(p.VALIDATION, "; ".join(v.message for v in over)), bill_id
        stored = dict(data)
        if detail:  # a partial form: those units of those blue lines (部分冲红)
            red_lines, why = self._partial(json.loads(blue["payload"]), detail, live)
            if why:
                return env(p.VALIDATION, why), bill_id
            stored["_red_lines"] = red_lines
        self.store.add_red_form(bill_id, blue_no, stored, "15", now, now + self.config.issue_delay)
        return env(p.SUCCESS, "", bill_id, committed=True), bill_id

    def _find_form(self, data: Mapping[str, Any]) -> dict[str, Any] | str | None:
        """The form named by billUuid > billId > billNo (the platform's priority); None when
        no such form; a problem text when none of the three is given."""
        uuid, bill_id, bill_no = (data.get(k) for k in ("billUuid", "billId", "billNo"))
        if isinstance(uuid, str) and uuid:
            if not uuid.startswith("sandbox"):
                return None
            return self.store.red_form(uuid.removeprefix("sandbox").upper())
        if isinstance(bill_id, str) and bill_id:
            return self.store.red_form(bill_id)
        if isinstance(bill_no, str) and bill_no:
            return self.store.red_form_by_no(bill_no)
        return "billUuid, billId or billNo is required"

    def _fresh_form(self, form: dict[str, Any], now: float) -> dict[str, Any]:
        if form["due_at"] <= now and form["red_order_no"] is None:
            self._advance_form(form, now)
            form = self.store.red_form(form["bill_id"]) or form
            if form["status"] in ("01", "04") and not form["red_order_no"]:
                self._advance_form(form, now)
                form = self.store.red_form(form["bill_id"]) or form
        return form

    @staticmethod
    def _partial(
        order: Mapping[str, Any], detail: object, live: list[dict[str, Any]]
    ) -> tuple[list[dict[str, str | int]], str | None]:
        """The red lines of a partial form's `detail` ([{blueDetailIndex, goodsNum}], the
        index being the blue line's position from 1, the number negative), checked against
        the blue order and the units of the live forms before it (rules.check_returnable);
        or the reason it is refused."""
        if not isinstance(detail, list) or not detail:
            return [], "detail: a non-empty list of {blueDetailIndex, goodsNum}"
        wanted: list[dict[str, object]] = []
        for i, d in enumerate(detail):
            if not isinstance(d, dict):
                return [], f"detail[{i}]: an object"
            index, num = d.get("blueDetailIndex"), d.get("goodsNum")
            if not isinstance(index, str) or not index.isdigit():
                return [], f"detail[{i}].blueDetailIndex: the blue line's number (1..n)"
            if not isinstance(num, str) or not num.startswith("-"):
                return [], f"detail[{i}].goodsNum: a negative number"
            wanted.append({"line_no": int(index), "quantity": num[1:]})
        problems, lines = rules.check_red_form_lines(wanted)
        if problems:
            return [], "; ".join(f"detail: {v.message}" for v in problems)
        blue = canonical_lines(order)
        before_units: dict[int, Decimal] = {}
        before: dict[int, rules.ReturnedUnits] = {}
        for form in live:
            for line in json.loads(form["payload"]).get("_red_lines") or []:
                n = int(line["line_no"])
                prior = before.get(n, rules.ReturnedUnits())
                before[n] = rules.ReturnedUnits(
                    prior.quantity - Decimal(line["quantity"]),
                    prior.net - Decimal(line["net_amount"]),
                    prior.tax - Decimal(line["tax_amount"]),
                    prior.gross - Decimal(line["gross_amount"]),
                )
                before_units[n] = before[n].quantity
        refused = rules.check_returnable(blue, lines, before_units)
        if refused:
            return [], "; ".join(v.message for v in refused)
        return rules.partial_red_lines(blue, lines, before), None

    def _query_red_forms(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        identity = data.get("identity")
        if identity not in ("0", "1"):
            return env(p.VALIDATION, "identity: 0 (seller) or 1 (buyer)"), None
        if any(data.get(k) for k in ("billUuid", "billId", "billNo")):
            found = self._find_form(data)
            assert not isinstance(found, str)
            form = None if found is None else self._fresh_form(found, now)
            forms = [] if form is None else [self._form_view(form)]
            key = str(data.get("billId") or data.get("billUuid") or data.get("billNo"))
            return env(p.SUCCESS, "", {"total": len(forms), "list": forms}), key
        start, end = p.day_range(data.get("billTimeStart"), data.get("billTimeEnd"))
        if start is None or end is None:
            return env(
                p.VALIDATION,
                "billTimeStart and billTimeEnd (yyyy-MM-dd, at most 90 days) are required "
                "without billUuid, billId or billNo",
            ), None
        status = data.get("billStatus") or None
        try:
            size = min(int(data.get("pageSize") or 10), 50)
            page = max(int(data.get("pageNo") or 1), 1)
        except (TypeError, ValueError):
            return env(p.VALIDATION, "pageSize and pageNo are numbers"), None
        forms = []
        for form in self.store.red_forms_since(start, end):
            form = self._fresh_form(form, now)
            payload = json.loads(form["payload"])
            mine = payload.get("sellerTaxNo" if identity == "0" else "buyerTaxNo") == user_tax
            if mine and (status is None or form["status"] == status):
                forms.append(self._form_view(form))
        chunk = forms[(page - 1) * size : page * size]
        return env(p.SUCCESS, "", {"total": len(forms), "list": chunk}), None

    def _confirm(
        self, data: dict[str, Any], app_key: str, user_tax: str, now: float
    ) -> tuple[Answer, str | None]:
        """`nuonuo.OpeMplatform.confirm`: the other side's answer to a form; here the seller
        (identity 0) answers a form its buyer entered (status 03)."""
        found = self._find_form(data)
        if isinstance(found, str):
            return env(p.VALIDATION, found), None
        agreement, reason = data.get("confirmAgreement"), data.get("confirmReason")
        if data.get("identity") != "0" or agreement not in ("0", "1"):
            return env(p.VALIDATION, "identity: 0 (seller); confirmAgreement: 0 or 1"), None
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            return env(p.VALIDATION, "confirmReason: at most 200 characters"), None
        if found is None:
            return env(p.NOT_FOUND, "红字确认单不存在 (no such form)"), None
        form = self._fresh_form(found, now)
        payload = json.loads(form["payload"])
        if payload.get("sellerTaxNo") != user_tax:
            return env(p.NOT_FOUND, "红字确认单不存在 (no such form)"), form["bill_id"]
        if form["status"] != "03":
            return env(
                p.FORM_NOT_PENDING,
                f"红字确认单状态为{form['status']}，不可确认 (the form is not waiting for you)",
            ), form["bill_id"]
        agreed = agreement == "1"
        self.store.set_red_form(
            form["bill_id"],
            status="04" if agreed else "06",
            due_at=now + self.config.issue_delay,
            payload={**payload, "confirmReason": reason, "confirmTime": now},
        )
        return env(p.SUCCESS, "", None, committed=True), form["bill_id"]

    def _form_view(self, form: dict[str, Any]) -> dict[str, Any]:
        payload = json.loads(form["payload"])
        blue = self.store.order_by_invoice_no(form["blue_no"])
        red = self.store.order(form["red_order_no"]) if form["red_order_no"] else None
        view: dict[str, Any] = {
            "billId": form["bill_id"],
            "billNo": form["bill_no"],
            "billUuid": "sandbox" + form["bill_id"].lower(),
            "billStatus": form["status"],
            "requestStatus": "2",
            "openStatus": 1 if red is not None else 0,
            "applySource": int(payload.get("applySource") or 0),
            "billTime": p.beijing_time(form["created_at"]),
            "confirmTime": p.beijing_time(payload["confirmTime"])
            if payload.get("confirmTime")
            else None,
            "blueInvoiceLine": payload.get("blueInvoiceLine"),
            "blueElecInvoiceNumber": form["blue_no"],
            "sellerTaxNo": payload.get("sellerTaxNo"),
            "buyerName": payload.get("buyerName"),
            "redReason": payload.get("redReason"),
            "taxExcludedAmount": str(-Decimal(blue["net"])) if blue else None,
            "taxAmount": str(-Decimal(blue["tax"])) if blue else None,
        }
        partial = payload.get("_red_lines")
        if partial:
            net, tax, _gross = _red_totals(partial)
            view["taxExcludedAmount"], view["taxAmount"] = str(net), str(tax)
        if red is not None and red["status"] == "2":
            view["redInvoiceNumber"] = red["invoice_no"]
            view["invoiceSerialNum"] = red["serial_no"]
        messages = {
            "05": "购方已拒绝 (the buyer refused)",
            "06": "销方已拒绝 (the seller refused)",
            "07": "超72小时未确认 (not confirmed within 72 h)",
        }
        if form["status"] in messages:
            view["billMessage"] = messages[form["status"]]
        return view

    # --- control plane ----------------------------------------------------------------

    def _raise_buyer_form(self, body: bytes) -> Answer:
        return _raise_buyer_form_reply(self, body)

    def _portal_invoice(self, body: bytes) -> Answer:
        """`POST /_sandbox/portal-invoices` `{"order": {...}, "issued_at": ISO?, "app_key": ?}`
        (or a JSON list of those, all or none): invoices issued by hand in the portal (a
        `requestBillingNew` order without an `orderNo`), issued at once; they appear in
        `queryInvoiceList` without an order number."""
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return answer(400, {"code": "INVALID_JSON", "message": "the body is not JSON"})
        entries = data if isinstance(data, list) else [data]
        now = time.time()
        accepted: list[tuple[dict[str, Any], str, float]] = []
        for n, entry in enumerate(entries):
            order = entry.get("order") if isinstance(entry, dict) else None
            if not isinstance(order, dict):
                return answer(422, {"code": "VALIDATION_FAILED", "message": f"[{n}].order"})
            issued_at = _portal_time(entry.get("issued_at"), now)
            if issued_at is None:
                return answer(422, {"code": "VALIDATION_FAILED", "message": f"[{n}].issued_at"})
            order = {**order, "orderNo": "PORTAL"}
            problems = p.check_order(order, str(order.get("salerTaxNum") or ""))
            if problems:
                message = f"[{n}]: " + "; ".join(problems)
                return answer(422, {"code": "VALIDATION_FAILED", "message": message})
            app_key = str(entry.get("app_key") or next(iter(self.config.credentials), ""))
            accepted.append((order, app_key, issued_at))
        items = []
        for order, app_key, issued_at in accepted:
            order_no = self.store.add_portal_order(
                order, app_key=app_key, now=now, issued_at=issued_at, totals=p.order_totals(order)
            )
            row = self.store.order(order_no)
            assert row is not None
            items.append(self._list_item({**row, "red_bill_id": None}, now))
        return answer(201, {"invoices": items} if isinstance(data, list) else items[0])

    def _control(self, method: str, path: str, scope: Scope, body: bytes) -> Answer:
        if self.config.strict:
            return answer(404, {"code": "NOT_FOUND", "message": "control plane disabled"})
        if path == "/_sandbox/faults":
            if method == "GET":
                return answer(200, self.faults.model_dump())
            if method == "DELETE":
                self.faults = self.config.faults
                return answer(200, self.faults.model_dump())
            if method == "POST":
                try:
                    update = json.loads(body or b"{}")
                    if not isinstance(update, dict):
                        raise ValueError("not an object")
                    self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
                except (ValueError, ValidationError) as exc:
                    return answer(422, {"code": "INVALID_FAULTS", "message": str(exc)})
                if "fail_next_issue_calls" in update:
                    self.issue_failures_left = self.faults.fail_next_issue_calls
                if "forget_next_serials" in update:
                    self.forget_left = self.faults.forget_next_serials
                return answer(200, self.faults.model_dump())
        if path == "/_sandbox/invoices" and method == "GET":
            invoices = self.store.issued()
            return answer(200, {"count": len(invoices), "invoices": invoices})
        if path == "/_sandbox/requests" and method == "GET":
            q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
            since = int(q.get("since_id", "0") or 0)
            limit = min(int(q.get("limit", "1000") or 1000), 10_000)
            return answer(200, {"requests": self.store.requests(since, limit)})
        if path == "/_sandbox/portal-invoices" and method == "POST":
            return self._portal_invoice(body)
        if path == "/_sandbox/tokens" and method == "GET":
            return answer(200, {"apps": self.store.token_stats(), "limit": self.config.token_limit})
        if path == "/_sandbox/tokens/expire" and method == "POST":
            self.store.expire_tokens()
            return answer(200, {"expired": True})
        if path == "/_sandbox/buyer-red-forms" and method == "POST":
            return self._raise_buyer_form(body)
        m = re.fullmatch(r"/_sandbox/red-forms/(?P<bill>[^/]+)/(?P<d>confirm|reject)", path)
        if m is not None and method == "POST":
            form = self.store.red_form(m["bill"])
            if form is None:
                return answer(404, {"code": "NOT_FOUND", "message": "no such red form"})
            if form["status"] == "15":  # the bureau has not answered the application yet
                return answer(
                    409, {"code": "NOT_YET_PENDING", "message": "the form is still applying (15)"}
                )
            if form["status"] == "02":
                confirmed = m["d"] == "confirm"
                self.store.set_red_form(
                    form["bill_id"], status="04" if confirmed else "05", due_at=time.time()
                )
                if confirmed:
                    self._issue_red(self.store.red_form(form["bill_id"]) or form, time.time())
            return answer(200, self._form_view(self.store.red_form(form["bill_id"]) or form))
        return answer(404, {"code": "NOT_FOUND", "message": f"no route {method} {path}"})


def _raise_buyer_form_reply(app: NuonuoApp, body: bytes) -> Answer:
    """The buyer enters a form against one of the seller's invoices (status 03):
    `{"original_invoice_no": "...", "reason": "SALES_RETURN", "ttl_seconds": 259200}`."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return answer(422, {"code": "VALIDATION_FAILED", "message": "a JSON object"})
    number = data.get("original_invoice_no")
    reason = RED_REASON_CODES.get(str(data.get("reason", "SALES_RETURN")))
    ttl = data.get("ttl_seconds", app.config.red_form_ttl)
    if reason is None or isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        return answer(422, {"code": "VALIDATION_FAILED", "message": "reason or ttl_seconds"})
    blue = app.store.order_by_invoice_no(str(number))
    if blue is None or blue["kind"] != "BLUE" or blue["status"] != "2":
        return answer(404, {"code": "ORIGINAL_NOT_FOUND", "message": "no issued blue invoice"})
    existing = app.store.red_form_for_blue(blue["invoice_no"])
    if existing is not None:
        return answer(409, {"code": "ALREADY_REVERSED", "existing_bill_id": existing["bill_id"]})
    order = json.loads(blue["payload"])
    now = time.time()
    bill_id = app.store.next_buyer_bill_id()
    payload = {
        "billId": bill_id,
        "applySource": "1",
        "blueInvoiceLine": order.get("invoiceLine"),
        "blueElecInvoiceNumber": blue["invoice_no"],
        "sellerTaxNo": order.get("salerTaxNum"),
        "sellerName": order.get("salerName"),
        "buyerTaxNo": order.get("buyerTaxNum"),
        "buyerName": order.get("buyerName"),
        "redReason": reason,
    }
    app.store.add_red_form(bill_id, blue["invoice_no"], payload, "03", now, now + float(ttl))
    form = app.store.red_form(bill_id)
    assert form is not None
    return answer(201, app._form_view(form))


def _whole(value: object) -> int | None:
    text = str(value) if isinstance(value, (int, str)) else ""
    return int(text) if text.isdigit() else None


def _portal_time(value: object, now: float) -> float | None:
    if not value:
        return now
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


_Handler = Callable[[NuonuoApp, dict[str, Any], str, str, float], tuple[Answer, str | None]]
_METHODS: Final[dict[str, _Handler]] = {
    "nuonuo.OpeMplatform.requestBillingNew": NuonuoApp._issue,
    "nuonuo.OpeMplatform.queryInvoiceResult": NuonuoApp._query,
    p.CREDIT_METHOD: NuonuoApp._credit,
    "nuonuo.OpeMplatform.reInvoice": NuonuoApp._reinvoice,
    "nuonuo.OpeMplatform.saveInvoiceRedConfirm": NuonuoApp._save_red_form,
    "nuonuo.OpeMplatform.queryInvoiceRedConfirm": NuonuoApp._query_red_forms,
    "nuonuo.OpeMplatform.confirm": NuonuoApp._confirm,
    "nuonuo.OpeMplatform.queryInvoiceList": NuonuoApp._list,
}

_STATUS_TEXT: Final = {
    "2": "开票完成（最终状态）",
    "20": "开票中",
    "21": "开票成功签章中",
    "22": "开票失败",
    "24": "开票成功签章失败",
}


def _item(row: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """One `queryInvoiceResult` item."""
    item: dict[str, Any] = {
        "serialNo": row["serial_no"],
        "orderNo": row["order_no"],
        "status": row["status"],
        "statusMsg": _STATUS_TEXT.get(row["status"], ""),
        "failCause": row["fail_cause"] or "",
        "invoiceType": 2 if row["kind"] == "RED" else 1,
        "exTaxAmount": row["net"],
        "taxAmount": row["tax"],
        "orderAmount": row["gross"],
    }
    if row["status"] == "2":
        number = row["invoice_no"]
        base = f"{base_url}/fp/{number}"
        item.update(
            invoiceNo=number,
            invoiceCode="",
            allElectronicInvoiceNumber=number,
            invoiceTime=row["invoice_time"],
            checkCode=number[-6:],
            qrCode=f"01,32,,{number},{row['gross']},,",
            pdfUrl=f"{base}.pdf",  # served: a real PDF
            ofdUrl="",  # empty, as for an invoice without OFD: the sandbox renders none
            xmlUrl=f"{base}.xml",  # served
        )
        if row["original_invoice_no"]:
            item["oldEleInvoiceNumber"] = row["original_invoice_no"]
    return item


#: An issued invoice's file link (`pdfUrl`, `ofdUrl`, `xmlUrl`).
_FILE: Final = re.compile(r"/fp/(?P<no>[0-9]{1,40})\.(?P<fmt>pdf|ofd|xml)")


def _file_answer(row: Mapping[str, Any], fmt: str) -> Answer:
    """The PDF or XML of an issued order (the sandbox renders no OFD)."""
    payload: dict[str, Any] = json.loads(row["payload"])
    issued = (
        None
        if row["invoice_time"] is None
        else datetime.fromtimestamp(row["invoice_time"] / 1000, UTC).isoformat()
    )
    if fmt == "pdf":
        title = "Credit note (red invoice)" if row["kind"] == "RED" else "E-invoice"
        header = [
            f"No. {row['invoice_no']}  issued {issued or ''}",
            f"Seller: {payload.get('salerName', '')} ({payload.get('salerTaxNum', '')})",
            f"Buyer: {payload.get('buyerName', '')} ({payload.get('buyerTaxNum') or '-'})",
        ]
        if row["original_invoice_no"]:
            header.append(f"Reverses invoice {row['original_invoice_no']}")
        lines = [
            f"{i}. {d.get('goodsName', '')}  qty {d.get('num') or '-'}  "
            f"net {d.get('taxExcludedAmount', '')}  rate {d.get('taxRate', '')}  "
            f"tax {d.get('tax', '')}"
            for i, d in enumerate(payload.get("invoiceDetail") or [], start=1)
            if isinstance(d, dict)
        ]
        total = f"Net {row['net']}  Tax {row['tax']}  Total {row['gross']} CNY"
        body = pdf_sheet(title, issued, header, lines, total)
        return Answer(200, body, content_type=b"application/pdf")
    root = ET.Element("invoice", {"number": str(row["invoice_no"]), "kind": str(row["kind"])})
    for tag, value in (
        ("serialNo", row["serial_no"]),
        ("issuedAt", issued),
        ("originalNumber", row["original_invoice_no"]),
        ("buyerName", payload.get("buyerName")),
        ("net", row["net"]),
        ("tax", row["tax"]),
        ("gross", row["gross"]),
    ):
        if value is not None:
            ET.SubElement(root, tag).text = str(value)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Answer(200, body, content_type=b"application/xml")


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1").lower()
        out.setdefault(name, value.decode("utf-8", "replace"))
    return out


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            return b"".join(chunks)


async def _send(send: Send, reply: Answer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type),
                (b"content-length", str(len(reply.body)).encode()),
                *reply.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})
