"""The Nuonuo client: payload mapping (golden), signing (hand-computed vector), the
classifiers, and the client's call sequences over a fake transport."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from syncd.issuers.base import (
    Duplicate,
    Issued,
    IssueResult,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Rejected,
    Retryable,
    ReturnedLine,
    ReversalRequest,
)
from syncd.issuers.nuonuo import (
    Envelope,
    NuonuoIssuer,
    NuonuoIssuerSettings,
    batches,
    classify_http,
    classify_invoice,
    classify_issue,
    classify_query,
    classify_red_form,
    classify_token,
    order_payload,
    red_form_payload,
    sign,
)
from syncd.issuers.tokens import Grant, MemoryTokenStore, Refused, Unavailable
from tests.unit import invoice_samples as samples

NOW = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)


def canonical(invoice: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(invoice.to_json())
    return data


# --- signing ------------------------------------------------------------------------------


def test_signature_matches_the_published_vector() -> None:
    # docs/issuers.md: the official Python sample's output for these inputs.
    body = '{"name":"中文"}'.encode()
    assert sign("secret", "app", "a" * 32, "12345678", "1700000000", body) == (
        "4BzcKzrcoqxPis0W/W3X2ae0uIo="
    )


def test_signature_covers_the_exact_bytes() -> None:
    a = sign("secret", "app", "a" * 32, "12345678", "1700000000", b'{"a":1}')
    b = sign("secret", "app", "a" * 32, "12345678", "1700000000", b'{"a": 1}')
    assert a != b


# --- canonical -> Nuonuo ------------------------------------------------------------------


def test_order_payload_golden_special_invoice() -> None:
    payload = order_payload(canonical(samples.blue()), now=NOW)
    assert payload == {
        "order": {
            "orderNo": "SX3F7Q2M9KD4HT6W1B8N5C0RJA",
            "invoiceDate": "2026-11-27 00:00:00",
            "invoiceType": "1",
            "invoiceLine": "bs",
            "salerTaxNum": "91310115MA1K4PLN89",
            "salerTel": "021-5555 0000",
            "salerAddress": "1 Century Ave, Shanghai",
            "salerAccount": "Bank of China Shanghai Branch 4567 8901 2345",
            "buyerName": "Example Buyer Ltd.",
            "buyerTaxNum": "91110108MA01ABCD2H",
            "email": "ap@example.com",
            "naturalPersonFlag": "0",
            "clerk": "Li Lei",
            "remark": "SO-2026-000042",
            "pushMode": "-1",
            "invoiceDetail": [
                {
                    "goodsName": "Consulting service",
                    "goodsCode": "3040201000000000000",
                    "unit": "hour",
                    "withTaxFlag": "0",
                    "taxRate": "0.09",
                    "taxExcludedAmount": "165.14",
                    "tax": "14.86",
                    "taxIncludedAmount": "180.00",
                    "invoiceLineProperty": "0",
                    "num": "2",
                    "price": "82.57",
                }
            ],
        }
    }


def test_order_payload_discount_pair_and_inclusive_prices() -> None:
    from syncd.invoice.model import PriceBasis

    doc = canonical(samples.with_discount(PriceBasis.TAX_INCLUSIVE))
    details = order_payload(doc, now=NOW)["order"]["invoiceDetail"]
    discounted, discount = details[0], details[1]
    assert discounted["invoiceLineProperty"] == "2"
    assert discount["invoiceLineProperty"] == "1"
    assert discount["goodsName"] == discounted["goodsName"]
    assert "num" not in discount and "price" not in discount
    assert Decimal(discount["taxIncludedAmount"]) < 0
    assert all(d["withTaxFlag"] == "1" for d in details)
    for d in details:  # every line carries all three amounts, and they add up
        assert Decimal(d["taxExcludedAmount"]) + Decimal(d["tax"]) == Decimal(
            d["taxIncludedAmount"]
        )


def test_order_payload_ordinary_kind_policies_and_no_issue_date() -> None:
    from syncd.invoice.model import InvoiceType

    doc = canonical(samples.multi_rate())
    doc["invoice_type"] = InvoiceType.ORDINARY.value
    doc["issue_date"] = None
    order = order_payload(doc, now=NOW)["order"]
    assert order["invoiceLine"] == "pc"
    assert order["invoiceDate"] == "2026-11-27 10:30:00"  # Beijing time
    flags = [d.get("favouredPolicyFlag") for d in order["invoiceDetail"]]
    assert flags == [None, None, None, None, "03", "04"]
    assert all(len(d["goodsCode"]) == 19 for d in order["invoiceDetail"])


def test_red_form_payload_golden() -> None:
    red = canonical(samples.red_of(samples.blue()))
    request = ReversalRequest(red["serial"], samples.BLUE_NO, "SALES_RETURN", invoice=red)
    assert red_form_payload(request, samples.SELLER_TAX_ID) == {
        "billId": "SREDREDRED0000000000000001",
        "blueInvoiceLine": "bs",
        "applySource": "0",
        "blueElecInvoiceNumber": samples.BLUE_NO,
        "sellerTaxNo": samples.SELLER_TAX_ID,
        "sellerName": "Acme Trading Co., Ltd.",
        "buyerTaxNo": samples.BUYER_TAX_ID,
        "buyerName": "Example Buyer Ltd.",
        "redReason": "1",
    }


def test_partial_red_form_lists_the_returned_lines_in_blue_order() -> None:
    red = canonical(samples.red_of(samples.blue()))
    request = ReversalRequest(
        red["serial"],
        samples.BLUE_NO,
        "SALES_RETURN",
        invoice=red,
        lines=(ReturnedLine(2, Decimal("1")), ReturnedLine(1, Decimal("0.5"))),
    )
    body = red_form_payload(request, samples.SELLER_TAX_ID)
    detail = body["detail"]
    assert [d["blueDetailIndex"] for d in detail] == ["1", "2"]
    assert [d["goodsNum"] for d in detail] == ["-0.5", "-1"]
    first = next(ln for ln in red["lines"] if ln["line_no"] == 1)
    assert detail[0]["goodsName"] == first["name"]
    assert detail[0]["taxExcludedAmount"] == str(first["net_amount"])
    # a whole reversal still has no detail
    whole = ReversalRequest(red["serial"], samples.BLUE_NO, "SALES_RETURN", invoice=red)
    assert "detail" not in red_form_payload(whole, samples.SELLER_TAX_ID)


def test_query_batches_hold_at_most_50_distinct_serials() -> None:
    serials = [f"S{i:08d}" for i in range(120)] + ["S00000001"]
    assert [len(b) for b in batches(serials)] == [50, 50, 20]


# --- classification ------------------------------------------------------------------------


def env(code: str, result: Any = None, describe: str = "") -> Envelope:
    return Envelope(code, describe, result)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("E0000", Processing),
        ("E9106", Duplicate),
        ("070101", NeedsHuman),
        ("070306", NeedsHuman),
        ("070601", NeedsHuman),
        ("E9210", Rejected),
    ],
)
def test_issue_codes(code: str, expected: type) -> None:
    assert isinstance(classify_issue("S1", env(code)), expected)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("2", Issued), ("20", Processing), ("21", Processing), ("22", Rejected), ("3", Rejected)],
)
def test_invoice_statuses(status: str, expected: type) -> None:
    assert isinstance(classify_invoice("S1", {"status": status, "orderNo": "S1"}), expected)


def test_seal_failure_resubmits_the_same_order_number() -> None:
    result = classify_invoice("S1", {"status": "24", "failCause": "seal"})
    assert isinstance(result, Retryable) and result.resubmit


def test_issued_item_carries_number_time_totals_and_files() -> None:
    result = classify_invoice(
        "S1",
        {
            "status": "2",
            "allElectronicInvoiceNumber": "26312000000000000042",
            "invoiceNo": "00000042",
            "invoiceTime": 1790121600000,
            "checkCode": "12345",
            "exTaxAmount": "165.14",
            "taxAmount": "14.86",
            "orderAmount": "180.00",
            "pdfUrl": "https://x/a.pdf",
            "ofdUrl": "https://x/a.ofd",
            "xmlUrl": "https://x/a.xml",
        },
    )
    assert isinstance(result, Issued)
    assert result.invoice_no == "26312000000000000042"
    assert result.issued_at.startswith("2026-09-23T08:00:00+08:00")
    assert result.totals is not None and result.totals.gross_amount == Decimal("180.00")
    assert result.files == {
        "pdf": "https://x/a.pdf",
        "ofd": "https://x/a.ofd",
        "xml": "https://x/a.xml",
    }


def test_query_answers_per_order_number() -> None:
    answer = env("E0000", [{"orderNo": "A", "status": "2"}, {"orderNo": "B", "status": "20"}])
    results = classify_query(["A", "B", "C"], answer)
    assert isinstance(results["A"], Issued)
    assert isinstance(results["B"], Processing)
    assert isinstance(results["C"], NotFound)
    assert all(isinstance(r, NotFound) for r in classify_query(["A"], env("E9500")).values())
    assert isinstance(classify_query(["A"], env("070101"))["A"], NeedsHuman)
    assert isinstance(classify_query(["A"], env("E9999"))["A"], Retryable)


@pytest.mark.parametrize(
    ("status", "red_no", "expected", "waiting"),
    [
        ("01", "26312000000000000099", Issued, False),
        ("04", "26312000000000000099", Issued, False),
        ("04", None, Processing, False),
        ("15", None, Processing, False),
        ("02", None, Processing, True),
        ("07", None, Rejected, False),
        ("16", None, Rejected, False),
    ],
)
def test_red_form_states(status: str, red_no: str | None, expected: type, waiting: bool) -> None:
    form = {
        "billId": "R1",
        "billStatus": status,
        "redInvoiceNumber": red_no,
        "taxExcludedAmount": "-165.14",
        "taxAmount": "-14.86",
    }
    result = classify_red_form("R1", form)
    assert isinstance(result, expected)
    if isinstance(result, Processing):
        assert result.awaiting_confirmation is waiting
    if isinstance(result, Issued):
        assert result.kind == "RED"
        assert result.totals is not None and result.totals.gross_amount == Decimal("-180.00")


def test_http_layer() -> None:
    limited = classify_http("issue", "S", 429, {"retry-after": "3"}, b"")
    assert isinstance(limited, Retryable) and limited.throttled
    assert isinstance(classify_http("issue", "S", 504, {}, b""), OutcomeUnknown)
    assert isinstance(classify_http("query", "S", 503, {}, b""), Retryable)
    assert isinstance(classify_http("issue", "S", 200, {}, b"<html>"), OutcomeUnknown)
    assert isinstance(classify_http("query", "S", 200, {}, b"{}"), Retryable)
    ok = classify_http("issue", "S", 200, {}, b'{"code":"E0000","describe":"ok","result":{}}')
    assert ok == Envelope("E0000", "ok", {})


def test_token_answers() -> None:
    grant = classify_token(200, b'{"access_token":"t0k3n","expires_in":86400}', now=100.0)
    assert isinstance(grant, Grant) and grant.expires_at == 86500.0
    assert "t0k3n" not in repr(grant)
    refused = classify_token(400, b'{"error":"invalid_client","error_description":"bad"}', now=0)
    assert isinstance(refused, Refused) and "invalid_client" in refused.reason
    assert isinstance(classify_token(502, b"", now=0), Unavailable)


# --- the token store's rules ----------------------------------------------------------------


def test_memory_store_fetches_once_for_many_threads() -> None:
    store = MemoryTokenStore()
    started = threading.Event()

    def fetch() -> Grant:
        started.wait(1)
        return Grant("tok", 10_000.0)

    got: list[object] = []
    threads = [
        threading.Thread(
            target=lambda: got.append(
                store.token("k", fetch, refresh_margin=10, refusal_hold=60, now=1.0)
            )
        )
        for _ in range(16)
    ]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join()
    assert store.fetches("k") == 1
    assert all(isinstance(g, Grant) and g.token == "tok" for g in got)


def test_memory_store_refreshes_before_expiry_and_holds_refusals() -> None:
    store = MemoryTokenStore()
    answers: list[Grant | Refused] = [Grant("old", 100.0), Grant("new", 1_000.0)]
    store.token("k", lambda: answers.pop(0), refresh_margin=10, refusal_hold=60, now=0.0)
    fresh = store.token("k", lambda: answers.pop(0), refresh_margin=10, refusal_hold=60, now=95.0)
    assert isinstance(fresh, Grant) and fresh.token == "new"

    refusing = MemoryTokenStore()
    calls = 0

    def refuse() -> Refused:
        nonlocal calls
        calls += 1
        return Refused("invalid_client")

    for at in (0.0, 10.0, 59.0):
        refusing.token("k", refuse, refresh_margin=10, refusal_hold=60, now=at)
    assert calls == 1
    refusing.token("k", refuse, refresh_margin=10, refusal_hold=60, now=61.0)
    assert calls == 2


# --- the client over a fake transport -------------------------------------------------------

SECRET = "s3cr3t-app-secret"


def settings(**changes: Any) -> NuonuoIssuerSettings:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "app_key": "app-key",
        "app_secret": SECRET,
        "seller_tax_id": samples.SELLER_TAX_ID,
    }
    values.update(changes)
    return NuonuoIssuerSettings.model_validate(values)


Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class FakeNuonuo:
    """Checks signature and headers like the gateway; answers from `handlers`."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.token_fetches = 0
        self.tokens = ["tok-1", "tok-2", "tok-3"]
        self.valid: set[str] = set()
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/accessToken":
            self.token_fetches += 1
            form = parse_qs(request.content.decode())
            if form["client_secret"] != [SECRET]:
                return httpx.Response(400, json={"error": "invalid_client"})
            token = self.tokens.pop(0)
            self.valid = {token}
            return httpx.Response(200, json={"access_token": token, "expires_in": 86400})
        params = request.url.params
        expected = sign(
            SECRET,
            params["appkey"],
            params["senid"],
            params["nonce"],
            params["timestamp"],
            request.content,
        )
        assert request.headers["X-Nuonuo-Sign"] == expected
        assert request.headers["userTax"] == samples.SELLER_TAX_ID
        if request.headers["accessToken"] not in self.valid:
            return httpx.Response(200, json={"code": "070302", "describe": "token invalid"})
        method = request.headers["method"]
        self.calls.append(method)
        body = json.loads(request.content)
        return httpx.Response(200, json=self.handlers[method](method, body))


def client(fake: FakeNuonuo, **changes: Any) -> NuonuoIssuer:
    return NuonuoIssuer(settings(**changes), transport=httpx.MockTransport(fake))


def test_issue_then_query_issued() -> None:
    fake = FakeNuonuo(
        {
            "nuonuo.OpeMplatform.requestBillingNew": lambda m, b: {
                "code": "E0000",
                "result": {"invoiceSerialNum": "P1"},
            },
            "nuonuo.OpeMplatform.queryInvoiceResult": lambda m, b: {
                "code": "E0000",
                "result": [
                    {"orderNo": b["orderNos"][0], "status": "2", "allElectronicInvoiceNumber": "1"}
                ],
            },
        }
    )
    with client(fake) as issuer:
        doc = canonical(samples.blue())
        assert isinstance(issuer.issue(doc), Processing)
        assert isinstance(issuer.query(doc["serial"]), Issued)
    assert fake.token_fetches == 1


def test_duplicate_order_is_resolved_by_query() -> None:
    fake = FakeNuonuo(
        {
            "nuonuo.OpeMplatform.requestBillingNew": lambda m, b: {"code": "E9106"},
            "nuonuo.OpeMplatform.queryInvoiceResult": lambda m, b: {
                "code": "E0000",
                "result": [{"orderNo": b["orderNos"][0], "status": "20"}],
            },
        }
    )
    with client(fake) as issuer:
        result = issuer.issue_or_resolve(canonical(samples.blue()))
    assert isinstance(result, Processing)
    assert fake.calls == [
        "nuonuo.OpeMplatform.requestBillingNew",
        "nuonuo.OpeMplatform.queryInvoiceResult",
    ]


def test_refused_token_is_replaced_once_then_the_call_succeeds() -> None:
    fake = FakeNuonuo({"nuonuo.OpeMplatform.requestBillingNew": lambda m, b: {"code": "E0000"}})
    with client(fake) as issuer:
        issuer.issue(canonical(samples.blue()))
        fake.valid = set()  # the platform revokes tok-1
        fake.tokens = ["tok-2"]
        assert isinstance(issuer.issue(canonical(samples.blue())), Processing)
    assert fake.token_fetches == 2


def test_refused_credentials_are_needs_human_without_a_fetch_storm() -> None:
    fake = FakeNuonuo({})
    with client(fake, app_secret="wrong-secret") as issuer:
        results = [issuer.issue(canonical(samples.blue())) for _ in range(5)]
    assert all(isinstance(r, NeedsHuman) for r in results)
    assert results[0].reason.code == "TOKEN_REFUSED"  # type: ignore[union-attr]
    assert fake.token_fetches == 1
    assert SECRET not in repr(results) and "wrong-secret" not in repr(results)


def test_seller_mismatch_is_refused_before_sending() -> None:
    fake = FakeNuonuo({})
    with client(fake, seller_tax_id=samples.OTHER_VALID_TAX_ID) as issuer:
        result = issuer.issue(canonical(samples.blue()))
    assert isinstance(result, Rejected) and result.reasons[0].code == "SELLER_MISMATCH"
    assert fake.token_fetches == 0


def test_lost_answer_after_sending_is_outcome_unknown() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/accessToken":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 86400})
        raise httpx.ReadError("connection reset", request=request)

    with NuonuoIssuer(settings(), transport=httpx.MockTransport(broken)) as issuer:
        assert isinstance(issuer.issue(canonical(samples.blue())), OutcomeUnknown)
        assert isinstance(issuer.query("S1"), Retryable)


def test_reversal_refused_as_repeat_is_a_duplicate_when_the_form_exists() -> None:
    form = {
        "billId": "SREDREDRED0000000000000001",
        "billStatus": "04",
        "redInvoiceNumber": "26312000000000000099",
        "invoiceSerialNum": "P9",
        "taxExcludedAmount": "-165.14",
        "taxAmount": "-14.86",
    }
    fake = FakeNuonuo(
        {
            "nuonuo.OpeMplatform.saveInvoiceRedConfirm": lambda m, b: {
                "code": "E9999",
                "describe": "billId repeated",
            },
            "nuonuo.OpeMplatform.queryInvoiceRedConfirm": lambda m, b: {
                "code": "E0000",
                "result": {"total": 1, "list": [form]},
            },
            "nuonuo.OpeMplatform.queryInvoiceResult": lambda m, b: {
                "code": "E0000",
                "result": [
                    {
                        "serialNo": "P9",
                        "status": "2",
                        "allElectronicInvoiceNumber": "26312000000000000099",
                        "invoiceTime": 1790121600000,
                        "pdfUrl": "https://x/r.pdf",
                    }
                ],
            },
        }
    )
    red = canonical(samples.red_of(samples.blue()))
    request = ReversalRequest(red["serial"], samples.BLUE_NO, "SALES_RETURN", invoice=red)
    with client(fake) as issuer:
        assert isinstance(issuer.reverse(request), Duplicate)
        result = issuer.query_reversal(request.serial)
    assert isinstance(result, Issued) and result.kind == "RED"
    assert result.files == {"pdf": "https://x/r.pdf"}


def test_the_event_loop_client_runs_the_same_exchanges() -> None:
    """`NuonuoIssuer.aio`: the same signed calls, token handling and classification on an
    event loop -- issue, query, a refused token replaced once, a reversal resolved as a
    duplicate, and the seller check before anything is sent."""
    import asyncio

    fake = FakeNuonuo(
        {
            "nuonuo.OpeMplatform.requestBillingNew": lambda m, b: {"code": "E0000"},
            "nuonuo.OpeMplatform.queryInvoiceResult": lambda m, b: {
                "code": "E0000",
                "result": [
                    {"orderNo": b["orderNos"][0], "status": "2", "allElectronicInvoiceNumber": "1"}
                ],
            },
            "nuonuo.OpeMplatform.saveInvoiceRedConfirm": lambda m, b: {
                "code": "E9999",
                "describe": "billId repeated",
            },
            "nuonuo.OpeMplatform.queryInvoiceRedConfirm": lambda m, b: {
                "code": "E0000",
                "result": {"total": 1, "list": [{"billId": b["billId"], "billStatus": "01"}]},
            },
        }
    )
    doc = canonical(samples.blue())
    red = canonical(samples.red_of(samples.blue()))
    request = ReversalRequest(red["serial"], samples.BLUE_NO, "SALES_RETURN", invoice=red)

    async def go(issuer: NuonuoIssuer) -> list[IssueResult]:
        aio = issuer.aio(transport=httpx.MockTransport(fake))
        try:
            issued = await aio.issue(doc)
            queried = await aio.query(doc["serial"])
            fake.valid = set()  # the platform revokes the token: replaced once
            again = await aio.issue(doc)
            reversed_ = await aio.reverse(request)
            return [issued, queried, again, reversed_]
        finally:
            await aio.aclose()

    with client(fake) as issuer:
        issued, queried, again, reversed_ = asyncio.run(go(issuer))
    assert isinstance(issued, Processing) and isinstance(again, Processing)
    assert isinstance(queried, Issued)
    assert isinstance(reversed_, Duplicate)
    assert fake.token_fetches == 2

    async def mismatch() -> IssueResult:
        with client(fake, seller_tax_id=samples.OTHER_VALID_TAX_ID) as other:
            aio = other.aio(transport=httpx.MockTransport(fake))
            try:
                return await aio.issue(doc)
            finally:
                await aio.aclose()

    result = asyncio.run(mismatch())
    assert isinstance(result, Rejected) and result.reasons[0].code == "SELLER_MISMATCH"


def test_repr_and_settings_hide_the_secret() -> None:
    with client(FakeNuonuo({})) as issuer:
        assert SECRET not in repr(issuer)
        assert SECRET not in repr(issuer.settings)


# --- the account gate ------------------------------------------------------------------------


def test_account_gate_pauses_after_a_refusal_and_probes_once_per_interval() -> None:
    from syncd.issuers.base import Reason
    from syncd.issuers.nuonuo import AccountGate

    gate = AccountGate(interval=10)
    assert gate.admit(0) is None
    gate.record(NeedsHuman("S", Reason("E9301", "session expired")), now=0)
    assert not gate.up
    assert gate.admit(5) is not None and gate.admit(9.9) is not None
    assert gate.admit(10) is None  # the probe
    assert gate.admit(10.1) is not None  # everyone else still waits
    gate.record(NeedsHuman("S", Reason("E9301", "still expired")), now=10.5)
    assert gate.admit(20) is not None and gate.admit(20.5) is None
    gate.record(Processing("S"), now=21)
    assert gate.up and gate.admit(21) is None
    # a data problem of one document says nothing about the account
    gate.record(NeedsHuman("S", Reason("SOMETHING", "x")), now=22)
    assert gate.up
