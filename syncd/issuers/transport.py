"""A lean HTTP/1.1 keep-alive transport for `httpx.Client`, one connection, one thread.

Why not httpcore (httpx's default): profiling the daemon showed ~0.8 ms of CPU per request
inside httpcore's pool (request queue bookkeeping, a socket poll of each pooled connection,
h11 event objects) against ~0.2 ms for the standard library's `http.client` doing the same
exchange. With two provider calls per document that was most of syncd's CPU per invoice.
The issuer client keeps httpx's API (requests, responses, typed errors, MockTransport in
tests) and swaps only the transport; each calling thread owns one of these, so there is
no pool and no lock.

What callers rely on -- the exactly-once rules classify by these types:
* `httpx.ConnectError` / `httpx.ConnectTimeout` only while connecting, before a byte of the
  request was written (the request certainly never reached the provider);
* anything after that is a read/write/protocol error: the provider may have acted.
A kept-alive connection the server closed while idle is noticed before reuse (a
zero-timeout poll, only after `_IDLE_CHECK_SECONDS` of idleness) and replaced, so an idle
server timeout does not turn into an "outcome unknown".
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import time
from typing import Final

import httpx

#: Idle time after which a kept-alive connection is checked for a server-side close.
_IDLE_CHECK_SECONDS: Final = 0.5


class KeepAliveTransport(httpx.BaseTransport):
    """One persistent connection to one origin; not thread-safe (one per thread)."""

    def __init__(self, timeout: httpx.Timeout, *, verify: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._ssl = verify
        self._conn: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int] | None = None
        self._last_used = 0.0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, url.host, port)
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}",
                                            request=request)
        conn = self._connection(origin, request)
        target = url.raw_path.decode("ascii")
        body = request.read()
        try:
            conn.sock.settimeout(self._timeout.write)
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name.decode("latin-1"), value.decode("latin-1"))
            if body and "content-length" not in request.headers:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
        except TimeoutError as exc:
            self._drop()
            raise httpx.WriteTimeout(str(exc) or "write timed out", request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            # Dropped either way: a connection left mid-request must never be reused.
            self._drop()
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}", request=request) from exc
        try:
            conn.sock.settimeout(self._timeout.read)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError as exc:
            self._drop()
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except (http.client.HTTPException, OSError) as exc:
            self._drop()
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}",
                                            request=request) from exc
        if response.will_close:
            self._drop()
        self._last_used = time.monotonic()
        # http.client has already undone chunking; httpx undoes a content-encoding itself.
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()
                   if k.lower() != "transfer-encoding"]
        return httpx.Response(response.status, headers=headers, content=content,
                              request=request, extensions={"http_version": b"HTTP/1.1"})

    def _connection(
        self, origin: tuple[str, str, int], request: httpx.Request
    ) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and (self._origin != origin or self._closed_by_peer(conn)):
            self._drop()
            conn = None
        if conn is not None:
            return conn
        scheme, host, port = origin
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout.connect,
                context=self._ssl or ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout.connect)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn, self._origin = conn, origin
        return conn

    def _closed_by_peer(self, conn: http.client.HTTPConnection) -> bool:
        if conn.sock is None:
            return True
        if time.monotonic() - self._last_used < _IDLE_CHECK_SECONDS:
            return False
        try:
            readable, _, _ = select.select([conn.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        # Nothing is owed to us between responses: readable means EOF (or junk) -> replace.
        return bool(readable)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._origin = None

    def close(self) -> None:
        self._drop()
