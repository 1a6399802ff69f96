"""The issuer's keep-alive transport against a real local HTTP server (stdlib, threaded):
connection reuse, a server that closes idle connections, and the error types the
exactly-once rules depend on (connect errors only before a byte was sent)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from syncd.issuers import transport as transport_mod
from syncd.issuers.transport import KeepAliveTransport

TIMEOUT = httpx.Timeout(connect=1.0, read=0.5, write=1.0, pool=1.0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[tuple[str, int]]] = set()
    close_after: ClassVar[bool] = False

    def log_message(self, *_: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, *, chunked: bool = False) -> None:
        Handler.connections.add(self.client_address)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:3], body[3:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            if Handler.close_after:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        if Handler.close_after:
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.5)  # the client has given up by now: nothing to answer
            self.close_connection = True
            return
        if self.path == "/chunked":
            self._reply(200, b'{"chunked":true}', chunked=True)
            return
        self._reply(200, f'{{"path":"{self.path}","ua":"{self.headers["User-Agent"]}"}}'.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(201, body)


@pytest.fixture
def server() -> Iterator[str]:
    Handler.connections = set()
    Handler.close_after = False
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def get(t: KeepAliveTransport, url: str) -> httpx.Response:
    response = t.handle_request(httpx.Request("GET", url, headers={"User-Agent": "t"}))
    response.read()
    return response


def test_reuses_one_connection(server: str) -> None:
    t = KeepAliveTransport(TIMEOUT)
    for i in range(5):
        r = get(t, f"{server}/x{i}")
        assert r.status_code == 200
        assert r.json() == {"path": f"/x{i}", "ua": "t"}
    assert len(Handler.connections) == 1
    t.close()


def test_post_body_and_chunked_reply(server: str) -> None:
    t = KeepAliveTransport(TIMEOUT)
    r = t.handle_request(httpx.Request("POST", f"{server}/p", content=b'{"a":1}'))
    assert r.status_code == 201
    assert r.read() == b'{"a":1}'
    assert get(t, f"{server}/chunked").json() == {"chunked": True}
    assert "transfer-encoding" not in r.headers
    t.close()


def test_connection_close_from_server_opens_a_new_one(server: str) -> None:
    Handler.close_after = True
    t = KeepAliveTransport(TIMEOUT)
    assert get(t, f"{server}/a").status_code == 200
    assert get(t, f"{server}/b").status_code == 200
    assert len(Handler.connections) == 2


def test_idle_connection_closed_by_server_is_replaced_not_an_error(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server hangs up connections idle for 0.2 s (as uvicorn does after its keep-alive).
    monkeypatch.setattr(Handler, "timeout", 0.2, raising=False)
    monkeypatch.setattr(transport_mod, "_IDLE_CHECK_SECONDS", 0.1)
    t = KeepAliveTransport(TIMEOUT)
    assert get(t, f"{server}/a").status_code == 200
    time.sleep(0.6)
    assert get(t, f"{server}/b").status_code == 200
    assert len(Handler.connections) == 2


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        t = KeepAliveTransport(TIMEOUT)
        with pytest.raises(httpx.ConnectError):
            get(t, f"http://127.0.0.1:{port}/x")


def test_slow_reply_is_a_read_timeout_and_the_connection_is_dropped(server: str) -> None:
    t = KeepAliveTransport(TIMEOUT)
    with pytest.raises(httpx.ReadTimeout):
        get(t, f"{server}/slow")
    assert t._conn is None
    assert get(t, f"{server}/after").status_code == 200


def test_server_gone_after_connect_is_not_a_connect_error(server: str) -> None:
    """A request written on a live connection whose reply never comes is ambiguous: the
    provider may have acted, so it must not look like "never sent"."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def accept_and_hang_up() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()

        thread = threading.Thread(target=accept_and_hang_up, daemon=True)
        thread.start()
        t = KeepAliveTransport(TIMEOUT)
        with pytest.raises(httpx.HTTPError) as info:
            t.handle_request(httpx.Request("POST", f"http://127.0.0.1:{port}/v1/invoices",
                                           content=b"{}"))
        assert not isinstance(info.value, (httpx.ConnectError, httpx.ConnectTimeout))
        thread.join(2)


def test_other_schemes_are_refused() -> None:
    t = KeepAliveTransport(TIMEOUT)
    with pytest.raises(httpx.UnsupportedProtocol):
        t.handle_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
