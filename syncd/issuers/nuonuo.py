"""Client for Nuonuo's open platform (诺税通 SaaS, 数电 invoices), behind `Issuer`.

The protocol facts and where they were checked are in docs/issuers.md ("Nuonuo"). What
this module protects:

* **The serial is the order number.** `orderNo` (issue) and `billId` (red-confirmation
  form) are syncd's serial, unchanged, on every attempt. Nuonuo refuses a repeated order
  number (`E9106`) instead of answering it idempotently, so a refusal is `Duplicate`
  and the caller queries by that number; nothing here ever mints another number.
* **Signed bytes are sent bytes.** The HMAC-SHA1 signature covers the body text; the body
  is encoded once and those exact bytes are both signed and sent.
* **Tokens are shared.** Access tokens come from a `TokenStore` (the ledger database in
  the daemon), so a fleet of replicas makes one token fetch, not one each; a token the
  gateway refuses is invalidated for everyone and fetched again once.
* **Pure mapping and classification.** `order_payload`, `red_form_payload`, `sign` and
  the `classify_*` functions do no I/O and are unit-tested with golden examples; the
  client only moves bytes and combines their answers.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import secrets
import ssl
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from syncd.config.settings import (
    check_issuer_tls,
    check_issuer_url,
    check_proxy_url,
    mask_url_userinfo,
)
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
    Processing,
    Reason,
    Rejected,
    Retryable,
    ReversalRequest,
    Totals,
    listing_error,
    resolve_after_submit,
)
from syncd.issuers.nuonuo_forms import NuonuoForms
from syncd.issuers.redforms import DecideAnswer, FormAnswer, ListAnswer
from syncd.issuers.tokens import (
    Grant,
    MemoryTokenStore,
    Refused,
    TokenAnswer,
    TokenStore,
    Unavailable,
)
from syncd.issuers.transport import response_too_large

BEIJING: Final = timezone(timedelta(hours=8))
SERVICES_PATH: Final = "/open/v1/services"
ISSUE: Final = "nuonuo.OpeMplatform.requestBillingNew"
QUERY: Final = "nuonuo.OpeMplatform.queryInvoiceResult"
RED_SAVE: Final = "nuonuo.OpeMplatform.saveInvoiceRedConfirm"
RED_QUERY: Final = "nuonuo.OpeMplatform.queryInvoiceRedConfirm"
REINVOICE: Final = "nuonuo.OpeMplatform.reInvoice"
LIST: Final = "nuonuo.OpeMplatform.queryInvoiceList"
#: `queryInvoiceList`: the longest window the platform accepts (10 days) and our page size
LIST_WINDOW_DAYS: Final = 10
LIST_PAGE_SIZE: Final = 50
#: The company's remaining credit line. Assumed: no public source names Nuonuo's method;
#: the answer uses the bureau's own fields (`kysyed` left, `bysxed` this period's line).
#: A platform that refuses the method is not asked again (the gauge stays absent).
CREDIT: Final = "nuonuo.OpeMplatform.queryCreditLimit"
CREDIT_EXHAUSTED: Final = "E9302"
#: The most order numbers one `queryInvoiceResult` accepts.
QUERY_BATCH: Final = 50

SUCCESS: Final = "E0000"
DUPLICATE_ORDER: Final = "E9106"
NOT_FOUND: Final = "E9500"
RETRY_LIMIT: Final = "E9613"
#: Account-level refusals (the drawer's bureau session, the credit line): a person must act.
#: Not in the public sources we found: the codes the sandbox dialect uses (docs/sandbox.md).
ACCOUNT_CODES: Final = frozenset({"E9301", "E9302"})
#: The gateway no longer accepts the access token (expired or revoked): refresh it.
TOKEN_REFUSED: Final = "070302"  # noqa: S105 - a response code, not a secret

INVOICE_LINES: Final[Mapping[str, str]] = {"SPECIAL": "bs", "ORDINARY": "pc"}
LINE_PROPERTY: Final[Mapping[str, str]] = {"NORMAL": "0", "DISCOUNT": "1", "DISCOUNTED": "2"}
#: 数电 favouredPolicyFlag (增值税特殊管理) for syncd's tax policies; zero rate needs none.
POLICY_FLAGS: Final[Mapping[str, str]] = {"EXEMPT": "03", "NOT_TAXABLE": "04"}
RED_REASONS: Final[Mapping[str, str]] = {
    "SALES_RETURN": "1",
    "INVOICING_ERROR": "2",
    "SERVICE_STOPPED": "3",
    "ALLOWANCE": "4",
}

#: queryInvoiceResult `status`
ISSUED_STATUS: Final = "2"
PROCESSING_STATUSES: Final = frozenset({"20", "21"})
FAILED_STATUS: Final = "22"
SEAL_FAILED_STATUS: Final = "24"
VOID_STATUSES: Final = frozenset({"3", "31"})
#: queryInvoiceRedConfirm `billStatus`
RED_FORM_DONE: Final = frozenset({"01", "04"})
RED_FORM_WAITING: Final = frozenset({"02", "03"})
RED_FORM_APPLYING: Final = "15"

Operation: TypeAlias = Literal["issue", "query", "reverse", "query_reversal", "token", "list"]


def is_credential_code(code: str) -> bool:
    """Codes about the app itself (key, secret, token quota, signature): not retryable."""
    return code != TOKEN_REFUSED and (
        code.startswith("0701") or code.startswith("0703") or code == "070601"
    )


# --- settings ---------------------------------------------------------------------------


class NuonuoIssuerSettings(BaseModel):
    """How syncd reaches Nuonuo (embedded in syncd's config as `issuer:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["nuonuo"] = "nuonuo"
    base_url: str = "https://sdk.nuonuo.com"
    token_url: str | None = Field(
        None,
        description="default https://open.nuonuo.com/accessToken ({base_url}/accessToken "
        "for a loopback test platform)",
    )
    app_key: str = Field(min_length=1)
    app_secret: SecretStr
    app_secret_file: Path | None = None
    seller_tax_id: str = Field(min_length=15, max_length=20, description="the userTax header")
    token_refresh_margin: float = Field(3600.0, ge=0, description="refresh this early (s)")
    token_refusal_hold: float = Field(
        900.0, ge=0, description="after a credential refusal, ask again only this much later"
    )
    account_probe_interval: float = Field(
        60.0, ge=0, description="after an account-level refusal, send one probe this often"
    )
    query_horizon_seconds: float | None = Field(
        None,
        gt=0,
        description="how long the platform answers queries by serial; read by syncd's "
        "driver (docs/issuers.md, 'The query horizon'), not by this client",
    )
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

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        return check_proxy_url(value) if value is not None else None

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

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("app_secret")
    @classmethod
    def _non_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("app_secret is empty")
        return value

    @model_validator(mode="after")
    def _transport(self) -> NuonuoIssuerSettings:
        check_issuer_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        check_issuer_url(self.token_endpoint(), allow_insecure_http=self.allow_insecure_http)
        check_issuer_tls(self.base_url, self.ca_file, self.client_cert_file, self.client_key_file)
        return self

    def token_endpoint(self) -> str:
        if self.token_url is not None:
            return self.token_url
        host = httpx.URL(self.base_url).host
        if host in ("127.0.0.1", "localhost", "::1"):
            return self.base_url + "/accessToken"
        return "https://open.nuonuo.com/accessToken"

    def ssl_context(self) -> ssl.SSLContext | None:
        if httpx.URL(self.base_url).scheme != "https":
            return None
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.client_cert_file is not None:
            context.load_cert_chain(
                str(self.client_cert_file),
                str(self.client_key_file) if self.client_key_file is not None else None,
            )
        return context


# --- signing ----------------------------------------------------------------------------


def sign(secret: str, app_key: str, senid: str, nonce: str, timestamp: str, body: bytes) -> str:
    """X-Nuonuo-Sign: base64(HMAC-SHA1) over the request's canonical string; `body` is
    the exact bytes sent (UTF-8 JSON), so what is signed is what arrives."""
    head = f"a=services&l=v1&p=open&k={app_key}&i={senid}&n={nonce}&t={timestamp}&f="
    mac = hmac.new(secret.encode(), head.encode() + body, hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (Chinese text as is): the bytes that are signed and sent."""
    return orjson.dumps(payload)


# --- canonical invoice -> Nuonuo ----------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _compact(fields: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if v is not None}


def _joined(*parts: object) -> str | None:
    words = [p for p in parts if isinstance(p, str) and p]
    return " ".join(words) if words else None


def _order_date(invoice: Mapping[str, Any], now: datetime) -> str:
    issue_date = invoice.get("issue_date")
    if isinstance(issue_date, str) and issue_date:
        return f"{date.fromisoformat(issue_date).isoformat()} 00:00:00"
    return now.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def detail_line(line: Mapping[str, Any], with_tax: bool) -> dict[str, str]:
    """One `invoiceDetail`: all three amounts always go along (the platform would
    recompute missing ones from price × quantity); a discount line has no num/price."""
    nature = str(line.get("nature") or "NORMAL")
    policy = line.get("tax_policy")
    detail = _compact(
        {
            "goodsName": str(line["name"]),
            "goodsCode": str(line["tax_code"]),
            "specType": _text(line.get("spec")),
            "unit": _text(line.get("unit")),
            "withTaxFlag": "1" if with_tax else "0",
            "taxRate": str(line["tax_rate"]),
            "taxExcludedAmount": str(line["net_amount"]),
            "tax": str(line["tax_amount"]),
            "taxIncludedAmount": str(line["gross_amount"]),
            "invoiceLineProperty": LINE_PROPERTY.get(nature, "0"),
            "favouredPolicyFlag": POLICY_FLAGS.get(policy) if isinstance(policy, str) else None,
        }
    )
    if nature != "DISCOUNT" and line.get("quantity") is not None:
        detail["num"] = str(line["quantity"])
        detail["price"] = str(line["unit_price"])
    return detail


def order_payload(invoice: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """The `requestBillingNew` body for a canonical blue invoice (docs/invoice-format.md).

    Pure: `now` is the submit time, used only when the invoice has no issue date.
    """
    seller: Mapping[str, Any] = invoice.get("seller") or {}
    buyer: Mapping[str, Any] = invoice.get("buyer") or {}
    with_tax = invoice.get("price_basis") == "TAX_INCLUSIVE"
    order: dict[str, Any] = _compact(
        {
            "orderNo": str(invoice["serial"]),
            "invoiceDate": _order_date(invoice, now),
            "invoiceType": "1",
            "invoiceLine": INVOICE_LINES.get(str(invoice.get("invoice_type")), "pc"),
            "salerTaxNum": _text(seller.get("tax_id")),
            "salerTel": _text(seller.get("phone")),
            "salerAddress": _text(seller.get("address")),
            "salerAccount": _joined(seller.get("bank_name"), seller.get("bank_account")),
            "buyerName": _text(buyer.get("name")),
            "buyerTaxNum": _text(buyer.get("tax_id")),
            "buyerTel": _text(buyer.get("phone")),
            "buyerAddress": _text(buyer.get("address")),
            "buyerAccount": _joined(buyer.get("bank_name"), buyer.get("bank_account")),
            "email": _text(buyer.get("email")),
            "naturalPersonFlag": "1" if buyer.get("natural_person") else "0",
            "clerk": _text(invoice.get("drawer")),
            "payee": _text(invoice.get("payee")),
            "checker": _text(invoice.get("reviewer")),
            "remark": _text(invoice.get("remark")),
            "pushMode": "-1",
        }
    )
    order["invoiceDetail"] = [detail_line(line, with_tax) for line in invoice.get("lines") or []]
    return {"order": order}


def red_form_payload(request: ReversalRequest, seller_tax_id: str) -> dict[str, Any]:
    """The `saveInvoiceRedConfirm` body of a 数电 invoice, applied for by the seller;
    `billId` is the reversal's serial. A whole reversal has no `detail`; a partial one
    (部分冲红) lists the returned lines by their position on the blue invoice
    (`blueDetailIndex`, in the blue invoice's order) with negative units and amounts."""
    red: Mapping[str, Any] = request.invoice or {}
    seller: Mapping[str, Any] = red.get("seller") or {}
    buyer: Mapping[str, Any] = red.get("buyer") or {}
    body: dict[str, Any] = _compact(
        {
            "billId": request.serial,
            "blueInvoiceLine": INVOICE_LINES.get(str(red.get("invoice_type")), "pc"),
            "applySource": "0",
            "blueElecInvoiceNumber": request.original_invoice_no,
            "sellerTaxNo": seller_tax_id,
            "sellerName": _text(seller.get("name")),
            "buyerTaxNo": _text(buyer.get("tax_id")),
            "buyerName": _text(buyer.get("name")),
            "redReason": RED_REASONS[request.reason],
        }
    )
    if request.lines:
        frozen = {int(ln["line_no"]): ln for ln in red.get("lines") or []}
        body["detail"] = [
            _red_detail(line.line_no, line.quantity, frozen.get(line.line_no))
            for line in sorted(request.lines, key=lambda ln: ln.line_no)
        ]
    return body


def _red_detail(
    line_no: int, quantity: Decimal, frozen: Mapping[str, Any] | None
) -> dict[str, str]:
    """One returned line of a partial red form: the blue line's position and the returned
    units (negative); the frozen red line's goods and amounts when the caller has them."""
    detail = {"blueDetailIndex": str(line_no), "goodsNum": str(-abs(quantity))}
    if frozen is not None:
        detail.update(
            _compact(
                {
                    "goodsName": _text(frozen.get("name")),
                    "goodsCode": _text(frozen.get("tax_code")),
                    "taxRate": _text(frozen.get("tax_rate")),
                    "taxExcludedAmount": _text(frozen.get("net_amount")),
                    "taxAmount": _text(frozen.get("tax_amount")),
                }
            )
        )
    return detail


def query_payload(order_nos: Sequence[str]) -> dict[str, Any]:
    if not 1 <= len(order_nos) <= QUERY_BATCH:
        raise ValueError(f"queryInvoiceResult takes 1 to {QUERY_BATCH} order numbers")
    return {"orderNos": list(order_nos), "isOfferInvoiceDetail": "0"}


def batches(serials: Iterable[str], size: int = QUERY_BATCH) -> list[list[str]]:
    items = list(dict.fromkeys(serials))
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- Nuonuo -> results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A business answer: `{code, describe, result}`."""

    code: str
    describe: str
    result: Any


def classify_http(
    op: Operation, serial: str, status: int, headers: Mapping[str, str], body: bytes
) -> Envelope | IssueResult:
    """The HTTP layer: an envelope to interpret, or the result a bad answer means."""
    sends = op in ("issue", "reverse")
    if status == 429:
        reason = Reason("RATE_LIMITED", "HTTP 429: too many requests")
        return Retryable(serial, reason, retry_after=_after(headers), throttled=True)
    if status >= 500:
        reason = Reason(f"HTTP_{status}", "the platform failed")
        if sends and status == 504:
            return OutcomeUnknown(serial, reason)
        return Retryable(serial, reason, retry_after=_after(headers))
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or "code" not in data:
        reason = Reason("GARBLED_RESPONSE", f"HTTP {status} without a Nuonuo envelope")
        if status >= 400:
            return NeedsHuman(serial, reason)
        return OutcomeUnknown(serial, reason) if sends else Retryable(serial, reason)
    return Envelope(str(data.get("code")), str(data.get("describe") or ""), data.get("result"))


def _after(headers: Mapping[str, str]) -> float | None:
    raw = (headers.get("retry-after") or "").strip()
    if raw.isdigit():
        return float(raw)
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def classify_issue(serial: str, envelope: Envelope) -> IssueResult:
    reason = Reason(envelope.code, envelope.describe)
    if envelope.code == SUCCESS:
        return Processing(serial)
    if envelope.code == DUPLICATE_ORDER:
        return Duplicate(serial, reason)
    if is_credential_code(envelope.code) or envelope.code in ACCOUNT_CODES:
        return NeedsHuman(serial, reason)
    return Rejected(serial, (reason,))


def _money(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _issued_at(millis: object) -> str:
    try:
        stamp = int(str(millis)) / 1000
    except ValueError:
        return ""
    return datetime.fromtimestamp(stamp, BEIJING).isoformat()


def files_of(item: Mapping[str, Any]) -> dict[str, str]:
    """pdf / ofd / xml links of an issued invoice (OFD is the legal original)."""
    return {
        kind: str(item[key])
        for kind, key in (("pdf", "pdfUrl"), ("ofd", "ofdUrl"), ("xml", "xmlUrl"))
        if item.get(key)
    }


def classify_invoice(serial: str, item: Mapping[str, Any], *, red: bool = False) -> IssueResult:
    """One `queryInvoiceResult` item -> a result."""
    status = str(item.get("status") or "")
    message = str(item.get("failCause") or item.get("statusMsg") or "")
    if status == ISSUED_STATUS:
        net, tax, gross = (_money(item.get(k)) for k in ("exTaxAmount", "taxAmount", "orderAmount"))
        totals = None if net is None or tax is None or gross is None else Totals(net, tax, gross)
        return Issued(
            serial=serial,
            invoice_no=str(item.get("allElectronicInvoiceNumber") or item.get("invoiceNo") or ""),
            issued_at=_issued_at(item.get("invoiceTime")),
            check_code=_text(item.get("checkCode")),
            kind="RED" if red else "BLUE",
            totals=totals,
            original_invoice_no=_text(item.get("oldEleInvoiceNumber")),
            files=files_of(item),
        )
    if status in PROCESSING_STATUSES:
        return Processing(serial, "PROCESSING")
    if status == SEAL_FAILED_STATUS:
        return Retryable(serial, Reason("SEAL_FAILED", message), resubmit=True)
    if status == FAILED_STATUS:
        return Rejected(serial, (Reason("ISSUE_FAILED", message),))
    if status in VOID_STATUSES:
        return Rejected(serial, (Reason("VOIDED", message or "the invoice was voided"),))
    return Retryable(serial, Reason("UNEXPECTED_STATUS", f"invoice status {status!r}"))


def classify_query(serials: Sequence[str], envelope: Envelope) -> dict[str, IssueResult]:
    """A `queryInvoiceResult` answer -> a result per order number asked for."""
    if envelope.code == NOT_FOUND:
        return {s: NotFound(s) for s in serials}
    if envelope.code != SUCCESS:
        reason = Reason(envelope.code, envelope.describe)
        human = is_credential_code(envelope.code)
        return {s: NeedsHuman(s, reason) if human else Retryable(s, reason) for s in serials}
    items = envelope.result if isinstance(envelope.result, list) else []
    found = {
        str(item.get("orderNo")): item
        for item in items
        if isinstance(item, dict) and item.get("orderNo")
    }
    return {s: classify_invoice(s, found[s]) if s in found else NotFound(s) for s in serials}


def classify_red_form(serial: str, form: Mapping[str, Any]) -> IssueResult:
    """One `queryInvoiceRedConfirm` record -> a result (the red invoice's date and files
    come from a follow-up `queryInvoiceResult` in the client)."""
    status = str(form.get("billStatus") or "")
    if status in RED_FORM_DONE:
        red_no = _text(form.get("redInvoiceNumber"))
        if red_no is None:
            return Processing(serial, "PROCESSING")
        net, tax = _money(form.get("taxExcludedAmount")), _money(form.get("taxAmount"))
        return Issued(
            serial=serial,
            invoice_no=red_no,
            issued_at=str(form.get("confirmTime") or form.get("billTime") or ""),
            check_code=None,
            kind="RED",
            totals=Totals(net, tax, net + tax) if net is not None and tax is not None else None,
            original_invoice_no=_text(form.get("blueElecInvoiceNumber")),
        )
    if status in RED_FORM_WAITING:
        return Processing(serial, "PENDING_CONFIRMATION", awaiting_confirmation=True)
    if status == RED_FORM_APPLYING:
        return Processing(serial, "PROCESSING")
    message = str(form.get("billMessage") or f"red-confirmation form state {status}")
    return Rejected(serial, (Reason(f"RED_FORM_{status or 'UNKNOWN'}", message),))


def classify_red_query(serial: str, envelope: Envelope) -> IssueResult | Mapping[str, Any]:
    """The form with `billId == serial`, or the result saying why there is none."""
    if envelope.code != SUCCESS:
        reason = Reason(envelope.code, envelope.describe)
        return (
            NeedsHuman(serial, reason)
            if is_credential_code(envelope.code)
            else Retryable(serial, reason)
        )
    result = envelope.result if isinstance(envelope.result, dict) else {}
    for form in result.get("list") or []:
        if isinstance(form, dict) and str(form.get("billId")) == serial:
            return form
    return NotFound(serial)


def classify_exception(op: Operation, serial: str, exc: httpx.HTTPError) -> IssueResult:
    """A transport failure: before sending, retryable; after a submit, unknown."""
    reason = Reason(type(exc).__name__.upper(), str(exc) or type(exc).__name__)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return Retryable(serial, reason)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)):
        return NeedsHuman(serial, reason)
    return (
        OutcomeUnknown(serial, reason) if op in ("issue", "reverse") else Retryable(serial, reason)
    )


Reply: TypeAlias = tuple[int, Mapping[str, str], bytes]


def classify_reply(op: Operation, serial: str, reply: object) -> Envelope | IssueResult:
    """A reply `(status, headers, body)`, or the `httpx.HTTPError` the request failed with."""
    if isinstance(reply, httpx.HTTPError):
        return classify_exception(op, serial, reply)
    status, headers, body = cast(Reply, reply)
    return classify_http(op, serial, status, headers, body)


class _TokenNeeded:
    """What an exchange yields when it needs the app's access token."""


TOKEN: Final = _TokenNeeded()
T = TypeVar("T")
#: an exchange with the gateway (`NuonuoIssuer._run`): yields `TOKEN` or a request,
#: receives the token store's answer or the reply, returns its result
Exchange: TypeAlias = Generator[_TokenNeeded | httpx.Request, object, T]


def classify_token(status: int, body: bytes, *, now: float) -> TokenAnswer:
    """The token endpoint's answer -> a grant, a refusal of the credentials, or nothing."""
    if status == 429 or status >= 500:
        return Unavailable(f"token endpoint answered HTTP {status}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return Unavailable(f"token endpoint answered HTTP {status} without JSON")
    token = data.get("access_token")
    if isinstance(token, str) and token and status == 200:
        try:
            lifetime = float(data.get("expires_in") or 86400)
        except (TypeError, ValueError):
            lifetime = 86400.0
        return Grant(token, now + lifetime)
    error = str(data.get("error") or data.get("code") or f"HTTP_{status}")
    description = str(data.get("error_description") or data.get("describe") or "")
    return Refused(f"{error}: {description}" if description else error)


# --- the account gate -------------------------------------------------------------------


class AccountGate:
    """Pauses submissions of an account the platform refused as a whole.

    After the first account-level refusal (expired bureau session, exhausted credit,
    refused credentials) every further submit is answered `NeedsHuman` *without a
    request*, except one probe per `interval`: the first submit after the interval goes
    through, and its answer reopens the gate or keeps it shut. So a thousand waiting
    documents cost one request per interval, not a thousand, and the account resumes by
    itself once the platform accepts again. Thread-safe; time is passed in.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._reason: Reason | None = None
        self._next_probe = 0.0

    @property
    def up(self) -> bool:
        return self._reason is None

    def admit(self, now: float) -> Reason | None:
        """None: send (normal, or this caller is the probe); else why not."""
        with self._lock:
            if self._reason is None:
                return None
            if now >= self._next_probe:
                self._next_probe = now + self._interval  # one probe; the rest keep waiting
                return None
            return self._reason

    def record(self, result: IssueResult, now: float) -> None:
        with self._lock:
            if isinstance(result, NeedsHuman) and is_account_refusal(result.reason.code):
                self._reason = Reason(
                    result.reason.code,
                    f"{result.reason.message} (account paused; probing every "
                    f"{self._interval:.0f} s)",
                )
                self._next_probe = now + self._interval
            elif isinstance(result, (Processing, Issued, Duplicate, Rejected)):
                self._reason = None


def credit_of(envelope: Envelope) -> Decimal | None:
    """What `queryCreditLimit` says is left (`kysyed`); None when it says nothing usable."""
    result = envelope.result
    if envelope.code != SUCCESS or not isinstance(result, Mapping):
        return None
    left = _money(result.get("kysyed"))
    return left if left is not None and left >= 0 else None


class CreditWatch:
    """The account's remaining credit as the platform last reported it, asked at most once
    per `interval` (one caller at a time asks; the others go on). Thread-safe."""

    def __init__(self, interval: float | None) -> None:
        self._interval = interval or 0.0
        self._lock = threading.Lock()
        self._next = 0.0
        self._asking = interval is not None
        self.remaining: Decimal | None = None

    def due(self, now: float) -> bool:
        with self._lock:
            if not self._asking or now < self._next:
                return False
            self._next = now + self._interval
            return True

    def record(self, answer: Envelope | IssueResult) -> None:
        if isinstance(answer, Envelope):
            left = credit_of(answer)
            with self._lock:
                if left is not None:
                    self.remaining = left
                elif answer.code != SUCCESS:
                    self._asking = False  # the platform does not offer it: never ask again

    def exhausted(self) -> None:
        """The platform refused a submission for want of credit."""
        with self._lock:
            self.remaining = Decimal(0)


def is_account_refusal(code: str) -> bool:
    return code in ACCOUNT_CODES or code == "TOKEN_REFUSED" or is_credential_code(code)


# --- the invoice list (queryInvoiceList) ----------------------------------------------


def list_windows(query: InvoiceListQuery) -> list[tuple[date, date]]:
    """The query's dates cut into windows of at most `LIST_WINDOW_DAYS` days (inclusive)."""
    return [(w.issued_from, w.issued_to) for w in query.windows(LIST_WINDOW_DAYS)]


def list_payload(
    seller_tax_id: str, first: date, last: date, page: int, page_size: int = LIST_PAGE_SIZE
) -> dict[str, Any]:
    """One page of `queryInvoiceList` for the Beijing dates `first`..`last` (inclusive)."""
    return {
        "taxnum": seller_tax_id,
        "requestType": "0",
        "startTime": f"{first.isoformat()} 00:00:00",
        "endTime": f"{last.isoformat()} 23:59:59",
        "pageNo": str(page),
        "pageSize": str(page_size),
    }


def platform_invoice(item: Mapping[str, Any]) -> PlatformInvoice | None:
    """One `queryInvoiceList` item -> a listed invoice; None for an item that is not an
    invoice (yet): issuing, failed. Raises `ValueError` on an issued item it cannot read."""
    status = str(item.get("status") or "")
    if status != ISSUED_STATUS and status not in VOID_STATUSES:
        return None
    net, tax, gross = (_money(item.get(k)) for k in ("exTaxAmount", "taxAmount", "orderAmount"))
    number = _text(item.get("allElectronicInvoiceNumber")) or _text(item.get("invoiceNo"))
    millis = str(item.get("invoiceTime") or "")
    if net is None or tax is None or gross is None or number is None or not millis.isdigit():
        raise ValueError(f"an issued invoice without number, time or amounts: {number!r}")
    red = str(item.get("invoiceType") or "1") == "2"
    invoice_types: dict[str, Literal["SPECIAL", "ORDINARY"]] = {
        "bs": "SPECIAL",
        "pc": "ORDINARY",
    }
    return PlatformInvoice(
        invoice_no=number,
        kind="RED" if red else "BLUE",
        issued_at=datetime.fromtimestamp(int(millis) / 1000, BEIJING),
        totals=Totals(net, tax, gross),
        state="ISSUED" if status == ISSUED_STATUS else "VOIDED",
        serial=_text(item.get("orderNo")),
        original_invoice_no=_text(item.get("oldEleInvoiceNumber")) if red else None,
        seller_tax_id=_text(item.get("salerTaxNum")),
        buyer_tax_id=_text(item.get("payerTaxNo")) or _text(item.get("buyerTaxNum")),
        buyer_name=_text(item.get("payerName")) or _text(item.get("buyerName")),
        invoice_type=invoice_types.get(str(item.get("invoiceLine"))),
    )


def classify_list_page(envelope: Envelope) -> tuple[int, list[PlatformInvoice]] | IssueResult:
    """A `queryInvoiceList` answer -> (total count, the page's invoices), or the result a
    refusal means. A page the client cannot read is a failure, never a shorter list."""
    reason = Reason(envelope.code, envelope.describe)
    if envelope.code != SUCCESS:
        if is_credential_code(envelope.code) or envelope.code in ACCOUNT_CODES:
            return NeedsHuman("", reason)
        return Retryable("", reason)
    result = envelope.result
    try:
        if not isinstance(result, Mapping):
            raise ValueError("result is not an object")
        items = result.get("invoices") or []
        if not isinstance(items, list):
            raise ValueError("invoices is not a list")
        total = int(str(result.get("totalCount") or 0))
        listed = [platform_invoice(i) for i in items if isinstance(i, Mapping)]
    except ValueError as exc:
        return Retryable("", Reason("GARBLED_LIST", f"an unreadable invoice list page: {exc}"))
    return total, [i for i in listed if i is not None]


# --- the client -------------------------------------------------------------------------

_USER_AGENT: Final = "syncd-issuer/nuonuo"


def _client_options(settings: NuonuoIssuerSettings) -> dict[str, Any]:
    """What the threaded and the event-loop httpx clients share: timeouts, pool, proxy
    (None: httpx's trust_env reads HTTPS_PROXY/HTTP_PROXY/NO_PROXY), TLS, User-Agent."""
    return {
        "timeout": httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        "limits": httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
        ),
        "proxy": settings.proxy,
        "verify": settings.ssl_context() or True,
        "headers": {"User-Agent": _USER_AGENT},
    }


class NuonuoIssuer:
    """Nuonuo's gateway for one app and one seller (`userTax`); thread-safe."""

    provider = "nuonuo"

    def __init__(
        self,
        settings: NuonuoIssuerSettings,
        *,
        token_store: TokenStore | None = None,
        transport: httpx.BaseTransport | None = None,
        credit_interval: float | None = None,
    ) -> None:
        """`credit_interval`: ask for the remaining credit line this often (seconds, on
        the way to a submission); None: never ask."""
        self.settings = settings
        self.tokens: TokenStore = token_store if token_store is not None else MemoryTokenStore()
        self._client = httpx.Client(transport=transport, **_client_options(settings))
        self._services = settings.base_url + SERVICES_PATH
        self._closed = threading.Event()
        self.gate = AccountGate(settings.account_probe_interval)
        self.credit = CreditWatch(credit_interval)

    def __repr__(self) -> str:
        return (
            f"NuonuoIssuer(base_url={mask_url_userinfo(self.settings.base_url)!r}, "
            f"app_key={self.settings.app_key!r}, seller={self.settings.seller_tax_id!r})"
        )

    def __enter__(self) -> NuonuoIssuer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._client.close()

    # --- wire ---------------------------------------------------------------------------

    def _read(self, request: httpx.Request) -> tuple[int, Mapping[str, str], bytes]:
        limit = self.settings.max_response_bytes
        with self._client.stream(
            request.method, request.url, content=request.content, headers=request.headers
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise httpx.RemoteProtocolError(response_too_large(limit))
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)

    def _fetch_token(self) -> TokenAnswer:
        body = httpx.QueryParams(
            {
                "client_id": self.settings.app_key,
                "client_secret": self.settings.app_secret.get_secret_value(),
                "grant_type": "client_credentials",
            }
        )
        request = httpx.Request(
            "POST",
            self.settings.token_endpoint(),
            content=str(body).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            status, _, content = self._read(request)
        except httpx.HTTPError as exc:
            return Unavailable(f"token endpoint: {type(exc).__name__}")
        return classify_token(status, content, now=time.time())

    def token(self) -> TokenAnswer:
        """The app's access token from the store (fetched when due); may read the ledger."""
        return self.tokens.token(
            self.settings.app_key,
            self._fetch_token,
            refresh_margin=self.settings.token_refresh_margin,
            refusal_hold=self.settings.token_refusal_hold,
        )

    def call(
        self, op: Operation, serial: str, method: str, payload: Mapping[str, Any]
    ) -> Envelope | IssueResult:
        """One signed business call; a token the gateway refuses is replaced once."""
        return self._run(self._call(op, serial, method, payload))

    # --- the exchanges, written once for both clients ----------------------------------
    #
    # Each exchange is a generator that yields what it needs -- an access token
    # (`TOKEN`) or one HTTP request (`httpx.Request`) -- and receives it: the token store's
    # answer, or the reply `(status, headers, body)` / the `httpx.HTTPError` it failed
    # with. `_run` serves it on the calling thread; `AsyncNuonuoIssuer` on an event loop.

    def _run(self, exchange: Exchange[T]) -> T:
        try:
            need = next(exchange)
            while True:
                answer: object
                if need is TOKEN:
                    answer = self.token()
                else:
                    assert isinstance(need, httpx.Request)
                    try:
                        answer = self._read(need)
                    except httpx.HTTPError as exc:
                        answer = exc
                need = exchange.send(answer)
        except StopIteration as done:  # the exchange returned its result
            return cast(T, done.value)

    def _call(
        self, op: Operation, serial: str, method: str, payload: Mapping[str, Any]
    ) -> Exchange[Envelope | IssueResult]:
        body = encode(payload)
        for attempt in range(2):
            grant = yield TOKEN
            assert isinstance(grant, (Grant, Refused, Unavailable))
            if isinstance(grant, Refused):
                return NeedsHuman(serial, Reason("TOKEN_REFUSED", grant.reason))
            if isinstance(grant, Unavailable):
                return Retryable(serial, Reason("TOKEN_UNAVAILABLE", grant.reason))
            answer = classify_reply(op, serial, (yield self._request(method, body, grant.token)))
            if isinstance(answer, Envelope) and answer.code == TOKEN_REFUSED:
                self.tokens.invalidate(self.settings.app_key, grant.token)
                if attempt == 0:
                    continue
                return Retryable(serial, Reason(answer.code, answer.describe))
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, method: str, body: bytes, token: str) -> httpx.Request:
        settings = self.settings
        senid = secrets.token_hex(16)
        nonce = str(10_000_000 + secrets.randbelow(90_000_000))
        timestamp = str(int(time.time()))
        signature = sign(
            settings.app_secret.get_secret_value(), settings.app_key, senid, nonce, timestamp, body
        )
        return httpx.Request(
            "POST",
            self._services,
            params={
                "senid": senid,
                "nonce": nonce,
                "timestamp": timestamp,
                "appkey": settings.app_key,
            },
            content=body,
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "X-Nuonuo-Sign": signature,
                "accessToken": token,
                "userTax": settings.seller_tax_id,
                "method": method,
            },
        )

    def _issue(self, invoice: InvoicePayload) -> Exchange[IssueResult]:
        doc = orjson.loads(invoice) if isinstance(invoice, bytes) else invoice
        serial = doc.get("serial") if isinstance(doc, Mapping) else None
        if not isinstance(serial, str) or not serial:
            raise ValueError("the invoice has no serial")
        seller = doc.get("seller") or {}
        if seller.get("tax_id") != self.settings.seller_tax_id:
            return Rejected(
                serial,
                (
                    Reason(
                        "SELLER_MISMATCH",
                        "the invoice's seller tax ID is not the one this Nuonuo account "
                        "issues for (issuer.seller_tax_id)",
                        "seller.tax_id",
                    ),
                ),
            )
        paused = self.gate.admit(time.monotonic())
        if paused is not None:
            return NeedsHuman(serial, paused)
        if self.credit.due(time.monotonic()):
            self.credit.record((yield from self._call("query", serial, CREDIT, {})))
        answer = yield from self._call(
            "issue", serial, ISSUE, order_payload(doc, now=datetime.now(UTC))
        )
        result = answer if not isinstance(answer, Envelope) else classify_issue(serial, answer)
        if isinstance(result, NeedsHuman) and result.reason.code == CREDIT_EXHAUSTED:
            self.credit.exhausted()
        self.gate.record(result, time.monotonic())
        return result

    def _query_many(self, serials: Iterable[str]) -> Exchange[dict[str, IssueResult]]:
        out: dict[str, IssueResult] = {}
        for batch in batches(serials):
            answer = yield from self._call("query", batch[0], QUERY, query_payload(batch))
            if not isinstance(answer, Envelope):
                out.update({s: _for(s, answer) for s in batch})
                continue
            out.update(classify_query(batch, answer))
            for item in answer.result if isinstance(answer.result, list) else []:
                if isinstance(item, dict) and str(item.get("status")) == SEAL_FAILED_STATUS:
                    order_no = str(item.get("orderNo"))
                    if order_no in out:
                        out[order_no] = yield from self._reinvoice(
                            order_no, str(item.get("serialNo") or "")
                        )
        return out

    def _reinvoice(self, order_no: str, platform_serial: str) -> Exchange[IssueResult]:
        answer = yield from self._call(
            "query", order_no, REINVOICE, {"fpqqlsh": platform_serial, "orderno": order_no}
        )
        if not isinstance(answer, Envelope):
            return _for(order_no, answer)
        reason = Reason(answer.code, answer.describe)
        if answer.code == SUCCESS:
            return Processing(order_no)
        if answer.code == RETRY_LIMIT:  # 20 a day: try again tomorrow, same order number
            return Retryable(order_no, reason, retry_after=3600.0)
        if is_credential_code(answer.code):
            return NeedsHuman(order_no, reason)
        return Retryable(order_no, reason)

    def _query(self, serial: str) -> Exchange[IssueResult]:
        return (yield from self._query_many([serial]))[serial]

    def _reverse(self, request: ReversalRequest) -> Exchange[IssueResult]:
        paused = self.gate.admit(time.monotonic())
        if paused is not None:
            return NeedsHuman(request.serial, paused)
        result = yield from self._save_red_form(request)
        self.gate.record(result, time.monotonic())
        return result

    def _save_red_form(self, request: ReversalRequest) -> Exchange[IssueResult]:
        serial = request.serial
        answer = yield from self._call(
            "reverse", serial, RED_SAVE, red_form_payload(request, self.settings.seller_tax_id)
        )
        if not isinstance(answer, Envelope):
            return answer
        if answer.code == SUCCESS:
            return Processing(serial)
        reason = Reason(answer.code, answer.describe)
        if is_credential_code(answer.code) or answer.code in ACCOUNT_CODES:
            return NeedsHuman(serial, reason)
        # A repeated billId is refused: if our form exists, it is a duplicate, not an error.
        existing = yield from self._query_reversal(serial)
        if isinstance(existing, (Issued, Processing)) or (
            isinstance(existing, Rejected) and existing.reasons[0].code.startswith("RED_FORM_")
        ):
            return Duplicate(serial, reason)
        if isinstance(existing, NotFound):
            return Rejected(serial, (reason,))
        return OutcomeUnknown(serial, reason)

    def _query_reversal(self, serial: str) -> Exchange[IssueResult]:
        answer = yield from self._call(
            "query_reversal", serial, RED_QUERY, {"identity": "0", "billId": serial}
        )
        if not isinstance(answer, Envelope):
            return answer
        form = classify_red_query(serial, answer)
        if not isinstance(form, Mapping):
            return form
        result = classify_red_form(serial, form)
        red_serial = _text(form.get("invoiceSerialNum"))
        if isinstance(result, Issued) and red_serial is not None:
            detail = yield from self._red_invoice(red_serial)
            if detail is not None:
                return Issued(
                    serial=serial,
                    invoice_no=result.invoice_no,
                    issued_at=detail.issued_at or result.issued_at,
                    check_code=detail.check_code,
                    kind="RED",
                    totals=detail.totals or result.totals,
                    original_invoice_no=result.original_invoice_no,
                    files=detail.files,
                )
        return result

    def _red_invoice(self, platform_serial: str) -> Exchange[Issued | None]:
        """Date, check code and files of the red invoice the bureau issued for a form."""
        answer = yield from self._call(
            "query",
            platform_serial,
            QUERY,
            {"serialNos": [platform_serial], "isOfferInvoiceDetail": "0"},
        )
        if not isinstance(answer, Envelope) or answer.code != SUCCESS:
            return None
        items = answer.result if isinstance(answer.result, list) else []
        item = items[0] if items and isinstance(items[0], dict) else None
        result = classify_invoice(platform_serial, item, red=True) if item else None
        return result if isinstance(result, Issued) else None

    # --- Issuer -------------------------------------------------------------------------

    def issue(self, invoice: InvoicePayload) -> IssueResult:
        return self._run(self._issue(invoice))

    @property
    def credit_remaining(self) -> Decimal | None:
        """The credit line left, as last reported (None: never reported)."""
        return self.credit.remaining

    def query_many(self, serials: Iterable[str]) -> dict[str, IssueResult]:
        """Results for many order numbers, ≤ 50 per call. An invoice whose seal failed
        (status 24) is retried here with `reInvoice` under the same order number."""
        return self._run(self._query_many(serials))

    def query(self, serial: str) -> IssueResult:
        return self._run(self._query(serial))

    def reverse(self, request: ReversalRequest) -> IssueResult:
        return self._run(self._reverse(request))

    def query_reversal(self, serial: str) -> IssueResult:
        return self._run(self._query_reversal(serial))

    def aio(self, *, transport: httpx.AsyncBaseTransport | None = None) -> AsyncNuonuoIssuer:
        """This account on an event loop: its own connections; the same settings, access
        token store, account gate and credit watch. Create and use it on one loop."""
        return AsyncNuonuoIssuer(self, transport=transport)

    def list_invoices(self, query: InvoiceListQuery) -> Iterator[PlatformInvoice]:
        """The seller's invoices matching `query`: `queryInvoiceList` page by page over
        windows of at most 10 days; buyer and total are filtered here (the platform's list
        filters by seller and time only). `ListingError` when a page cannot be read."""
        if query.seller_tax_id != self.settings.seller_tax_id:
            raise listing_error(
                Rejected(
                    "",
                    (
                        Reason(
                            "SELLER_MISMATCH",
                            "this Nuonuo account lists the invoices of issuer.seller_tax_id only",
                        ),
                    ),
                )
            )
        for first, last in list_windows(query):
            page, seen = 1, 0
            while True:
                payload = list_payload(query.seller_tax_id, first, last, page)
                answer = self.call("list", "", LIST, payload)
                page_result = classify_list_page(answer) if isinstance(answer, Envelope) else answer
                if not isinstance(page_result, tuple):
                    raise listing_error(page_result)
                total, invoices = page_result
                yield from (i for i in invoices if query.matches(i))
                seen += LIST_PAGE_SIZE
                if seen >= total:
                    break
                page += 1

    def issue_or_resolve(self, invoice: InvoicePayload) -> IssueResult:
        submitted = self.issue(invoice)
        if isinstance(submitted, (Duplicate, OutcomeUnknown)):
            return resolve_after_submit(submitted, self.query(submitted.serial))
        return submitted

    # --- red-confirmation forms raised by the buyer (syncd.issuers.nuonuo_forms) ----------

    def _forms(self) -> NuonuoForms:
        def call(method: str, payload: Mapping[str, Any]) -> object:
            answer = self.call("query", "FORMS", method, payload)
            if isinstance(answer, Envelope):
                return (answer.code, answer.describe, answer.result)
            return answer

        return NuonuoForms(call, is_credential_code, lambda: datetime.now(UTC))

    def list_buyer_red_forms(self) -> ListAnswer:
        return self._forms().list()

    def buyer_red_form(self, form_id: str) -> FormAnswer:
        return self._forms().get(form_id)

    def decide_buyer_red_form(self, form_id: str, *, confirm: bool, reason: str) -> DecideAnswer:
        return self._forms().decide(form_id, confirm=confirm, reason=reason)


class AsyncNuonuoIssuer:
    """A Nuonuo account on an event loop: the sync client's exchanges (`NuonuoIssuer._call`
    and the rest), served with `httpx.AsyncClient`. The access token comes from the same
    store on a thread (the fleet's store is the ledger: a database read never runs on the
    loop); the account gate and the credit watch are the sync client's own, so a paused
    account is paused for both."""

    provider = "nuonuo"

    def __init__(
        self, sync: NuonuoIssuer, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._sync = sync
        settings = sync.settings
        self._client = httpx.AsyncClient(transport=transport, **_client_options(settings))

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _read(self, request: httpx.Request) -> Reply:
        limit = self._sync.settings.max_response_bytes
        response = await self._client.send(
            self._client.build_request(
                request.method, request.url, content=request.content, headers=request.headers
            ),
            stream=True,
        )
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise httpx.RemoteProtocolError(response_too_large(limit))
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)
        finally:
            await response.aclose()

    async def _run(self, exchange: Exchange[T]) -> T:
        try:
            need = next(exchange)
            while True:
                answer: object
                if need is TOKEN:
                    answer = await asyncio.to_thread(self._sync.token)
                else:
                    assert isinstance(need, httpx.Request)
                    try:
                        answer = await self._read(need)
                    except httpx.HTTPError as exc:
                        answer = exc
                need = exchange.send(answer)
        except StopIteration as done:  # the exchange returned its result
            return cast(T, done.value)

    async def issue(self, invoice: InvoicePayload) -> IssueResult:
        return await self._run(self._sync._issue(invoice))

    async def query(self, serial: str) -> IssueResult:
        return await self._run(self._sync._query(serial))

    async def reverse(self, request: ReversalRequest) -> IssueResult:
        return await self._run(self._sync._reverse(request))

    async def query_reversal(self, serial: str) -> IssueResult:
        return await self._run(self._sync._query_reversal(serial))


def _for(serial: str, result: IssueResult) -> IssueResult:
    """A batch-wide failure, restated for one serial of the batch."""
    if isinstance(result, Retryable):
        return Retryable(
            serial, result.reason, result.retry_after, result.resubmit, result.throttled
        )
    if isinstance(result, NeedsHuman):
        return NeedsHuman(serial, result.reason)
    if isinstance(result, OutcomeUnknown):
        return Retryable(serial, result.reason)
    return result


__all__ = [
    "QUERY_BATCH",
    "Envelope",
    "NuonuoIssuer",
    "NuonuoIssuerSettings",
    "classify_http",
    "classify_invoice",
    "classify_issue",
    "classify_query",
    "classify_red_form",
    "classify_token",
    "order_payload",
    "red_form_payload",
    "sign",
]
