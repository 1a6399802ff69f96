"""The issuer's TLS settings end to end against a local HTTPS server with a private CA
that requires a client certificate: `issuer.ca_file`, `client_cert_file`,
`client_key_file` reach the connection, and each missing piece fails the call."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from syncd.issuers.base import NotFound, Retryable
from syncd.issuers.sandbox import SandboxIssuer, SandboxIssuerSettings
from tests.connect_proxy import ConnectProxy

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=syncd test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=d)  # fmt: skip
    return d


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"code":"NOT_FOUND","message":"no such serial"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(pki: Path) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def issuer(url: str, **tls: Path) -> SandboxIssuer:
    settings = SandboxIssuerSettings(
        base_url=url,
        app_key="k",
        app_secret=SecretStr("s3cret-value"),
        connect_timeout=2,
        read_timeout=2,
        **tls,  # type: ignore[arg-type]
    )
    return SandboxIssuer(settings)


def test_private_ca_and_client_certificate(server: str, pki: Path) -> None:
    with issuer(
        server,
        ca_file=pki / "ca.pem",
        client_cert_file=pki / "client.pem",
        client_key_file=pki / "client.key",
    ) as client:
        assert isinstance(client.query("S-1"), NotFound)


def test_without_the_private_ca_the_server_is_not_trusted(server: str, pki: Path) -> None:
    with issuer(
        server, client_cert_file=pki / "client.pem", client_key_file=pki / "client.key"
    ) as client:
        result = client.query("S-1")
    assert isinstance(result, Retryable)  # failed while connecting: nothing was sent
    assert "CERTIFICATE_VERIFY_FAILED" in result.reason.message


def test_without_a_client_certificate_the_server_refuses(server: str, pki: Path) -> None:
    with issuer(server, ca_file=pki / "ca.pem") as client:
        result = client.query("S-1")
    assert not isinstance(result, NotFound)


def test_a_bad_client_key_fails_when_the_client_is_made(pki: Path) -> None:
    with pytest.raises(ssl.SSLError):
        issuer(
            "https://127.0.0.1:1",
            ca_file=pki / "ca.pem",
            client_cert_file=pki / "client.pem",
            client_key_file=pki / "server.key",  # does not match the certificate
        )


# --------------------------------------------------------------------------- event loop


def _query_on_loop(client: SandboxIssuer, serial: str) -> object:
    async def go() -> object:
        aio = client.aio()
        try:
            return await aio.query(serial)
        finally:
            await aio.aclose()

    return asyncio.run(go())


def test_the_event_loop_client_uses_the_same_tls_settings(server: str, pki: Path) -> None:
    """`pipeline.provider_calls: event_loop`: the same private CA and client certificate."""
    with issuer(
        server,
        ca_file=pki / "ca.pem",
        client_cert_file=pki / "client.pem",
        client_key_file=pki / "client.key",
    ) as client:
        assert isinstance(_query_on_loop(client, "S-1"), NotFound)
    with issuer(
        server, client_cert_file=pki / "client.pem", client_key_file=pki / "client.key"
    ) as client:
        result = _query_on_loop(client, "S-1")
    assert isinstance(result, Retryable)  # failed while connecting: nothing was sent
    assert "CERTIFICATE_VERIFY_FAILED" in result.reason.message


def test_tls_through_a_connect_tunnel_on_both_clients(server: str, pki: Path) -> None:
    """The proxy sees only the tunnel's target; TLS runs end to end inside it, on the
    threads' client and on the event loop's."""
    with ConnectProxy() as proxy:
        with issuer(
            server,
            ca_file=pki / "ca.pem",
            client_cert_file=pki / "client.pem",
            client_key_file=pki / "client.key",
            proxy=proxy.url(),  # type: ignore[arg-type]
        ) as client:
            assert isinstance(client.query("S-1"), NotFound)
            assert isinstance(_query_on_loop(client, "S-2"), NotFound)
        port = server.rsplit(":", 1)[1]
        assert [t.target for t in proxy.tunnels] == [f"127.0.0.1:{port}"] * 2
