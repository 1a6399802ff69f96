"""A lean HTTP/1.1 keep-alive connection to the provider: one origin, one thread.

Why not httpx's own stack (httpcore, h11) or `http.client` under httpx's models: the issuer
makes two calls per document, and profiling the daemon put the request/response machinery
(URL parsing per request, header objects, `email.parser` for the response head) ahead of
everything else it does per invoice. Here a request is a few formatted lines, and the
response is parsed by `httptools` (the C HTTP parser uvicorn serves the sandbox with); the
measured costs per call are in docs/performance.md. httpx stays the source of the error
types, so the exactly-once rules classify failures as before.

What callers rely on -- the exactly-once rules classify by these types:
* `httpx.ConnectError` / `httpx.ConnectTimeout` only while connecting (TCP and TLS), before
  a byte of the request was written: the request certainly never reached the provider;
* anything after that is a write/read/protocol error: the provider may have acted.
A kept-alive connection the server closed while idle is noticed before reuse (a
zero-timeout poll, only after `_IDLE_CHECK_SECONDS` of idleness) and replaced, so an idle
server timeout does not turn into an "outcome unknown".

Through a proxy (`syncd.issuers.proxy`) the connection is a CONNECT tunnel, for http://
and https:// platforms alike: the TCP connection to the proxy, the CONNECT exchange and the
TLS handshake through the tunnel are all "connecting", so the rule above holds unchanged.
A forwarding proxy (`POST http://host/...` sent to the proxy) would break it: its own
502 after failing to reach the platform could not be told from the platform's answer.
Every proxy failure names the proxy with its credentials masked (`Proxy.display`).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import httptools
import httpx

from syncd.issuers.proxy import Proxy

#: Idle time after which a kept-alive connection is checked for a server-side close.
_IDLE_CHECK_SECONDS: Final = 0.5
READ_SIZE: Final = 65536
#: Default bound of a response body; the status line and headers get `HEAD_ALLOWANCE` more.
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
HEAD_ALLOWANCE: Final = 64 * 1024
#: Bound of a proxy's answer to CONNECT (status line and headers).
CONNECT_HEAD_LIMIT: Final = 16 * 1024


def client_ssl_context(
    base_url: str,
    ca_file: Path | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
) -> ssl.SSLContext | None:
    """The TLS context towards an https:// platform: the system CAs, or only `ca_file` (a
    private CA), host name checked; a client certificate for mutual TLS. None for http://.
    The one place the issuer's trust is built: the client and `check-config --live` agree."""
    if not base_url.lower().startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if client_cert_file is not None:
        context.load_cert_chain(
            str(client_cert_file), str(client_key_file) if client_key_file is not None else None
        )
    return context


def response_too_large(limit: int) -> str:
    return f"response larger than {limit} bytes (issuer.max_response_bytes): refused"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: parsed once, not per request."""

    scheme: str
    host: str
    port: int
    path: str  # the base path every request target starts with ("" for none)

    @classmethod
    def parse(cls, url: str) -> Origin:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise httpx.UnsupportedProtocol(f"unsupported URL {url!r}: need http(s)://host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return cls(parsed.scheme, parsed.host, port, parsed.raw_path.decode("ascii").rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its values joined
    content: bytes


class Wire(Protocol):
    """What the issuer client needs from a connection (tests pass a fake)."""

    def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply: ...

    def close(self) -> None: ...


class ResponseReader:
    """httptools callbacks collecting one response."""

    __slots__ = ("body", "done", "head", "headers", "keep_alive", "parser", "size")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.head = False
        self.keep_alive = False
        self.done = False
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        seen = self.headers.get(key)
        self.headers[key] = text if seen is None else f"{seen}, {text}"

    def on_headers_complete(self) -> None:
        self.head = True
        # Asked here: once the message is complete the parser has moved on to the next.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class KeepAliveConnection:
    """One persistent connection to one origin; not thread-safe (one per thread)."""

    def __init__(
        self,
        origin: Origin,
        timeout: httpx.Timeout,
        *,
        verify: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        proxy: Proxy | None = None,
    ) -> None:
        self._origin = origin
        self._proxy = proxy
        self._timeout = timeout
        self._ssl = verify
        self._max_response_bytes = max_response_bytes
        self._sock: socket.socket | None = None
        self._last_used = 0.0
        self._head_prefix = f"Host: {origin.host_header}\r\n"

    def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply:
        sock = self._connection()
        head = request_head(method, target, self._head_prefix, headers, body)
        try:
            sock.settimeout(self._timeout.write)
            sock.sendall(head + body if body else head)
        except TimeoutError as exc:
            self._drop()
            raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            # Dropped either way: a connection left mid-request must never be reused.
            self._drop()
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
        reply, keep_alive = self._read_reply(sock)
        if keep_alive:
            self._last_used = time.monotonic()
        else:
            self._drop()
        return reply

    def _read_reply(self, sock: socket.socket) -> tuple[Reply, bool]:
        reader = ResponseReader()
        parser = reader.parser
        limit = self._max_response_bytes
        received = 0
        try:
            sock.settimeout(self._timeout.read)
            while not reader.done:
                data = sock.recv(READ_SIZE)
                if not data:
                    if ends_at_close(reader):
                        break  # a body delimited by the connection's end
                    raise httpx.RemoteProtocolError(
                        "server closed the connection before the response was complete"
                    )
                received += len(data)
                if received > limit + HEAD_ALLOWANCE:
                    # Never buffered whole: a broken or hostile platform cannot exhaust memory.
                    raise httpx.RemoteProtocolError(response_too_large(limit))
                parser.feed_data(data)
                if reader.size > limit or announced_length(reader) > limit:
                    raise httpx.RemoteProtocolError(response_too_large(limit))
        except TimeoutError as exc:
            self._drop()
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            self._drop()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        except httptools.HttpParserError as exc:
            self._drop()
            raise httpx.RemoteProtocolError(f"malformed response: {exc}") from exc
        except httpx.RemoteProtocolError:
            self._drop()
            raise
        keep_alive = reader.done and reader.keep_alive
        return Reply(parser.get_status_code(), reader.headers, b"".join(reader.body)), keep_alive

    def _connection(self) -> socket.socket:
        sock = self._sock
        if sock is not None and not self._closed_by_peer(sock):
            return sock
        self._drop()
        host, port = self._origin.host, self._origin.port
        sock = self._proxied() if self._proxy is not None else _connect(host, port, self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._origin.scheme == "https":
            context = self._ssl or ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except TimeoutError as exc:
                sock.close()
                raise httpx.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
            except OSError as exc:  # ssl.SSLError included: nothing was sent yet
                sock.close()
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._sock = sock
        return sock

    def _proxied(self) -> socket.socket:
        """A CONNECT tunnel through the proxy to the origin (nothing of a request sent)."""
        proxy = self._proxy
        assert proxy is not None
        origin = self._origin
        try:
            sock = _connect(proxy.host, proxy.port, self._timeout)
        except httpx.ConnectTimeout as exc:
            raise httpx.ConnectTimeout(f"proxy {proxy.display} did not answer: {exc}") from exc
        except httpx.ConnectError as exc:
            raise httpx.ConnectError(f"proxy {proxy.display} unreachable: {exc}") from exc
        authority, connect = connect_request(origin, proxy)
        try:
            sock.settimeout(self._timeout.connect)
            sock.sendall(connect)
            status = _connect_status(sock)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(
                f"proxy {proxy.display} did not answer CONNECT {authority} in time"
            ) from exc
        except (OSError, ValueError) as exc:
            sock.close()
            raise httpx.ConnectError(
                f"proxy {proxy.display} failed CONNECT {authority}: {exc or type(exc).__name__}"
            ) from exc
        if not 200 <= status[0] < 300:
            sock.close()
            raise httpx.ConnectError(
                f"proxy {proxy.display} refused CONNECT {authority}: {status[0]} {status[1]}"
            )
        return sock

    def _closed_by_peer(self, sock: socket.socket) -> bool:
        if time.monotonic() - self._last_used < _IDLE_CHECK_SECONDS:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        # Nothing is owed to us between responses: readable means EOF (or junk) -> replace.
        return bool(readable)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def close(self) -> None:
        self._drop()


def request_head(
    method: str,
    target: str,
    host_line: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request line and headers of one request, ending with the blank line."""
    lines = [f"{method} {target} HTTP/1.1\r\n", host_line]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def connect_request(origin: Origin, proxy: Proxy) -> tuple[str, bytes]:
    """The CONNECT request opening a tunnel to `origin`: (authority, request bytes)."""
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    authority = f"{host}:{origin.port}"
    lines = [f"CONNECT {authority} HTTP/1.1\r\n", f"Host: {authority}\r\n"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
    lines.append("\r\n")
    return authority, "".join(lines).encode("latin-1")


def _connect(host: str, port: int, timeout: httpx.Timeout) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout.connect)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc


def _connect_status(sock: socket.socket) -> tuple[int, str]:
    """The proxy's answer to CONNECT: (status, reason). Read up to the blank line that ends
    its head and no further: what follows belongs to the tunnel. ValueError if malformed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        # One byte at a time: the head is short, read once per connection, and must not be
        # over-read into the tunnel.
        data = sock.recv(1)
        if not data:
            raise ValueError("the proxy closed the connection")
        head += data
        if len(head) > CONNECT_HEAD_LIMIT:
            raise ValueError("the proxy's answer to CONNECT is too long")
    return parse_connect_status(head)


def parse_connect_status(head: bytes) -> tuple[int, str]:
    """(status, reason) of a proxy's answer head to CONNECT; ValueError if malformed."""
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(code), reason.strip()


def announced_length(reader: ResponseReader) -> int:
    """The Content-Length the response announced (0 before its head or without one)."""
    value = reader.headers.get("content-length", "0") if reader.head else "0"
    try:
        return int(value.split(",")[0].strip())
    except ValueError:
        return 0


def ends_at_close(reader: ResponseReader) -> bool:
    """True when the response head is in and its body runs until the connection closes
    (neither a length nor chunked encoding): end of stream is then the end of the body."""
    headers = reader.headers
    return (
        reader.head
        and "content-length" not in headers
        and ("chunked" not in headers.get("transfer-encoding", "").lower())
    )
