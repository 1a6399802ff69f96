"""Which proxy the issuer uses (httpx's `trust_env` rules, `issuer.proxy` first), and the
CONNECT tunnel of the transport against the tiny test proxy and a local HTTP server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from syncd.issuers.aio_transport import AsyncKeepAliveConnection
from syncd.issuers.base import NotFound, Retryable
from syncd.issuers.proxy import Proxy, bypassed, environment_proxy, resolve_proxy
from syncd.issuers.sandbox import SandboxIssuer, SandboxIssuerSettings
from syncd.issuers.transport import KeepAliveConnection, Origin
from tests.connect_proxy import ConnectProxy


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "expected"),
    [
        ("api.example.com", 443, "*", True),
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("api.example.com", 443, "*.example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("API.Example.COM", 443, "api.example.com", True),
        ("api.example.com", 443, "other.org, api.example.com", True),
        ("api.example.com", 443, "api.example.com:8443", False),
        ("api.example.com", 8443, "api.example.com:8443", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("10.1.2.3", 443, ".2.3", False),
        ("10.1.2.3", 443, "192.168.0.0/16", False),
        ("::1", 443, "::1", True),
        ("::1", 443, "[::1]:443", True),
        ("api.example.com", 443, "", False),
        ("api.example.com", 443, None, False),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str | None, expected: bool) -> None:
    assert bypassed(host, port, no_proxy) is expected


def test_environment_picks_the_variable_of_the_scheme_lower_case_first() -> None:
    env = {
        "HTTPS_PROXY": "http://upper:3128",
        "https_proxy": "http://lower:3128",
        "HTTP_PROXY": "http://plain:3128",
        "ALL_PROXY": "http://all:3128",
    }
    assert environment_proxy("https", "h", 443, env) == ("https_proxy", "http://lower:3128")
    assert environment_proxy("http", "h", 80, env) == ("HTTP_PROXY", "http://plain:3128")
    assert environment_proxy("https", "h", 443, {"ALL_PROXY": "http://all:3128"}) == (
        "ALL_PROXY",
        "http://all:3128",
    )
    assert environment_proxy("https", "h", 443, {"HTTP_PROXY": "http://plain:3128"}) is None
    assert environment_proxy("https", "h", 443, {**env, "NO_PROXY": "h"}) is None
    assert environment_proxy("https", "h", 443, {"HTTPS_PROXY": "  "}) is None


def test_explicit_proxy_wins_over_the_environment_and_no_proxy() -> None:
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "*"}
    proxy = resolve_proxy("http://cfg:2", "https", "h", 443, env)
    assert proxy is not None and (proxy.host, proxy.port) == ("cfg", 2)
    assert resolve_proxy(None, "https", "h", 443, env) is None
    assert resolve_proxy(None, "https", "h", 443, {}) is None


def test_credentials_become_basic_auth_and_never_show() -> None:
    proxy = Proxy.parse("http://us%40er:p%3Ass-word@proxy.corp")
    assert (proxy.host, proxy.port) == ("proxy.corp", 80)
    assert proxy.authorization == "Basic dXNAZXI6cDpzcy13b3Jk"  # us@er:p:ss-word
    assert proxy.display == "http://***@proxy.corp"
    assert "word" not in repr(proxy)
    assert Proxy.parse("http://proxy:3128").authorization is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://u:secret-1@proxy:443", "need http://"),
        ("socks5://u:secret-1@proxy:1080", "need http://"),
        ("http://u:secret-1@proxy:99999", "port"),
        ("http://u:secret-1@proxy:3128/path", "no path"),
        ("proxy:3128", "need http://"),
    ],
)
def test_unusable_proxy_urls_name_their_source_without_the_password(url: str, message: str):
    with pytest.raises(ValueError, match=message) as exc:
        resolve_proxy(None, "https", "h", 443, {"HTTPS_PROXY": url})
    assert str(exc.value).startswith("HTTPS_PROXY: proxy ") and "secret-1" not in str(exc.value)
    with pytest.raises(ValueError, match=r"^issuer\.proxy: "):
        resolve_proxy(url, "https", "h", 443, {})


def test_issuer_settings_check_the_proxy() -> None:
    with pytest.raises(ValidationError, match="need http://") as exc:
        SandboxIssuerSettings(
            base_url="http://127.0.0.1:1", app_key="k", app_secret=SecretStr("s"),
            proxy="ftp://u:pw-77@p:21",
        )  # fmt: skip
    assert "pw-77" not in str(exc.value)


# --------------------------------------------------------------------------- the tunnel


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []  # noqa: RUF012 - shared on purpose: the server's request log

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b'{"code":"NOT_FOUND","message":"no such serial"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def _settings(port: int, proxy: str | None = None) -> SandboxIssuerSettings:
    return SandboxIssuerSettings(
        base_url=f"http://127.0.0.1:{port}", app_key="k", app_secret=SecretStr("s3cret-value"),
        connect_timeout=2, read_timeout=2, proxy=proxy,
    )  # fmt: skip


def test_calls_reuse_one_tunnel_per_connection(server: int) -> None:
    with ConnectProxy() as proxy:
        with SandboxIssuer(_settings(server, proxy.url()), environ={}) as client:
            assert isinstance(client.query("S-1"), NotFound)
            assert isinstance(client.query("S-2"), NotFound)
        assert [t.target for t in proxy.tunnels] == [f"127.0.0.1:{server}"]
    assert Handler.seen[-2:] == ["/v1/invoices/S-1", "/v1/invoices/S-2"]


def test_the_event_loop_client_reuses_its_tunnel_too(server: int) -> None:
    async def go(client: SandboxIssuer) -> list[object]:
        aio = client.aio()
        try:
            return [await aio.query("S-4"), await aio.query("S-5")]
        finally:
            await aio.aclose()

    with ConnectProxy() as proxy:
        with SandboxIssuer(_settings(server, proxy.url()), environ={}) as client:
            results = asyncio.run(go(client))
        assert all(isinstance(r, NotFound) for r in results)
        assert [t.target for t in proxy.tunnels] == [f"127.0.0.1:{server}"]
    assert Handler.seen[-2:] == ["/v1/invoices/S-4", "/v1/invoices/S-5"]


def test_a_proxy_that_cannot_reach_the_platform_is_a_connect_error(server: int) -> None:
    dead = server + 1 if server < 65535 else server - 1
    with ConnectProxy() as proxy:
        wire = KeepAliveConnection(
            Origin.parse(f"http://127.0.0.1:{dead}"),
            httpx.Timeout(2.0),
            proxy=Proxy.parse(proxy.url()),
        )
        with pytest.raises(httpx.ConnectError, match=r"refused CONNECT 127\.0\.0\.1:\d+: 502"):
            wire.request("GET", "/x", [], None)
    with SandboxIssuer(_settings(dead, f"http://u:pw-x1@127.0.0.1:{proxy.port}"), environ={}) as c:
        result = c.query("S-3")  # the proxy is gone now too
    assert isinstance(result, Retryable) and "pw-x1" not in result.reason.message
    assert f"proxy http://***@127.0.0.1:{proxy.port} unreachable" in result.reason.message


def test_the_event_loop_client_names_a_refused_tunnel_as_a_connect_error(server: int) -> None:
    dead = server + 1 if server < 65535 else server - 1
    with ConnectProxy() as proxy:
        wire = AsyncKeepAliveConnection(
            Origin.parse(f"http://127.0.0.1:{dead}"),
            httpx.Timeout(2.0),
            proxy=Proxy.parse(proxy.url()),
        )
        with pytest.raises(httpx.ConnectError, match=r"refused CONNECT 127\.0\.0\.1:\d+: 502"):
            asyncio.run(wire.request("GET", "/x", [], None))
        assert not wire.reusable
