"""The issuer taxonomy: response classification, transport errors, signing, settings.

Uses plain fakes of the wire (`MockWire` for the sync client, httpx.MockTransport for the
async one); the real sandbox process is exercised in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from syncd.issuers import registry, signing
from syncd.issuers.base import (
    Duplicate,
    Issued,
    Issuer,
    NeedsHuman,
    NotFound,
    OutcomeUnknown,
    Processing,
    Reason,
    Rejected,
    Retryable,
    resolve_after_submit,
)
from syncd.issuers.sandbox import (
    SandboxIssuer,
    SandboxIssuerSettings,
    classify_exception,
    classify_response,
)
from syncd.issuers.transport import Reply
from syncd_sandbox import auth

SETTINGS = SandboxIssuerSettings(
    base_url="http://sandbox.test",
    app_key="key",
    app_secret=SecretStr("top-secret-value"),
    allow_insecure_http=True,  # a fake wire: nothing leaves the process
)


class MockWire:
    """A fake `syncd.issuers.transport.Wire` handing each request to `handler` as an
    httpx.Request (what the sandbox's own auth check reads) and its answer back."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.closed = False

    def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply:
        response = self.handler(
            httpx.Request(
                method, "http://sandbox.test" + target, headers=list(headers), content=body
            )
        )
        response.read()
        return Reply(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    def close(self) -> None:
        self.closed = True


def classify(op, status, body, headers=None):
    return classify_response(op, "S1", status, headers or {}, json.dumps(body).encode())


def test_views_map_to_results():
    assert isinstance(classify("issue", 202, {"status": "PROCESSING"}), Processing)
    issued = classify(
        "query",
        200,
        {
            "status": "ISSUED",
            "invoice_no": "1" * 20,
            "kind": "BLUE",
            "issued_at": "t",
            "check_code": "c",
            "totals": {"net_amount": "1.00", "tax_amount": "0.13", "gross_amount": "1.13"},
        },
    )
    assert isinstance(issued, Issued) and issued.totals is not None
    red = classify(
        "query_reversal",
        200,
        {
            "status": "ISSUED",
            "red_invoice_no": "2" * 20,
            "original_invoice_no": "1" * 20,
            "issued_at": "t",
        },
    )
    assert isinstance(red, Issued) and red.kind == "RED" and red.invoice_no == "2" * 20
    pending = classify("reverse", 202, {"status": "PENDING_CONFIRMATION"})
    assert isinstance(pending, Processing) and pending.awaiting_confirmation
    sealed = classify("query", 200, {"status": "FAILED", "failure_code": "SEAL_FAILED"})
    assert isinstance(sealed, Retryable) and sealed.resubmit
    refused = classify(
        "query_reversal", 200, {"status": "FAILED", "failure_code": "BUYER_REJECTED"}
    )
    assert isinstance(refused, Rejected)


def test_errors_map_to_results():
    rejected = classify(
        "issue",
        422,
        {
            "code": "VALIDATION_FAILED",
            "errors": [{"code": "INVALID_TAX_RATE", "path": "lines[0].tax_rate", "message": "no"}],
        },
    )
    assert isinstance(rejected, Rejected)
    assert rejected.reasons == (Reason("INVALID_TAX_RATE", "no", "lines[0].tax_rate"),)
    assert isinstance(classify("issue", 409, {"code": "DUPLICATE_SERIAL"}), Duplicate)
    assert isinstance(classify("issue", 409, {"code": "SERIAL_CONFLICT"}), NeedsHuman)
    assert isinstance(classify("reverse", 409, {"code": "ALREADY_REVERSED"}), Rejected)
    for code in ("SESSION_EXPIRED", "CREDIT_EXHAUSTED"):
        assert isinstance(classify("issue", 403, {"code": code}), NeedsHuman)
    assert isinstance(classify("issue", 401, {"code": "BAD_SIGNATURE"}), NeedsHuman)
    assert isinstance(classify("issue", 401, {"code": "NONCE_REUSED"}), Retryable)
    assert isinstance(classify("query", 404, {"code": "NOT_FOUND"}), NotFound)
    assert isinstance(classify("issue", 404, {"code": "NOT_FOUND"}), NeedsHuman)
    assert isinstance(classify("issue", 500, {"code": "INTERNAL_ERROR"}), Retryable)
    assert isinstance(classify("issue", 504, {}), OutcomeUnknown)
    assert isinstance(classify("query", 504, {}), Retryable)


def test_retry_after_comes_from_the_header_or_the_body():
    limited = classify("issue", 429, {"code": "RATE_LIMITED"}, {"retry-after": "2"})
    assert isinstance(limited, Retryable) and limited.retry_after == 2.0
    hinted = classify("issue", 429, {"code": "RATE_LIMITED", "retry_after": 0.25})
    assert isinstance(hinted, Retryable) and hinted.retry_after == 0.25
    dated = classify("issue", 503, {}, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert isinstance(dated, Retryable) and dated.retry_after == 0.0
    # only the 429 is the platform metering us (it does not use up the document's attempts)
    assert limited.throttled and hinted.throttled and not dated.throttled


def test_garbled_answer_to_a_submit_is_unknown():
    result = classify_response("issue", "S1", 200, {}, b"<html>proxy</html>")
    assert isinstance(result, OutcomeUnknown)
    assert isinstance(classify_response("query", "S1", 200, {}, b"nope"), Retryable)


@pytest.mark.parametrize(
    ("exc", "op", "expected"),
    [
        (httpx.ConnectError("refused"), "issue", Retryable),
        (httpx.ConnectTimeout("slow"), "issue", Retryable),
        (httpx.PoolTimeout("busy"), "reverse", Retryable),
        (httpx.ReadTimeout("late"), "issue", OutcomeUnknown),
        (httpx.RemoteProtocolError("reset"), "reverse", OutcomeUnknown),
        (httpx.ReadError("reset"), "issue", OutcomeUnknown),
        (httpx.WriteTimeout("half"), "issue", OutcomeUnknown),
        (httpx.ReadTimeout("late"), "query", Retryable),
        (httpx.UnsupportedProtocol("ftp"), "issue", NeedsHuman),
    ],
)
def test_transport_errors(exc, op, expected):
    assert isinstance(classify_exception(op, "S1", exc), expected)


def test_resolution_of_lost_answers():
    unknown = OutcomeUnknown("S1", Reason("READTIMEOUT", "late"))
    dup = Duplicate("S1", Reason("DUPLICATE_SERIAL", "again"))
    issued = Issued("S1", "1" * 20, "t", None, "BLUE", None)
    assert resolve_after_submit(unknown, issued) is issued
    assert resolve_after_submit(dup, issued) is issued
    again = resolve_after_submit(unknown, NotFound("S1"))
    assert isinstance(again, Retryable) and again.resubmit
    assert isinstance(resolve_after_submit(dup, NotFound("S1")), OutcomeUnknown)
    still = resolve_after_submit(unknown, Retryable("S1", Reason("INTERNAL_ERROR", "")))
    assert isinstance(still, OutcomeUnknown)


def test_client_signs_what_it_sends_and_the_platform_agrees():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        verdict = auth.check_request(
            request.headers,
            request.method,
            request.url.raw_path.decode(),
            request.content,
            {"key": "top-secret-value"},
            now=float(request.headers["x-timestamp"]),
        )
        assert verdict == ("key", request.headers["x-nonce"])
        return httpx.Response(202, json={"serial": "SERIAL0001", "status": "PROCESSING"})

    wire = MockWire(handler)
    with SandboxIssuer(SETTINGS, wire=wire) as client:
        assert isinstance(client.issue({"serial": "SERIAL0001"}), Processing)
        assert isinstance(client.issue(b'{"serial": "SERIAL0001"}'), Processing)
        assert isinstance(client.query("SERIAL0001"), Processing)
    assert wire.closed
    assert seen[0].headers["x-nonce"] != seen[1].headers["x-nonce"]
    assert seen[1].content == b'{"serial": "SERIAL0001"}'  # frozen bytes go out unchanged
    assert seen[1].headers["content-type"] == "application/json"
    assert (seen[2].method, seen[2].url.path, seen[2].content) == (
        "GET",
        "/v1/invoices/SERIAL0001",
        b"",
    )


def test_client_reads_retry_after_and_turns_transport_errors_into_results():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            raise httpx.ReadTimeout("late")
        return httpx.Response(
            429, headers={"Retry-After": "7"}, json={"code": "RATE_LIMITED", "message": "slow down"}
        )

    with SandboxIssuer(SETTINGS, wire=MockWire(handler)) as client:
        limited = client.issue({"serial": "SERIAL0001"})
        assert isinstance(limited, Retryable) and limited.retry_after == 7.0
        assert isinstance(client.query("SERIAL0001"), Retryable)  # a read is safe to repeat


def test_secret_never_shows():
    text = f"{SETTINGS!r} {SETTINGS} {SETTINGS.model_dump()} {SETTINGS.model_dump_json()}"
    with SandboxIssuer(SETTINGS) as client:
        text += repr(client)
    assert "top-secret-value" not in text


def test_secret_from_file(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    settings = SandboxIssuerSettings(app_key="k", app_secret_file=path)  # type: ignore[call-arg]
    assert settings.app_secret.get_secret_value() == "from-file"
    with pytest.raises(ValidationError):
        SandboxIssuerSettings(app_key="k", app_secret="x", app_secret_file=path)
    with pytest.raises(ValidationError):
        SandboxIssuerSettings(app_key="k", app_secret_file=tmp_path / "missing")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SandboxIssuerSettings(app_key="k", app_secret="x", base_url="ftp://x")


def test_signature_matches_the_platform_side_and_the_docs_vector():
    secret = SecretStr("s")
    ours = signing.signature(
        secret, "POST", "/v1/invoices", "1700000000", "0123456789abcdef", b"{}"
    )
    theirs = auth.expected_signature(
        "s", "POST", "/v1/invoices", "1700000000", "0123456789abcdef", b"{}"
    )
    assert ours == theirs == "dzyY/sn4a86IHbF2USXi3FA0eca8/OCt2XRFffCuhB4="


def test_registry_builds_the_sandbox_client_from_raw_config():
    issuer = registry.create_issuer("sandbox", {"app_key": "k", "app_secret": "s"})
    try:
        assert isinstance(issuer, Issuer) and issuer.provider == "sandbox"
    finally:
        issuer.close()
    assert registry.settings_model("sandbox") is SandboxIssuerSettings
    with pytest.raises(registry.UnknownProviderError):
        registry.create_issuer("baiwang", {})


def test_async_client_classifies_the_same_way():
    """The event-loop client signs and classifies exactly like the threaded one."""
    import asyncio

    from syncd.issuers.sandbox import AsyncSandboxIssuer

    seen: list[tuple[str, str, dict[str, str]]] = []

    class FakeWire:
        async def request(
            self,
            method: str,
            target: str,
            headers: Sequence[tuple[str, str]],
            body: bytes | None,
        ) -> Reply:
            seen.append((method, target, dict(headers)))
            if method == "POST":
                raise httpx.ReadTimeout("late")
            view = {"status": "ISSUED", "invoice_no": "1" * 20, "kind": "BLUE", "issued_at": "t"}
            return Reply(200, {"content-type": "application/json"}, json.dumps(view).encode())

        async def aclose(self) -> None:
            pass

    async def go() -> None:
        client = AsyncSandboxIssuer(SETTINGS, wire=FakeWire())
        try:
            assert isinstance(await client.issue({"serial": "SERIAL0001"}), OutcomeUnknown)
            resolved = await client.issue_or_resolve({"serial": "SERIAL0001"})
            assert isinstance(resolved, Issued)
        finally:
            await client.aclose()

    asyncio.run(go())
    method, target, headers = seen[-1]
    assert (method, target) == ("GET", "/v1/invoices/SERIAL0001")
    assert headers["X-App-Key"] == "key"
    assert "X-Signature" in headers


def test_sandbox_command_refuses_bad_start_options(tmp_path: Path, capsys):
    from syncd.cli import main

    assert main(["sandbox", "--store", str(tmp_path / "s.db"), "--faults", "{nope"]) == 2
    assert (
        main(["sandbox", "--store", str(tmp_path / "s.db"), "--faults", '{"error_rate": 3}']) == 2
    )
    assert (
        main(
            [
                "sandbox",
                "--store",
                str(tmp_path / "s.db"),
                "--app-secret-file",
                str(tmp_path / "missing"),
            ]
        )
        == 2
    )
    assert "invalid --faults" in capsys.readouterr().err


def test_max_connections_bounds_requests_in_flight_across_threads():
    import threading

    entered = threading.Event()
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        entered.set()
        assert release.wait(5)
        return httpx.Response(202, json={"serial": "SERIAL0001", "status": "PROCESSING"})

    settings = SETTINGS.model_copy(update={"max_connections": 1, "pool_timeout": 0.2})
    with SandboxIssuer(settings, wire=MockWire(handler)) as client:
        first: list[object] = []
        worker = threading.Thread(target=lambda: first.append(client.query("SERIAL0001")))
        worker.start()
        assert entered.wait(5)
        # The only slot is taken: a second request waits pool_timeout, then is retryable
        # (it never left this process).
        busy = client.query("SERIAL0002")
        assert isinstance(busy, Retryable) and busy.reason.code == "POOLTIMEOUT"
        release.set()
        worker.join(5)
        assert isinstance(first[0], Processing)
        assert isinstance(client.query("SERIAL0003"), Processing)  # the slot came back
