"""The real sandbox process, driven through syncd's issuer client: issuing,
idempotency, platform rules, signing, faults and lost answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from syncd.issuers import signing
from syncd.issuers.base import (
    Duplicate,
    Issued,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Rejected,
    Retryable,
)
from syncd.issuers.sandbox import SandboxIssuer
from tests import sandbox_samples as samples
from tests.integration.sandbox_process import SandboxProcess, free_port, running_sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox") / "store.db") as process:
        yield process


@pytest.fixture(autouse=True)
def _no_faults(sandbox: SandboxProcess) -> Iterator[None]:
    sandbox.reset_faults()
    yield
    sandbox.reset_faults()


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[SandboxIssuer]:
    with sandbox.client() as c:
        yield c


def issued_serials(sandbox: SandboxProcess, serial: str) -> list[dict[str, object]]:
    return [i for i in sandbox.issued() if i["serial"] == serial]


# --- the happy path and idempotency ------------------------------------------------------


def test_issue_is_asynchronous_and_yields_a_complete_invoice(sandbox, client):
    doc = samples.invoice()
    first = client.issue(doc)
    assert isinstance(first, Processing)
    result = client.wait_issued(doc["serial"])
    assert isinstance(result, Issued)
    assert len(result.invoice_no) == 20 and result.invoice_no.isdigit()
    assert result.check_code is not None and len(result.check_code) == 20
    assert result.kind == "BLUE"
    assert result.totals is not None and result.totals.gross_amount == Decimal("180.00")
    xml = httpx.get(result.files["xml"]).content
    assert result.invoice_no.encode() in xml and b"<cbc:TaxAmount" in xml
    assert "Example Buyer Ltd." in httpx.get(result.files["html"]).text
    fetched = client.document(doc["serial"])
    assert isinstance(fetched, bytes) and result.invoice_no.encode() in fetched
    forged = result.files["xml"].split("?token=")[0] + "?token=" + "0" * 32
    assert httpx.get(forged).status_code == 401


def test_same_serial_same_payload_never_makes_a_second_invoice(sandbox, client):
    doc = samples.invoice()
    client.issue(doc)
    first = client.wait_issued(doc["serial"])
    again = client.issue(samples.variant(doc))
    assert isinstance(first, Issued) and isinstance(again, Issued)
    assert again.invoice_no == first.invoice_no
    assert len(issued_serials(sandbox, doc["serial"])) == 1


def test_same_serial_other_payload_is_a_conflict_for_a_human(sandbox, client):
    doc = samples.invoice()
    client.issue(doc)
    other = samples.invoice(doc["serial"], remark="changed after freezing")
    result = client.issue(other)
    assert isinstance(result, NeedsHuman) and result.reason.code == "SERIAL_CONFLICT"


def test_query_of_unknown_serial_is_not_found(client):
    assert isinstance(client.query("NEVERSEEN0001"), NotFound)


def test_exact_frozen_bytes_are_sent_unchanged(sandbox, client):
    import json

    doc = samples.invoice()
    raw = json.dumps(doc, indent=2).encode()
    assert isinstance(client.issue(raw), Processing)
    assert isinstance(client.issue(doc), (Processing, Issued))  # same parsed payload


def test_client_is_thread_safe_under_a_worker_pool(sandbox, client):
    docs = [samples.invoice() for _ in range(40)]
    with ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(client.issue, docs))
        assert all(isinstance(r, Processing) for r in submitted)
        results = list(pool.map(lambda d: client.wait_issued(d["serial"]), docs))
    assert all(isinstance(r, Issued) for r in results)
    numbers = {r.invoice_no for r in results if isinstance(r, Issued)}
    assert len(numbers) == 40


# --- the platform's rules -----------------------------------------------------------------


def _bad_buyer_checksum(d):
    d["invoice_type"] = "SPECIAL"
    d["buyer"]["tax_id"] = samples.VALID_BUYER_USCC[:-1] + "A"


def _special_without_buyer_id(d):
    d["invoice_type"] = "SPECIAL"
    d["buyer"]["tax_id"] = None


def _rate(d):
    d["lines"] = [samples.line("Widget", "1", "100.00", "0.10")]


def _tax_code(d):
    d["lines"][0]["tax_code"] = "304020100000000000"  # 18 digits


def _amount_off_by_2_cents(d):
    d["lines"][0]["net_amount"] = str(Decimal(d["lines"][0]["net_amount"]) + Decimal("0.02"))
    d["lines"][0]["gross_amount"] = str(Decimal(d["lines"][0]["gross_amount"]) + Decimal("0.02"))


def _tax_off_by_7_cents(d):
    d["lines"][0]["tax_amount"] = str(Decimal(d["lines"][0]["tax_amount"]) + Decimal("0.07"))
    d["lines"][0]["gross_amount"] = str(Decimal(d["lines"][0]["gross_amount"]) + Decimal("0.07"))


def _invoice_tax_drift(d):
    lines = []
    for i in range(22):  # 22 x 0.06 = 1.32 > 1.27, each line within its own 0.06
        ln = samples.line(f"Item {i}", "1", "100.00", "0.13", no=i + 1)
        ln["tax_amount"] = "13.06"
        ln["gross_amount"] = "113.06"
        lines.append(ln)
    d["lines"] = lines


def _gross_not_net_plus_tax(d):
    d["lines"][0]["gross_amount"] = str(Decimal(d["lines"][0]["gross_amount"]) + Decimal("0.01"))


def _discount_not_following(d):
    normal = samples.line("Widget", "2", "50.00", "0.13", no=1, nature="DISCOUNTED")
    other = samples.line("Gadget", "1", "10.00", "0.13", no=2)
    disc = samples.discount(normal, "10.00", no=3)
    d["lines"] = [normal, other, disc]


def _discount_bigger_than_line(d):
    normal = samples.line("Widget", "1", "10.00", "0.13", no=1, nature="DISCOUNTED")
    d["lines"] = [
        normal,
        samples.discount(normal, "20.00", no=2),
        samples.line("Gadget", "1", "50.00", "0.13", no=3),
    ]


def _name_too_long(d):
    d["lines"][0]["name"] = "x" * 101


def _unknown_field(d):
    d["colour"] = "blue"


def _money_as_float(d):
    d["lines"][0]["net_amount"] = 165.14


def _red_submitted_directly(d):
    d["kind"] = "RED"


@pytest.mark.parametrize(
    ("mutate", "code", "path_prefix", "refinish"),
    [
        (_bad_buyer_checksum, "INVALID_BUYER_TAX_ID", "buyer.tax_id", False),
        (_special_without_buyer_id, "MISSING_BUYER_TAX_ID", "buyer.tax_id", False),
        (_rate, "INVALID_TAX_RATE", "lines[0].tax_rate", True),
        (_tax_code, "INVALID_TAX_CODE", "lines[0].tax_code", False),
        (_amount_off_by_2_cents, "LINE_AMOUNT_MISMATCH", "lines[0]", True),
        (_tax_off_by_7_cents, "LINE_TAX_MISMATCH", "lines[0].tax_amount", True),
        (_invoice_tax_drift, "INVOICE_TAX_MISMATCH", "lines", True),
        (_gross_not_net_plus_tax, "LINE_GROSS_MISMATCH", "lines[0].gross_amount", True),
        (_discount_not_following, "INVALID_DISCOUNT_LINE", "lines[", True),
        (_discount_bigger_than_line, "INVALID_DISCOUNT_LINE", "lines[1]", True),
        (_name_too_long, "FIELD_TOO_LONG", "lines[0].name", False),
        (_unknown_field, "UNKNOWN_FIELD", "colour", False),
        (_money_as_float, "INVALID_AMOUNT", "lines[0].net_amount", False),
        (_red_submitted_directly, "RED_REQUIRES_FORM", "kind", False),
    ],
)
def test_platform_rules_reject_with_code_and_path(
    sandbox, client, mutate, code, path_prefix, refinish
):
    doc = samples.invoice()
    mutate(doc)
    if refinish:
        samples.finish(doc)
    result = client.issue(doc)
    assert isinstance(result, Rejected), result
    assert any(r.code == code and (r.path or "").startswith(path_prefix) for r in result.reasons), (
        result.reasons
    )
    assert isinstance(client.query(doc["serial"]), NotFound)


def test_tolerances_accept_their_exact_limits(client):
    doc = samples.invoice(lines=[samples.line("Widget", "3", "33.33", "0.13")])
    ln = doc["lines"][0]  # 3 x 33.33 = 99.99; state 100.00 (0.01 off); tax 13.06 (0.06 off)
    ln.update(net_amount="100.00", tax_amount="13.06", gross_amount="113.06")
    samples.finish(doc)
    assert isinstance(client.issue(doc), Processing)


def test_invoice_tax_drift_within_1_27_is_accepted(client):
    doc = samples.invoice()
    _invoice_tax_drift(doc)
    doc["lines"] = doc["lines"][:21]  # 21 x 0.06 = 1.26
    samples.finish(doc)
    assert isinstance(client.issue(doc), Processing)


def test_valid_discount_and_special_invoice_are_accepted(client):
    normal = samples.line("Widget", "2", "50.00", "0.13", no=1, nature="DISCOUNTED")
    doc = samples.invoice(
        invoice_type="SPECIAL", lines=[normal, samples.discount(normal, "10.00", no=2)]
    )
    assert isinstance(client.issue(doc), Processing)
    assert isinstance(client.wait_issued(doc["serial"]), Issued)


# --- signing ------------------------------------------------------------------------------


def _raw_post(sandbox, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{sandbox.url}/v1/invoices",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_unknown_key_and_wrong_secret_need_a_human(sandbox):
    with sandbox.client(app_key="someone-else") as c:
        result = c.issue(samples.invoice())
        assert isinstance(result, NeedsHuman) and result.reason.code == "UNKNOWN_APP_KEY"
    with sandbox.client(app_secret="wrong-secret") as c:
        result = c.issue(samples.invoice())
        assert isinstance(result, NeedsHuman) and result.reason.code == "BAD_SIGNATURE"


def test_clock_skew_nonce_reuse_and_short_nonce_are_refused(sandbox):
    settings = sandbox.settings()
    body = b"{}"

    def headers(**kw):
        return signing.auth_headers(
            settings.app_key, settings.app_secret, "POST", "/v1/invoices", body, **kw
        )

    skewed = _raw_post(sandbox, body, headers(now=time.time() - 301))
    assert skewed.status_code == 401 and skewed.json()["code"] == "TIMESTAMP_SKEW"
    short = _raw_post(sandbox, body, headers(nonce="x" * 15))
    assert short.status_code == 401 and short.json()["code"] == "INVALID_NONCE"
    once = headers()
    assert _raw_post(sandbox, body, once).status_code == 422  # signed fine; "{}" breaks rules
    replay = _raw_post(sandbox, body, once)
    assert replay.status_code == 401 and replay.json()["code"] == "NONCE_REUSED"
    tampered = headers()
    changed = _raw_post(sandbox, b'{"x":1}', tampered)
    assert changed.status_code == 401 and changed.json()["code"] == "BAD_SIGNATURE"


def test_the_scheme_matches_the_documented_vector():
    headers = signing.auth_headers(
        "k", SecretStr("s"), "POST", "/v1/invoices", b"{}", now=1700000000, nonce="0123456789abcdef"
    )
    # computed with: printf 'POST\n/v1/invoices\n1700000000\n0123456789abcdef\n<sha256("{}")>'
    #                | openssl dgst -sha256 -hmac s -binary | base64   (see docs/sandbox.md)
    assert headers["X-Signature"] == "dzyY/sn4a86IHbF2USXi3FA0eca8/OCt2XRFffCuhB4="


# --- faults and lost answers --------------------------------------------------------------


def test_lost_response_after_commit_is_resolved_by_query(sandbox, client):
    sandbox.set_faults(drop_response_after_commit_rate=1.0, drop_mode="reset")
    doc = samples.invoice()
    lost = client.issue(doc)
    assert isinstance(lost, OutcomeUnknown)
    sandbox.reset_faults()
    result = client.wait_issued(doc["serial"])
    assert isinstance(result, Issued)
    assert len(issued_serials(sandbox, doc["serial"])) == 1


def test_issue_or_resolve_handles_lost_answers_by_itself(sandbox, client):
    sandbox.set_faults(drop_response_after_commit_rate=1.0)
    doc = samples.invoice()
    result = client.issue_or_resolve(doc)  # POST answer lost; the GET is not dropped
    assert isinstance(result, (Processing, Issued))
    sandbox.reset_faults()
    assert isinstance(client.wait_issued(doc["serial"]), Issued)
    assert len(issued_serials(sandbox, doc["serial"])) == 1


def test_hung_response_after_commit_times_out_as_unknown(sandbox):
    sandbox.set_faults(drop_response_after_commit_rate=1.0, drop_mode="hang", hang_ms=3000)
    doc = samples.invoice()
    with sandbox.client(read_timeout=0.5) as c:
        assert isinstance(c.issue(doc), OutcomeUnknown)
        sandbox.reset_faults()
        assert isinstance(c.wait_issued(doc["serial"]), Issued)
    assert len(issued_serials(sandbox, doc["serial"])) == 1


def test_server_error_is_retryable_and_nothing_was_committed(sandbox, client):
    sandbox.set_faults(error_rate=1.0, error_mode="http_500")
    doc = samples.invoice()
    result = client.issue(doc)
    assert isinstance(result, Retryable) and result.reason.code == "INTERNAL_ERROR"
    sandbox.reset_faults()
    assert isinstance(client.query(doc["serial"]), NotFound)


def test_reset_before_commit_is_unknown_then_resubmitted_with_the_same_serial(sandbox, client):
    sandbox.set_faults(error_rate=1.0, error_mode="reset")
    doc = samples.invoice()
    result = client.issue_or_resolve(doc)  # the resolving query is reset too
    assert isinstance(result, OutcomeUnknown)
    sandbox.reset_faults()
    resolved = client.issue_or_resolve(doc)
    assert isinstance(resolved, Processing)
    assert isinstance(client.wait_issued(doc["serial"]), Issued)


def test_unknown_outcome_with_nothing_at_the_provider_says_resubmit(sandbox, client):
    from syncd.issuers.base import resolve_after_submit

    sandbox.set_faults(error_rate=1.0, error_mode="reset")
    doc = samples.invoice()
    submitted = client.issue(doc)
    assert isinstance(submitted, OutcomeUnknown)
    sandbox.reset_faults()
    resolved = resolve_after_submit(submitted, client.query(doc["serial"]))
    assert isinstance(resolved, Retryable) and resolved.resubmit


def test_hung_connection_before_commit_is_unknown_for_submits_retryable_for_queries(sandbox):
    sandbox.set_faults(error_rate=1.0, error_mode="hang", hang_ms=2000)
    doc = samples.invoice()
    with sandbox.client(read_timeout=0.5) as c:
        assert isinstance(c.issue(doc), OutcomeUnknown)
        queried = c.query(doc["serial"])
        assert isinstance(queried, Retryable) and not queried.resubmit
        sandbox.reset_faults()
        assert isinstance(c.query(doc["serial"]), NotFound)  # it really never committed


def test_connect_error_before_sending_is_retryable():
    port = free_port()  # nothing listens there
    from syncd.issuers.sandbox import SandboxIssuerSettings

    settings = SandboxIssuerSettings(
        base_url=f"http://127.0.0.1:{port}",
        app_key="k",
        app_secret=SecretStr("s"),
        connect_timeout=1,
    )
    with SandboxIssuer(settings) as c:
        result = c.issue(samples.invoice())
    assert isinstance(result, Retryable) and not result.resubmit


def test_rate_limit_answers_429_with_retry_after_and_waiting_honours_it(sandbox, client):
    sandbox.set_faults(rate_limit_rps=2)
    docs = [samples.invoice() for _ in range(6)]
    results = [client.issue(d) for d in docs]
    limited = [r for r in results if isinstance(r, Retryable)]
    assert limited and all(r.reason.code == "RATE_LIMITED" for r in limited)
    assert all(r.retry_after is not None and 0 < r.retry_after <= 1 for r in limited)
    for doc, result in zip(docs, results, strict=True):
        while isinstance(result, Retryable):
            time.sleep(result.retry_after or 1)
            result = client.issue(doc)
        assert isinstance(result, (Processing, Issued))


def test_session_expired_and_credit_exhausted_need_a_human(sandbox, client):
    sandbox.set_faults(session_expired=True)
    result = client.issue(samples.invoice())
    assert isinstance(result, NeedsHuman) and result.reason.code == "SESSION_EXPIRED"
    sandbox.set_faults(session_expired=False, credit_exhausted=True)
    result = client.issue(samples.invoice())
    assert isinstance(result, NeedsHuman) and result.reason.code == "CREDIT_EXHAUSTED"


def test_seal_failure_is_resubmitted_under_the_same_serial(sandbox, client):
    sandbox.set_faults(issue_failure_rate=1.0)
    doc = samples.invoice()
    client.issue(doc)
    failed = client.wait_issued(doc["serial"])
    assert isinstance(failed, Retryable) and failed.resubmit
    assert failed.reason.code == "SEAL_FAILED"
    sandbox.reset_faults()
    assert isinstance(client.issue(doc), Processing)
    assert isinstance(client.wait_issued(doc["serial"]), Issued)
    assert len(issued_serials(sandbox, doc["serial"])) == 1


def test_platform_only_rejection_stores_nothing(sandbox, client):
    sandbox.set_faults(rejection_rate=1.0)
    doc = samples.invoice()
    result = client.issue(doc)
    assert isinstance(result, Rejected)
    assert result.reasons[0].code == "BUYER_NOT_REGISTERED"
    assert result.reasons[0].path == "buyer.tax_id"
    sandbox.reset_faults()
    assert isinstance(client.query(doc["serial"]), NotFound)


def test_latency_slows_but_does_not_break(sandbox, client):
    sandbox.set_faults(latency_ms=150)
    doc = samples.invoice()
    assert isinstance(client.issue(doc), Processing)


def test_faults_are_readable_and_validated(sandbox):
    sandbox.set_faults(latency_ms=5, error_rate=0.25, rate_limit_rps=50)
    current = sandbox.control("GET", "/_sandbox/faults").json()
    assert current["latency_ms"] == 5 and current["error_rate"] == 0.25
    assert current["rate_limit_rps"] == 50 and current["session_expired"] is False
    assert current["drop_response_after_commit_rate"] == 0.0
    bad = sandbox.control("POST", "/_sandbox/faults", json={"error_rate": 2})
    assert bad.status_code == 422


def test_request_log_records_every_request_with_its_fault(sandbox, client):
    before = sandbox.requests()
    since = before[-1]["id"] if before else 0
    sandbox.set_faults(drop_response_after_commit_rate=1.0)
    doc = samples.invoice()
    client.issue(doc)
    sandbox.reset_faults()
    client.query(doc["serial"])
    logged = [r for r in sandbox.requests(since) if r["serial"] == doc["serial"]]
    assert [(r["method"], r["fault"]) for r in logged] == [("POST", "drop:reset"), ("GET", None)]
    assert logged[0]["app_key"] == "syncd-dev-key" and logged[0]["status"] == 202


# --- dialects, start options ---------------------------------------------------------------


def test_refuse_duplicates_dialect_is_resolved_by_query(tmp_path: Path):
    with running_sandbox(tmp_path / "dup.db", dialect="refuse-duplicates") as sb, sb.client() as c:
        doc = samples.invoice()
        assert isinstance(c.issue(doc), Processing)
        again = c.issue(doc)
        assert isinstance(again, Duplicate) and again.reason.code == "DUPLICATE_SERIAL"
        time.sleep(0.1)
        resolved = c.issue_or_resolve(doc)
        assert isinstance(resolved, (Processing, Issued))
        assert isinstance(c.wait_issued(doc["serial"]), Issued)
        # a lost answer followed by a refused retry: the classic loop, resolved by query
        sb.set_faults(drop_response_after_commit_rate=1.0)
        lost = samples.invoice()
        assert isinstance(c.issue(lost), OutcomeUnknown)
        sb.reset_faults()
        assert isinstance(c.issue(lost), Duplicate)
        assert isinstance(c.issue_or_resolve(lost), (Processing, Issued))
        assert isinstance(c.wait_issued(lost["serial"]), Issued)
        serials = [i["serial"] for i in sb.issued()]
        assert serials.count(doc["serial"]) == 1 and serials.count(lost["serial"]) == 1
        # a seal failure is not a duplicate: the same serial is accepted again
        sb.set_faults(issue_failure_rate=1.0)
        sealed = samples.invoice()
        c.issue(sealed)
        failed = c.wait_issued(sealed["serial"])
        assert isinstance(failed, Retryable) and failed.resubmit
        sb.reset_faults()
        assert isinstance(c.issue(sealed), Processing)
        assert isinstance(c.wait_issued(sealed["serial"]), Issued)


def test_faults_at_start_strict_mode_and_secret_file(tmp_path: Path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-private-secret-value\n")
    args = [
        "--strict",
        "--app-secret-file",
        str(secret_file),
        "--faults",
        '{"session_expired": true}',
    ]
    with running_sandbox(tmp_path / "strict.db", extra_args=args) as sb:
        assert sb.control("GET", "/_sandbox/faults").status_code == 404
        settings = sb.settings(app_secret=None, app_secret_file=str(secret_file))
        assert "a-private-secret-value" not in repr(settings)
        with SandboxIssuer(settings) as c:
            assert "a-private-secret-value" not in repr(c)
            result = c.issue(samples.invoice())
            assert isinstance(result, NeedsHuman) and result.reason.code == "SESSION_EXPIRED"
        output = sb.output()
    assert "a-private-secret-value" not in output
