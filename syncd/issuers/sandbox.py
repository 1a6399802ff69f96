"""Client for the sandbox platform's API (docs/sandbox.md), the reference provider.

Sync (`SandboxIssuer`, thread-safe: worker threads call it) and async
(`AsyncSandboxIssuer`, the daemon's event loop: `SandboxIssuer.aio`) share one pure
response classifier, so both map the wire onto `syncd.issuers.base` results identically.

The sync client gives every calling thread its own keep-alive connection
(`syncd.issuers.transport`): a single httpcore pool shared by dozens of threads cost each
request a scan (and a socket poll) of every pooled connection under the pool's lock, and
httpx's request machinery more CPU than the rest of the daemon's work per document.
"""

from __future__ import annotations

import email.utils
import json
import os
import queue
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote, urlencode

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from syncd.config.settings import (
    check_issuer_tls,
    check_issuer_url,
    check_proxy_url,
    mask_url_userinfo,
)
from syncd.issuers import signing
from syncd.issuers.aio_transport import AsyncConnectionPool, AsyncWire
from syncd.issuers.base import (
    Duplicate,
    InvoiceListQuery,
    InvoicePayload,
    Issued,
    IssueResult,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    PlatformInvoice,
    PlatformState,
    Processing,
    Reason,
    Rejected,
    Retryable,
    ReversalRequest,
    Totals,
    listing_error,
    resolve_after_submit,
    serial_of,
)
from syncd.issuers.proxy import Proxy, resolve_proxy
from syncd.issuers.redforms import (
    BuyerRedForm,
    DecideAnswer,
    FormAnswer,
    FormDecided,
    FormRefused,
    FormStatus,
    FormsUnavailable,
    ListAnswer,
)
from syncd.issuers.transport import (
    KeepAliveConnection,
    Origin,
    Reply,
    Wire,
    client_ssl_context,
)

Operation: TypeAlias = Literal["issue", "query", "reverse", "query_reversal", "document", "list"]
#: invoices per page of `GET /v1/invoices` (the sandbox's largest page) and the longest
#: range of dates one list call may cover (days)
LIST_PAGE_SIZE: Final = 100
LIST_WINDOW_DAYS: Final = 367

# Provider failure codes after which the same serial may simply be submitted again.
RESUBMITTABLE_FAILURES: Final = frozenset({"SEAL_FAILED"})
# Account-level conditions only a person can clear.
HUMAN_CODES: Final = frozenset(
    {
        "SESSION_EXPIRED",
        "CREDIT_EXHAUSTED",
        "UNKNOWN_APP_KEY",
        "BAD_SIGNATURE",
        "MISSING_AUTH_HEADERS",
        "TIMESTAMP_SKEW",
        "INVALID_TIMESTAMP",
        "INVALID_NONCE",
        "SERIAL_CONFLICT",
    }
)


class SandboxIssuerSettings(BaseModel):
    """How syncd reaches the sandbox platform (embedded in syncd's main config).

    The secret comes from `app_secret` (e.g. injected from an env/secret) or from
    `app_secret_file` (a mounted Kubernetes secret); it is held as `SecretStr` so
    it never shows in reprs, logs or config dumps.
    """

    # hide_input_in_errors: a rejected URL may carry credentials in its userinfo
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    provider: Literal["sandbox"] = "sandbox"
    base_url: str = "http://127.0.0.1:18700"
    app_key: str = Field(min_length=1)
    app_secret: SecretStr
    app_secret_file: Path | None = None
    connect_timeout: float = Field(3.0, gt=0)
    read_timeout: float = Field(10.0, gt=0)
    write_timeout: float = Field(10.0, gt=0)
    pool_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(20, ge=1)
    max_keepalive_connections: int = Field(10, ge=0)
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    allow_insecure_http: bool = False
    proxy: str | None = Field(
        None, description="http://[user:password@]host:port; unset: the proxy environment"
    )
    callback_url: None = Field(
        None, description="the sandbox has no result callbacks; results are polled by serial"
    )
    query_horizon_seconds: float | None = Field(
        None,
        gt=0,
        description="how long the platform answers queries by serial; read by syncd's "
        "driver (docs/issuers.md, 'The query horizon'), not by this client",
    )

    @model_validator(mode="before")
    @classmethod
    def _secret_from_file(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("app_secret_file") is None:
            return data
        if data.get("app_secret") is not None:
            raise ValueError("give app_secret or app_secret_file, not both")
        path = Path(data["app_secret_file"])
        try:
            secret = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"app_secret_file {path}: {exc.strerror}") from None
        return {**data, "app_secret": secret}

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        return check_proxy_url(value) if value is not None else None

    @model_validator(mode="after")
    def _transport(self) -> SandboxIssuerSettings:
        # The same rules as syncd's config (which reports them with file and line).
        check_issuer_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        check_issuer_tls(self.base_url, self.ca_file, self.client_cert_file, self.client_key_file)
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https:// platform: the system CAs, or only `ca_file`
        (a private CA); a client certificate for mutual TLS. None for plain http."""
        return client_ssl_context(
            self.base_url, self.ca_file, self.client_cert_file, self.client_key_file
        )

    @field_validator("app_secret")
    @classmethod
    def _non_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("app_secret is empty")
        return value

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.write_timeout,
            pool=self.pool_timeout,
        )

    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
        )


# --- the pure classifier -------------------------------------------------------------


def classify_response(
    op: Operation,
    serial: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> IssueResult:
    """One HTTP answer -> one result. Pure: unit-tested without a network."""
    sends = op in ("issue", "reverse")
    try:
        data = orjson.loads(body) if body else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        reason = Reason("GARBLED_RESPONSE", f"HTTP {status} with a body that is not a JSON object")
        return OutcomeUnknown(serial, reason) if sends else Retryable(serial, reason)
    code = str(data.get("code") or f"HTTP_{status}")
    message = str(data.get("message") or "")
    reason = Reason(code, message)

    if status in (200, 202):
        return _from_view(op, serial, data)
    if status == 429:
        return Retryable(serial, reason, retry_after=_retry_after(headers, data), throttled=True)
    if status >= 500:
        if sends and status == 504:  # a gateway gave up; the platform may have committed
            return OutcomeUnknown(serial, reason)
        return Retryable(serial, reason, retry_after=_retry_after(headers, data))
    if status in (400, 422) and code not in HUMAN_CODES:
        errors = data.get("errors")
        reasons = (
            tuple(
                Reason(str(e.get("code")), str(e.get("message", "")), e.get("path"))
                for e in errors
                if isinstance(e, dict)
            )
            if isinstance(errors, list) and errors
            else (reason,)
        )
        return Rejected(serial, reasons)
    if status == 409:
        if code == "DUPLICATE_SERIAL":
            return Duplicate(serial, reason)
        if code == "ALREADY_REVERSED":
            existing = data.get("existing_serial")
            suffix = f" (by serial {existing})" if existing else ""
            return Rejected(serial, (Reason(code, message + suffix),))
        return NeedsHuman(serial, reason)
    if status == 401 and code == "NONCE_REUSED":
        return Retryable(serial, reason)  # the next attempt carries a fresh nonce
    if status == 404 and op in ("query", "query_reversal", "document") and code == "NOT_FOUND":
        return NotFound(serial)
    return NeedsHuman(serial, reason)


def _from_view(op: Operation, serial: str, data: Mapping[str, Any]) -> IssueResult:
    status = data.get("status")
    if status in ("PROCESSING", "PENDING_CONFIRMATION"):
        return Processing(serial, str(status), awaiting_confirmation=status != "PROCESSING")
    if status == "ISSUED":
        reversal = op in ("reverse", "query_reversal")
        invoice_no = data.get("red_invoice_no" if reversal else "invoice_no")
        kind = "RED" if reversal else data.get("kind", "BLUE")
        return Issued(
            serial=serial,
            invoice_no=str(invoice_no),
            issued_at=str(data.get("issued_at")),
            check_code=data.get("check_code"),
            kind="RED" if kind == "RED" else "BLUE",
            totals=_totals(data.get("totals")),
            original_invoice_no=data.get("original_invoice_no"),
            files=dict(data.get("files") or {}),
        )
    if status == "FAILED":
        reason = Reason(
            str(data.get("failure_code") or "FAILED"), str(data.get("failure_reason") or "")
        )
        if reason.code in RESUBMITTABLE_FAILURES:
            return Retryable(serial, reason, resubmit=True)
        return Rejected(serial, (reason,))
    reason = Reason("UNEXPECTED_STATUS", f"the platform answered status {status!r}")
    return (
        OutcomeUnknown(serial, reason) if op in ("issue", "reverse") else Retryable(serial, reason)
    )


def _totals(value: object) -> Totals | None:
    if not isinstance(value, Mapping):
        return None
    try:
        return Totals(
            Decimal(str(value["net_amount"])),
            Decimal(str(value["tax_amount"])),
            Decimal(str(value["gross_amount"])),
        )
    except (KeyError, InvalidOperation):
        return None


def _retry_after(headers: Mapping[str, str], data: Mapping[str, Any]) -> float | None:
    raw = headers.get("retry-after")
    if raw is not None:
        raw = raw.strip()
        if raw.isdigit():
            return float(raw)
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    hint = data.get("retry_after")
    return float(hint) if isinstance(hint, (int, float)) else None


def list_path(query: InvoiceListQuery, page: int, page_size: int = LIST_PAGE_SIZE) -> str:
    """The request target of one page of the invoice list."""
    params = {
        "seller_tax_id": query.seller_tax_id,
        "issued_from": query.issued_from.isoformat(),
        "issued_to": query.issued_to.isoformat(),
    }
    if query.buyer_tax_id is not None:
        params["buyer_tax_id"] = query.buyer_tax_id
    if query.gross_amount is not None:
        params["gross_amount"] = format(query.gross_amount, "f")
    params.update(page=str(page), page_size=str(page_size))
    return "/v1/invoices?" + urlencode(params)


def classify_list_page(
    status: int, headers: Mapping[str, str], body: bytes
) -> tuple[int, list[PlatformInvoice]] | IssueResult:
    """One page of `GET /v1/invoices` -> (total, invoices), or the result a refusal means.

    Pure. An item the client cannot read makes the whole page a failure (`Retryable`
    with `GARBLED_LIST`): reconciliation must not silently miss an invoice."""
    if status != 200:
        return classify_response("list", "", status, headers, body)
    try:
        data = orjson.loads(body)
        total = int(data["total"])
        items = [platform_invoice(item) for item in data["invoices"]]
    except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
        return Retryable("", Reason("GARBLED_LIST", f"an unreadable invoice list page: {exc}"))
    return total, items


def platform_invoice(item: Mapping[str, Any]) -> PlatformInvoice:
    """One item of the sandbox's invoice list (raises on a malformed item)."""
    totals = item["totals"]
    kind = item["kind"]
    if kind not in ("BLUE", "RED"):
        raise ValueError(f"kind {kind!r}")
    status = item.get("status") or "ISSUED"
    states: dict[str, PlatformState] = {"ISSUED": "ISSUED", "REVERSED": "REVERSED"}
    if status not in states:
        raise ValueError(f"status {status!r}")
    state = states[status]
    invoice_type = item.get("invoice_type")
    return PlatformInvoice(
        invoice_no=str(item["invoice_no"]),
        kind=kind,
        issued_at=datetime.fromisoformat(str(item["issued_at"])),
        totals=Totals(
            Decimal(str(totals["net_amount"])),
            Decimal(str(totals["tax_amount"])),
            Decimal(str(totals["gross_amount"])),
        ),
        state=state,
        serial=item.get("serial") or None,
        original_invoice_no=item.get("original_invoice_no") or None,
        red_invoice_no=item.get("red_invoice_no") or None,
        seller_tax_id=item.get("seller_tax_id") or None,
        buyer_tax_id=item.get("buyer_tax_id") or None,
        buyer_name=item.get("buyer_name") or None,
        invoice_type=invoice_type if invoice_type in ("SPECIAL", "ORDINARY") else None,
    )


def classify_exception(op: Operation, serial: str, exc: httpx.HTTPError) -> IssueResult:
    """A transport failure -> a result. Before sending: retryable. After: unknown."""
    reason = Reason(type(exc).__name__.upper(), str(exc) or type(exc).__name__)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return Retryable(serial, reason)  # the request never left this process
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)):
        return NeedsHuman(serial, reason)
    if op in ("issue", "reverse"):
        return OutcomeUnknown(serial, reason)
    return Retryable(serial, reason)  # reads are safe to repeat


# --- buyer-raised red-letter forms (pure) ----------------------------------------------


def buyer_form_of(view: Mapping[str, Any]) -> BuyerRedForm | None:
    """One `/v1/buyer-red-forms` (or `/v1/red-forms/{id}`) view -> a form; None if malformed."""
    form_id, number = view.get("serial"), view.get("original_invoice_no")
    if not isinstance(form_id, str) or not isinstance(number, str):
        return None
    status = view.get("status")
    code = view.get("failure_code")
    mapped: FormStatus
    if status == "PENDING_SELLER":
        mapped = "PENDING"
    elif status == "PROCESSING":
        mapped = "CONFIRMED"
    elif status == "ISSUED":
        mapped = "ISSUED"
    elif status == "FAILED" and code == "CONFIRMATION_EXPIRED":
        mapped = "EXPIRED"
    elif status == "FAILED":
        mapped = "REJECTED"
    else:
        return None
    totals = view.get("totals_of_original")
    gross = None
    if isinstance(totals, Mapping):
        try:
            gross = Decimal(str(totals.get("gross_amount")))
        except InvalidOperation:
            gross = None
    return BuyerRedForm(
        form_id=form_id,
        original_invoice_no=number,
        reason=str(view.get("reason") or ""),
        status=mapped,
        raised_at=str(view.get("created_at") or ""),
        deadline=str(view.get("expires_at") or ""),
        gross_amount=gross,
        red_invoice_no=view.get("red_invoice_no") or None,
        red_issued_at=view.get("issued_at") or None,
        message=view.get("failure_reason") or None,
    )


def _forms_trouble(status: int, data: Mapping[str, Any] | None) -> FormsUnavailable:
    code = str((data or {}).get("code") or f"HTTP_{status}")
    reason = Reason(code, str((data or {}).get("message") or f"HTTP {status}"))
    needs_human = status in (401, 403) and code not in ("NONCE_REUSED",)
    return FormsUnavailable(reason, needs_human=needs_human)


def classify_forms_reply(status: int, body: bytes) -> ListAnswer:
    """A `GET /v1/buyer-red-forms` answer -> the forms waiting for the seller."""
    try:
        data = orjson.loads(body) if body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return FormsUnavailable(Reason("GARBLED_RESPONSE", f"HTTP {status}: not a JSON object"))
    if status != 200:
        return _forms_trouble(status, data)
    forms = [buyer_form_of(v) for v in data.get("forms") or () if isinstance(v, Mapping)]
    return tuple(f for f in forms if f is not None)


def classify_form_reply(form_id: str, status: int, body: bytes, *, deciding: bool) -> DecideAnswer:
    """A form read or decision answer -> decided / refused / unavailable."""
    try:
        data = orjson.loads(body) if body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return FormsUnavailable(Reason("GARBLED_RESPONSE", f"HTTP {status}: not a JSON object"))
    if status == 200:
        form = buyer_form_of(data)
        if form is None:
            return FormsUnavailable(Reason("GARBLED_RESPONSE", "the form view is malformed"))
        return FormDecided(form, already=bool(data.get("unchanged")) if deciding else False)
    code = str(data.get("code") or f"HTTP_{status}")
    if status in (404, 409, 422):
        inner = data.get("form")
        form = buyer_form_of(inner) if isinstance(inner, Mapping) else None
        return FormRefused(code, str(data.get("message") or ""), form)
    return _forms_trouble(status, data)


# --- the clients -----------------------------------------------------------------------


class _Requests:
    """Builds signed requests; shared by the sync and async clients."""

    def __init__(self, settings: SandboxIssuerSettings) -> None:
        self.settings = settings

    def auth(self, method: str, target: str, body: bytes) -> dict[str, str]:
        return signing.auth_headers(
            self.settings.app_key, self.settings.app_secret, method, target, body
        )

    @staticmethod
    def body(invoice: InvoicePayload) -> bytes:
        if isinstance(invoice, bytes):
            return invoice
        # orjson: the same compact UTF-8 bytes as json.dumps(ensure_ascii=False), in C
        return orjson.dumps(invoice)

    @staticmethod
    def reversal_body(request: ReversalRequest) -> bytes:
        body: dict[str, Any] = {
            "serial": request.serial,
            "original_invoice_no": request.original_invoice_no,
            "reason": request.reason,
        }
        if request.lines:  # a partial red invoice (a full one's body stays as it was)
            body["lines"] = [
                {"line_no": line.line_no, "quantity": format(line.quantity, "f")}
                for line in request.lines
            ]
        return json.dumps(body).encode()


_USER_AGENT: Final = "syncd-issuer/sandbox"
_JSON: Final = {"Content-Type": "application/json", "Accept": "application/json"}
_SEND_HEADERS: Final = (("User-Agent", _USER_AGENT), *_JSON.items())
_READ_HEADERS: Final = (("User-Agent", _USER_AGENT), ("Accept", "application/json"))


class SandboxIssuer:
    """The sandbox platform over one keep-alive connection per calling thread
    (`syncd.issuers.transport`): thread-safe, no shared pool, no lock on the way.

    `max_connections` bounds the requests in flight at once across all threads.
    """

    provider = "sandbox"

    def __init__(
        self,
        settings: SandboxIssuerSettings,
        *,
        wire: Wire | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._requests = _Requests(settings)
        self._origin = origin = Origin.parse(settings.base_url)
        #: `issuer.proxy`, else HTTPS_PROXY/HTTP_PROXY/ALL_PROXY unless NO_PROXY says direct.
        self.proxy = resolve_proxy(
            settings.proxy,
            origin.scheme,
            origin.host,
            origin.port,
            os.environ if environ is None else environ,
        )
        self._ssl = settings.ssl_context()
        self._wire = wire
        self._local = threading.local()
        self._wires: list[Wire] = []
        self._wires_lock = threading.Lock()
        # Free request slots as tokens in a C-implemented queue: a semaphore (Python code
        # around a Condition) cost more than the rest of the call's bookkeeping under the
        # worker pool's contention.
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(settings.max_connections):
            self._slots.put(None)

    def _wire_here(self) -> Wire:
        if self._wire is not None:
            return self._wire
        wire: Wire | None = getattr(self._local, "wire", None)
        if wire is None:
            wire = KeepAliveConnection(
                self._origin,
                self.settings.timeout(),
                verify=self._ssl,
                max_response_bytes=self.settings.max_response_bytes,
                proxy=self.proxy,
            )
            self._local.wire = wire
            with self._wires_lock:
                self._wires.append(wire)
        return wire

    def __repr__(self) -> str:
        via = f", proxy={self.proxy.display!r}" if self.proxy is not None else ""
        return (
            f"SandboxIssuer(base_url={mask_url_userinfo(self.settings.base_url)!r}, "
            f"app_key={self.settings.app_key!r}{via})"
        )

    def aio(self) -> AsyncSandboxIssuer:
        """This account on an event loop: its own connection pool, the same settings,
        credentials and proxy. Create and use it on the loop that will run its calls."""
        return AsyncSandboxIssuer(self.settings, proxy=self.proxy)

    def __enter__(self) -> SandboxIssuer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._wires_lock:
            wires, self._wires = self._wires, []
        if self._wire is not None:
            wires.append(self._wire)
        for wire in wires:
            wire.close()

    def _exchange(
        self, op: Operation, serial: str, method: str, path: str, body: bytes = b""
    ) -> Reply | IssueResult:
        """The provider's reply, or the result a transport failure means."""
        target = self._origin.path + path
        sent = body if method == "POST" else None
        headers = [
            *(_SEND_HEADERS if sent is not None else _READ_HEADERS),
            *self._requests.auth(method, target, body if sent is not None else b"").items(),
        ]
        try:
            self._slots.get(timeout=self.settings.pool_timeout)
        except queue.Empty:
            return classify_exception(
                op, serial, httpx.PoolTimeout("no free connection slot within pool_timeout")
            )
        try:
            return self._wire_here().request(method, target, headers, sent)
        except httpx.HTTPError as exc:
            return classify_exception(op, serial, exc)
        finally:
            self._slots.put(None)

    def _call(
        self, op: Operation, serial: str, method: str, path: str, body: bytes = b""
    ) -> IssueResult:
        reply = self._exchange(op, serial, method, path, body)
        if not isinstance(reply, Reply):
            return reply
        return classify_response(op, serial, reply.status, reply.headers, reply.content)

    def issue(self, invoice: InvoicePayload) -> IssueResult:
        serial = serial_of(invoice)
        return self._call("issue", serial, "POST", "/v1/invoices", self._requests.body(invoice))

    def query(self, serial: str) -> IssueResult:
        return self._call("query", serial, "GET", f"/v1/invoices/{quote(serial, safe='')}")

    def reverse(self, request: ReversalRequest) -> IssueResult:
        return self._call(
            "reverse",
            request.serial,
            "POST",
            "/v1/red-forms",
            self._requests.reversal_body(request),
        )

    def query_reversal(self, serial: str) -> IssueResult:
        return self._call(
            "query_reversal", serial, "GET", f"/v1/red-forms/{quote(serial, safe='')}"
        )

    def list_invoices(self, query: InvoiceListQuery) -> Iterator[PlatformInvoice]:
        """Every issued invoice matching `query`, page by page (`GET /v1/invoices`);
        `ListingError` when a page cannot be read."""
        for window in query.windows(LIST_WINDOW_DAYS):
            page, seen = 1, 0
            while True:
                reply = self._exchange("list", "", "GET", list_path(window, page))
                answer = (
                    reply
                    if not isinstance(reply, Reply)
                    else classify_list_page(reply.status, reply.headers, reply.content)
                )
                if not isinstance(answer, tuple):
                    raise listing_error(answer)
                total, items = answer
                yield from items
                seen += len(items)
                if not items or seen >= total:
                    break
                page += 1

    def issue_or_resolve(self, invoice: InvoicePayload) -> IssueResult:
        """Issue; a lost answer or a refused duplicate is resolved by querying the serial."""
        submitted = self.issue(invoice)
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            return resolve_after_submit(submitted, self.query(submitted.serial))
        return submitted

    def reverse_or_resolve(self, request: ReversalRequest) -> IssueResult:
        submitted = self.reverse(request)
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            return resolve_after_submit(submitted, self.query_reversal(request.serial))
        return submitted

    # --- buyer-raised red-letter forms (syncd.issuers.redforms) ---------------------------

    def _forms_exchange(
        self, method: str, path: str, body: bytes = b""
    ) -> Reply | FormsUnavailable:
        reply = self._exchange("query", "FORMS", method, path, body)
        if isinstance(reply, Reply):
            return reply
        reason = getattr(reply, "reason", Reason("UNAVAILABLE", "the platform did not answer"))
        return FormsUnavailable(reason, needs_human=isinstance(reply, NeedsHuman))

    def list_buyer_red_forms(self) -> ListAnswer:
        reply = self._forms_exchange("GET", "/v1/buyer-red-forms")
        if isinstance(reply, FormsUnavailable):
            return reply
        return classify_forms_reply(reply.status, reply.content)

    def buyer_red_form(self, form_id: str) -> FormAnswer:
        reply = self._forms_exchange("GET", f"/v1/red-forms/{quote(form_id, safe='')}")
        if isinstance(reply, FormsUnavailable):
            return reply
        answer = classify_form_reply(form_id, reply.status, reply.content, deciding=False)
        return answer.form if isinstance(answer, FormDecided) else answer

    def decide_buyer_red_form(self, form_id: str, *, confirm: bool, reason: str) -> DecideAnswer:
        verb = "confirm" if confirm else "reject"
        body = orjson.dumps({"reason": reason})
        reply = self._forms_exchange(
            "POST", f"/v1/buyer-red-forms/{quote(form_id, safe='')}/{verb}", body
        )
        if isinstance(reply, FormsUnavailable):
            return reply
        return classify_form_reply(form_id, reply.status, reply.content, deciding=True)

    def document(self, serial: str, fmt: Literal["xml", "html"] = "xml") -> bytes | IssueResult:
        """The issued document's bytes, or the result explaining why there are none."""
        reply = self._exchange(
            "document", serial, "GET", f"/v1/invoices/{quote(serial, safe='')}/{fmt}"
        )
        if not isinstance(reply, Reply):
            return reply
        if reply.status == 200:
            return reply.content
        return classify_response("document", serial, reply.status, reply.headers, reply.content)

    def wait_issued(
        self, serial: str, *, timeout: float = 30.0, interval: float = 0.1, reversal: bool = False
    ) -> IssueResult:
        """Poll until the document leaves PROCESSING (tests and tools; the daemon schedules)."""
        deadline = time.monotonic() + timeout
        query = self.query_reversal if reversal else self.query
        while True:
            result = query(serial)
            waiting = (isinstance(result, Processing) and not result.awaiting_confirmation) or (
                isinstance(result, Retryable) and not result.resubmit
            )
            if not waiting or time.monotonic() > deadline:
                return result
            time.sleep(interval)


class AsyncSandboxIssuer:
    """The same client on the event loop (`syncd.issuers.aio_transport`): one keep-alive
    pool per account, `max_connections` requests in flight at once. Every coroutine runs
    on one loop; the signing, the request targets and the classifier are the sync client's.
    """

    provider = "sandbox"

    def __init__(
        self,
        settings: SandboxIssuerSettings,
        *,
        wire: AsyncWire | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        self.settings = settings
        self._requests = _Requests(settings)
        self._origin = origin = Origin.parse(settings.base_url)
        self.proxy = proxy
        self._wire: AsyncWire = wire or AsyncConnectionPool(
            origin,
            settings.timeout(),
            max_connections=settings.max_connections,
            max_keepalive=settings.max_keepalive_connections,
            verify=settings.ssl_context(),
            max_response_bytes=settings.max_response_bytes,
            proxy=proxy,
        )

    def __repr__(self) -> str:
        via = f", proxy={self.proxy.display!r}" if self.proxy is not None else ""
        return (
            f"AsyncSandboxIssuer(base_url={mask_url_userinfo(self.settings.base_url)!r}, "
            f"app_key={self.settings.app_key!r}{via})"
        )

    async def aclose(self) -> None:
        await self._wire.aclose()

    async def _call(
        self, op: Operation, serial: str, method: str, path: str, body: bytes = b""
    ) -> IssueResult:
        target = self._origin.path + path
        sent = body if method == "POST" else None
        headers = [
            *(_SEND_HEADERS if sent is not None else _READ_HEADERS),
            *self._requests.auth(method, target, body if sent is not None else b"").items(),
        ]
        try:
            reply = await self._wire.request(method, target, headers, sent)
        except httpx.HTTPError as exc:
            return classify_exception(op, serial, exc)
        return classify_response(op, serial, reply.status, reply.headers, reply.content)

    async def issue(self, invoice: InvoicePayload) -> IssueResult:
        serial = serial_of(invoice)
        return await self._call(
            "issue", serial, "POST", "/v1/invoices", self._requests.body(invoice)
        )

    async def query(self, serial: str) -> IssueResult:
        return await self._call("query", serial, "GET", f"/v1/invoices/{quote(serial, safe='')}")

    async def reverse(self, request: ReversalRequest) -> IssueResult:
        return await self._call(
            "reverse",
            request.serial,
            "POST",
            "/v1/red-forms",
            self._requests.reversal_body(request),
        )

    async def query_reversal(self, serial: str) -> IssueResult:
        return await self._call(
            "query_reversal", serial, "GET", f"/v1/red-forms/{quote(serial, safe='')}"
        )

    async def issue_or_resolve(self, invoice: InvoicePayload) -> IssueResult:
        submitted = await self.issue(invoice)
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            return resolve_after_submit(submitted, await self.query(submitted.serial))
        return submitted
