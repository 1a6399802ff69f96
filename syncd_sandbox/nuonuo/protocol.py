"""The Nuonuo dialect's wire rules, pure: signature, codes, the order's checks.

Written from the platform's published facts (docs/issuers.md, "Nuonuo"), independently of
syncd's client (the sandbox never imports syncd): a mistake on one side is caught by the
other. Codes marked *assumed* are not in any public source we found; docs/sandbox.md
lists them among the deviations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

BEIJING: Final = timezone(timedelta(hours=8))

SUCCESS: Final = "E0000"
DUPLICATE_ORDER: Final = "E9106"
NOT_FOUND: Final = "E9500"
RETRY_LIMIT: Final = "E9613"
VALIDATION: Final = "E9101"  # assumed: the platform's field-check refusals vary
BAD_APP_KEY: Final = "070101"
TOKEN_INVALID: Final = "070302"  # noqa: S105 - assumed; a response code, not a secret
BAD_SIGNATURE: Final = "070601"
SESSION_EXPIRED: Final = "E9301"  # assumed: the drawer's tax-bureau login expired
#: assumed (no public source names Nuonuo's method): the company's remaining credit line,
#: answered with the bureau's own fields (bysxed, kysyed, ztsxbz)
CREDIT_METHOD: Final = "nuonuo.OpeMplatform.queryCreditLimit"
CREDIT_EXHAUSTED: Final = "E9302"  # assumed: the credit line (授信额度) is used up
MISSING_USER_TAX: Final = "E9104"  # assumed
RED_FORM_EXISTS: Final = "E9107"  # assumed: a repeated billId
FORM_NOT_PENDING: Final = "E9108"  # assumed: confirm on a form not waiting for this side

RATES: Final = frozenset(Decimal(r) for r in ("0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0"))
_CENT: Final = Decimal("0.01")


def signature(
    secret: str, app_key: str, senid: str, nonce: str, timestamp: str, body: bytes
) -> str:
    text = f"a=services&l=v1&p=open&k={app_key}&i={senid}&n={nonce}&t={timestamp}&f=".encode()
    return base64.b64encode(hmac.new(secret.encode(), text + body, hashlib.sha1).digest()).decode()


def check_signature(
    params: Mapping[str, str], headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str]
) -> tuple[str, str] | None:
    """None when the request is signed by a known app, else (code, message)."""
    app_key = params.get("appkey", "")
    if app_key not in secrets:
        return BAD_APP_KEY, "appkey invalid"
    senid, nonce, stamp = (
        params.get("senid", ""),
        params.get("nonce", ""),
        params.get("timestamp", ""),
    )
    if not re.fullmatch(r"[0-9A-Za-z]{32}", senid):
        return BAD_SIGNATURE, "senid must be 32 letters or digits"
    if not re.fullmatch(r"[1-9][0-9]{7}", nonce) or not stamp.isdigit():
        return BAD_SIGNATURE, "nonce (8 digits) and timestamp (seconds) are required"
    expected = signature(secrets[app_key], app_key, senid, nonce, stamp, body)
    if not hmac.compare_digest(expected, headers.get("x-nuonuo-sign", "")):
        return BAD_SIGNATURE, "signature mismatch"
    return None


def _dec(value: object) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def check_order(order: object, user_tax: str) -> list[str]:
    """What the platform refuses in a `requestBillingNew` order (empty: acceptable)."""
    if not isinstance(order, dict):
        return ["order must be an object"]
    problems: list[str] = []
    order_no = order.get("orderNo")
    if not isinstance(order_no, str) or not 1 <= len(order_no) <= 64:
        problems.append("orderNo: 1 to 64 characters")
    if not order.get("buyerName"):
        problems.append("buyerName is required")
    if order.get("invoiceType") != "1":
        problems.append("invoiceType: 1 (blue); 数电 red invoices go through red forms")
    line = order.get("invoiceLine")
    if line not in ("pc", "bs"):
        problems.append("invoiceLine: pc or bs")
    if line == "bs" and not order.get("buyerTaxNum"):
        problems.append("buyerTaxNum is required for 数电专票 (bs)")
    if order.get("salerTaxNum") != user_tax:
        problems.append("salerTaxNum must equal the userTax header")
    details = order.get("invoiceDetail")
    if not isinstance(details, list) or not 1 <= len(details) <= 2000:
        return [*problems, "invoiceDetail: 1 to 2000 lines"]
    previous: dict[str, Any] | None = None
    for i, d in enumerate(details):
        problems += [f"invoiceDetail[{i}].{p}" for p in _check_line(d, previous)]
        previous = d if isinstance(d, dict) else None
    return problems


def _check_line(d: object, previous: Mapping[str, Any] | None) -> list[str]:
    if not isinstance(d, dict):
        return ["must be an object"]
    out: list[str] = []
    if not d.get("goodsName"):
        out.append("goodsName is required")
    if not re.fullmatch(r"[0-9]{19}", str(d.get("goodsCode") or "")):
        out.append("goodsCode: 19 digits")
    rate = _dec(d.get("taxRate"))
    net, tax, gross = (_dec(d.get(k)) for k in ("taxExcludedAmount", "tax", "taxIncludedAmount"))
    if rate not in RATES:
        out.append("taxRate: 0.13, 0.09, 0.06, 0.05, 0.03, 0.01 or 0")
    if net is None or tax is None or gross is None:
        return [*out, "taxExcludedAmount, tax, taxIncludedAmount are required"]
    if net + tax != gross:
        out.append("taxExcludedAmount + tax must equal taxIncludedAmount")
    if rate is not None and abs(net * rate - tax) > Decimal("0.06"):
        out.append("tax differs from taxExcludedAmount × taxRate by more than 0.06")
    prop = d.get("invoiceLineProperty", "0")
    if prop == "1":
        if previous is None or previous.get("invoiceLineProperty") != "2":
            out.append("a discount line (1) must follow its discounted line (2)")
        elif previous.get("goodsName") != d.get("goodsName"):
            out.append("a discount line names its discounted line's goods")
        if gross >= 0:
            out.append("a discount line's amounts are negative")
    elif gross < 0:
        out.append("only discount lines are negative on a blue invoice")
    num, price = _dec(d.get("num")), _dec(d.get("price"))
    if (num is None) != (price is None):
        out.append("num and price go together")
    if num is not None and price is not None:
        basis = gross if d.get("withTaxFlag") == "1" else net
        if abs((num * price).quantize(_CENT) - basis) > _CENT:
            out.append("num × price differs from the amount by more than 0.01")
    return out


def order_totals(order: Mapping[str, Any]) -> tuple[Decimal, Decimal, Decimal]:
    net = tax = Decimal("0")
    for d in order.get("invoiceDetail") or []:
        net += Decimal(str(d["taxExcludedAmount"]))
        tax += Decimal(str(d["tax"]))
    return net, tax, net + tax


def beijing_time(ts: float) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Beijing time, as the platform writes `billTime`."""
    return datetime.fromtimestamp(ts, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def day_range(start: object, end: object) -> tuple[float | None, float | None]:
    """`billTimeStart`/`billTimeEnd` (yyyy-MM-dd, Beijing days, both included, at most 90
    days apart) as [since, until) timestamps; (None, None) when missing or invalid."""
    try:
        first = datetime.strptime(str(start), "%Y-%m-%d").replace(tzinfo=BEIJING)
        last = datetime.strptime(str(end), "%Y-%m-%d").replace(tzinfo=BEIJING)
    except ValueError:
        return None, None
    if last < first or (last - first).days > 90:
        return None, None
    return first.timestamp(), (last + timedelta(days=1)).timestamp()


def envelope(code: str, describe: str = "", result: object = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "describe": describe}
    if result is not None:
        body["result"] = result
    return body
