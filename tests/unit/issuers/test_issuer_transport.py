"""The issuer's keep-alive connection against a real local HTTP server (stdlib, threaded):
connection reuse, chunked and close-delimited bodies, a server that closes idle
connections, and the error types the exactly-once rules depend on (connect errors only
before a byte was sent)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from syncd.issuers import transport as transport_mod
from syncd.issuers.transport import KeepAliveConnection, Origin, Reply

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
        if self.path == "/until-close":
            Handler.connections.add(self.client_address)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"until":"close"}')
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


def connect(url: str) -> KeepAliveConnection:
    return KeepAliveConnection(Origin.parse(url), TIMEOUT)


def get(t: KeepAliveConnection, target: str) -> Reply:
    return t.request("GET", target, [("User-Agent", "t")], None)


def test_reuses_one_connection(server: str) -> None:
    t = connect(server)
    for i in range(5):
        r = get(t, f"/x{i}")
        assert r.status == 200
        assert json.loads(r.content) == {"path": f"/x{i}", "ua": "t"}
        assert r.headers["content-type"] == "application/json"
    assert len(Handler.connections) == 1
    t.close()


def test_post_body_and_chunked_reply(server: str) -> None:
    t = connect(server)
    r = t.request("POST", "/p", [("Content-Type", "application/json")], b'{"a":1}')
    assert r.status == 201
    assert r.content == b'{"a":1}'
    chunked = get(t, "/chunked")
    assert json.loads(chunked.content) == {"chunked": True}
    assert len(Handler.connections) == 1  # still the same connection after a chunked body
    t.close()


def test_body_delimited_by_the_connection_closing(server: str) -> None:
    t = connect(server)
    r = get(t, "/until-close")
    assert (r.status, r.content) == (200, b'{"until":"close"}')
    assert t._sock is None  # that connection is used up
    assert get(t, "/after").status == 200


def test_base_path_and_host_header() -> None:
    origin = Origin.parse("https://platform.example:8443/api/")
    assert (origin.scheme, origin.host, origin.port, origin.path) == (
        "https",
        "platform.example",
        8443,
        "/api",
    )
    assert origin.host_header == "platform.example:8443"
    assert Origin.parse("http://127.0.0.1/").host_header == "127.0.0.1"
    assert Origin.parse("http://127.0.0.1/").path == ""


def test_connection_close_from_server_opens_a_new_one(server: str) -> None:
    Handler.close_after = True
    t = connect(server)
    assert get(t, "/a").status == 200
    assert get(t, "/b").status == 200
    assert len(Handler.connections) == 2


def test_idle_connection_closed_by_server_is_replaced_not_an_error(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server hangs up connections idle for 0.2 s (as uvicorn does after its keep-alive).
    monkeypatch.setattr(Handler, "timeout", 0.2, raising=False)
    monkeypatch.setattr(transport_mod, "_IDLE_CHECK_SECONDS", 0.1)
    t = connect(server)
    assert get(t, "/a").status == 200
    time.sleep(0.6)
    assert get(t, "/b").status == 200
    assert len(Handler.connections) == 2


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        t = connect(f"http://127.0.0.1:{port}")
        with pytest.raises(httpx.ConnectError):
            get(t, "/x")


def test_slow_reply_is_a_read_timeout_and_the_connection_is_dropped(server: str) -> None:
    t = connect(server)
    with pytest.raises(httpx.ReadTimeout):
        get(t, "/slow")
    assert t._sock is None
    assert get(t, "/after").status == 200


def _serve_once(reply: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener that reads one request, writes `reply` and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        if reply:
            conn.sendall(reply)
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # hung up without a word
        b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"cut":',  # hung up mid-body
        b"HTTP/1.1 200 OK\r\nContent-Le",  # hung up mid-head
        b"NOT HTTP AT ALL\r\n\r\n",  # garbage
    ],
)
def test_server_gone_after_connect_is_not_a_connect_error(reply: bytes) -> None:
    """A request written on a live connection whose reply never comes (whole) is ambiguous:
    the provider may have acted, so it must not look like "never sent"."""
    listener, thread = _serve_once(reply)
    with listener:
        t = connect(f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(httpx.HTTPError) as info:
            t.request("POST", "/v1/invoices", [], b"{}")
        assert not isinstance(info.value, (httpx.ConnectError, httpx.ConnectTimeout))
        assert t._sock is None
        thread.join(2)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        Origin.parse("ftp://127.0.0.1/x")


_BIG = b"x" * 5000


@pytest.mark.parametrize(
    "reply",
    [
        # announced too long (refused before the body is read)
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{}",
        # a length within the announcement but a body beyond the limit
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + _BIG,
        # chunked: no length announced at all
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + _BIG + b"\r\n0\r\n\r\n",
        # delimited by the connection's end
        b"HTTP/1.1 200 OK\r\n\r\n" + _BIG,
    ],
)
def test_response_over_the_size_limit_is_refused(reply: bytes) -> None:
    """A broken or hostile platform cannot make syncd buffer an unbounded body
    (issuer.max_response_bytes); the connection is dropped, never reused."""
    listener, thread = _serve_once(reply)
    with listener:
        origin = Origin.parse(f"http://127.0.0.1:{listener.getsockname()[1]}")
        t = KeepAliveConnection(origin, TIMEOUT, max_response_bytes=1024)
        with pytest.raises(httpx.RemoteProtocolError, match="larger than 1024 bytes"):
            t.request("GET", "/v1/invoices/x", [], None)
        assert t._sock is None
        thread.join(2)


def test_response_within_the_limit_passes(server: str) -> None:
    t = KeepAliveConnection(Origin.parse(server), TIMEOUT, max_response_bytes=1024)
    assert get(t, "/ok").status == 200
