"""The provider connection on an asyncio event loop: keep-alive connections in a bounded pool.

Why: a provider call spends almost all its time waiting for the platform. On a thread a
waiting call holds a whole thread, so a pool of threads caps documents per second at
`threads / (calls per document * latency)` -- 128 threads at 500 ms per call is about
128 documents/s. On the event loop a waiting call is a parked coroutine and a socket, so
the in-flight limit (`pipeline.max_in_flight`), not a thread count, bounds what may wait
on the platform at once.

The wire format is `syncd.issuers.transport`'s (request head, httptools response parser,
CONNECT tunnel), and so is the promise the exactly-once rules classify failures by:
* `httpx.ConnectError` / `httpx.ConnectTimeout` only while connecting (TCP, the proxy's
  CONNECT and TLS), before a byte of the request was written;
* anything after that is a write/read/protocol error: the provider may have acted.
A connection the server closed while idle is seen at once (the loop delivers the EOF) and
replaced before reuse. A request cancelled half-way (shutdown) closes its connection:
a connection left mid-request is never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Protocol, cast

import httptools
import httpx

from syncd.issuers.proxy import Proxy
from syncd.issuers.transport import (
    CONNECT_HEAD_LIMIT,
    HEAD_ALLOWANCE,
    MAX_RESPONSE_BYTES,
    Origin,
    Reply,
    ResponseReader,
    announced_length,
    connect_request,
    ends_at_close,
    parse_connect_status,
    request_head,
    response_too_large,
)


class AsyncWire(Protocol):
    """What the async issuer client needs from its connections (tests pass a fake)."""

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply: ...

    async def aclose(self) -> None: ...


class _Wire(asyncio.Protocol):
    """One connection's bytes, fed straight into the parser of the request in flight.

    A protocol rather than asyncio's streams: the reply is parsed in `data_received` and
    the request's one future resolved there, so a request costs one future and (with a
    read timeout) one timer instead of a stream read, a future and a rescheduled timeout
    per chunk -- about 28 against 48 us of CPU per request (docs/performance.md).
    """

    def __init__(self, max_response_bytes: int) -> None:
        self._limit = max_response_bytes
        self.transport: asyncio.Transport | None = None
        #: the EOF or the end of the connection was seen: never reuse it
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._parsed: ResponseReader | None = None
        self._reply: asyncio.Future[None] | None = None
        self._received = 0
        self._read_timeout: float | None = None
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        #: the proxy's answer to CONNECT while it comes in (`handshake`)
        self._head: bytearray | None = None
        self._headed: asyncio.Future[bytes] | None = None

    async def handshake(self, data: bytes) -> bytes:
        """Write the proxy's CONNECT and return its answer's head (up to the blank line);
        OSError when the proxy hangs up first, ValueError when the head is too long."""
        assert self.transport is not None
        self._head = bytearray()
        headed: asyncio.Future[bytes] = self._loop.create_future()
        self._headed = headed
        self.transport.write(data)
        try:
            return await headed
        finally:
            self._head = self._headed = None

    def _head_received(self, data: bytes) -> None:
        assert self._head is not None and self._headed is not None
        if self._headed.done():
            self.abort()  # bytes after the answer, before any request: not ours
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= CONNECT_HEAD_LIMIT:
            return
        if end < 0 or end + 4 > CONNECT_HEAD_LIMIT:
            self._headed.set_exception(ValueError("the proxy's answer to CONNECT is too long"))
        elif end + 4 < len(self._head):
            self._headed.set_exception(ValueError("the proxy sent more than its CONNECT answer"))
        else:
            self._headed.set_result(bytes(self._head))

    # ------------------------------------------------------------------ one request

    def send(self, data: bytes) -> tuple[ResponseReader, asyncio.Future[None]]:
        """Write a request; returns its parser and the future its complete reply sets."""
        assert self.transport is not None
        if self.closed:
            raise ConnectionResetError("connection lost")
        parsed = self._parsed = ResponseReader()
        reply = self._reply = self._loop.create_future()
        self._received = 0
        self.transport.write(data)
        return parsed, reply

    @property
    def writing_paused(self) -> bool:
        return self._paused

    async def drain(self) -> None:
        """Until the kernel took what `send` wrote (flow control paused the writing)."""
        if self.closed:
            raise ConnectionResetError("connection lost")
        if self._paused:
            self._drained = self._loop.create_future()
            await self._drained

    def watch_reads(self, read_timeout: float | None) -> None:
        """Bound each wait for data by `read_timeout`, as on a blocking socket. One timer
        per request: data moves `_last_data`, and the timer re-arms itself until a wait
        really lasted the whole timeout."""
        self._read_timeout = read_timeout
        if read_timeout is not None and self._reply is not None and not self._reply.done():
            self._last_data = self._loop.time()
            self._timer = self._loop.call_at(self._last_data + read_timeout, self._check_reads)

    def _check_reads(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if timeout is None or self._reply is None or self._reply.done():
            return
        due = self._last_data + timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_reads)
            return
        self._fail(httpx.ReadTimeout("read timed out"))

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ asyncio's calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head_received(data)
            return
        parsed, reply = self._parsed, self._reply
        if parsed is None or reply is None or reply.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._received += len(data)
        self._last_data = self._loop.time() if self._timer is not None else 0.0
        limit = self._limit
        if self._received > limit + HEAD_ALLOWANCE:
            self._fail(httpx.RemoteProtocolError(response_too_large(limit)))
            return
        try:
            parsed.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            return
        if parsed.size > limit or announced_length(parsed) > limit:
            self._fail(httpx.RemoteProtocolError(response_too_large(limit)))
        elif parsed.done:
            self._end()

    def eof_received(self) -> bool:
        self.closed = True
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(exc or ConnectionResetError("connection lost"))

    def _ended(self, exc: Exception | None) -> None:
        """The server's side ended: the end of a close-delimited body, or a failure."""
        headed = self._headed
        if headed is not None and not headed.done():
            headed.set_exception(exc or ConnectionResetError("the proxy closed the connection"))
        parsed, reply = self._parsed, self._reply
        if parsed is None or reply is None or reply.done():
            return
        if exc is not None:
            self._fail(httpx.ReadError(f"{type(exc).__name__}: {exc}"))
        elif ends_at_close(parsed):
            self._end()  # a body delimited by the connection's end
        else:
            self._fail(
                httpx.RemoteProtocolError(
                    "server closed the connection before the response was complete"
                )
            )

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class AsyncKeepAliveConnection:
    """One persistent connection to one origin, one request at a time (the pool's job)."""

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
        self._wire: _Wire | None = None
        self._host_line = f"Host: {origin.host_header}\r\n"

    @property
    def reusable(self) -> bool:
        """Open, and nothing from the server pending (an idle close shows as EOF)."""
        wire = self._wire
        return not (
            wire is None or wire.closed or wire.transport is None or wire.transport.is_closing()
        )

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply:
        wire = await self._connection()
        head = request_head(method, target, self._host_line, headers, body)
        try:
            # Sent at once: a connection of ours has nothing else queued.
            parsed, replied = wire.send(head + body if body else head)
            if wire.writing_paused:  # rare: the kernel's buffer is full
                async with asyncio.timeout(self._timeout.write):
                    await wire.drain()
        except TimeoutError as exc:
            self.drop()
            raise httpx.WriteTimeout("write timed out") from exc
        except OSError as exc:
            self.drop()
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.drop()  # cancelled half-way: the connection cannot be reused
            raise
        wire.watch_reads(self._timeout.read)
        try:
            await replied
        except BaseException:
            self.drop()  # failed or cancelled half-way: never reused
            raise
        parser = parsed.parser
        reply = Reply(parser.get_status_code(), parsed.headers, b"".join(parsed.body))
        if not (parsed.done and parsed.keep_alive):
            self.drop()
        return reply

    async def _connection(self) -> _Wire:
        if self.reusable:
            assert self._wire is not None
            return self._wire
        self.drop()
        origin = self._origin
        tls = (self._ssl or ssl.create_default_context()) if origin.scheme == "https" else None
        max_bytes = self._max_response_bytes
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout.connect):
                if self._proxy is not None:
                    wire = await self._tunnel(self._proxy, max_bytes)
                    if tls is not None:
                        assert wire.transport is not None
                        secured = await loop.start_tls(
                            wire.transport, wire, tls, server_hostname=origin.host
                        )
                        assert secured is not None
                        wire.connection_made(secured)
                else:
                    _, wire = await loop.create_connection(
                        lambda: _Wire(max_bytes),
                        origin.host,
                        origin.port,
                        ssl=tls,
                        server_hostname=origin.host if tls is not None else None,
                    )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(self._where("connect timed out")) from exc
        except httpx.ConnectError:
            raise
        except OSError as exc:  # ssl.SSLError included: nothing was sent yet
            raise httpx.ConnectError(self._where(str(exc) or type(exc).__name__)) from exc
        self._wire = wire
        return wire

    def _where(self, message: str) -> str:
        if self._proxy is None:
            return message
        return f"through proxy {self._proxy.display}: {message}"

    async def _tunnel(self, proxy: Proxy, max_bytes: int) -> _Wire:
        """A CONNECT tunnel through the proxy to the origin (nothing of a request sent)."""
        loop = asyncio.get_running_loop()
        try:
            _, wire = await loop.create_connection(lambda: _Wire(max_bytes), proxy.host, proxy.port)
        except OSError as exc:
            raise httpx.ConnectError(f"proxy {proxy.display} unreachable: {exc}") from exc
        authority, connect = connect_request(self._origin, proxy)
        try:
            status = parse_connect_status(await wire.handshake(connect))
        except (OSError, ValueError) as exc:
            wire.abort()
            raise httpx.ConnectError(
                f"proxy {proxy.display} failed CONNECT {authority}: {exc or type(exc).__name__}"
            ) from exc
        if not 200 <= status[0] < 300:
            wire.abort()
            raise httpx.ConnectError(
                f"proxy {proxy.display} refused CONNECT {authority}: {status[0]} {status[1]}"
            )
        return wire

    def drop(self) -> None:
        if self._wire is not None:
            self._wire.abort()
        self._wire = None


class AsyncConnectionPool:
    """Up to `max_connections` requests at once, each on a kept-alive connection.

    A request waits at most `pool_timeout` for a free slot (`httpx.PoolTimeout`: nothing
    was sent). At most `max_keepalive` idle connections are kept; the most recently used
    is reused first, so a quiet period lets the others time out at the server.
    """

    def __init__(
        self,
        origin: Origin,
        timeout: httpx.Timeout,
        *,
        max_connections: int,
        max_keepalive: int,
        verify: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        proxy: Proxy | None = None,
    ) -> None:
        self._origin = origin
        self._timeout = timeout
        self._verify = verify
        self._max_response_bytes = max_response_bytes
        self._proxy = proxy
        self._max_keepalive = max_keepalive
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[AsyncKeepAliveConnection] = []
        self._busy: set[AsyncKeepAliveConnection] = set()

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._timeout.pool):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no free connection slot within pool_timeout") from exc
        else:
            await self._slots.acquire()
        try:
            connection = self._checkout()
            try:
                return await connection.request(method, target, headers, body)
            finally:
                self._checkin(connection)
        finally:
            self._slots.release()

    def _checkout(self) -> AsyncKeepAliveConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                self._busy.add(connection)
                return connection
            connection.drop()
        connection = AsyncKeepAliveConnection(
            self._origin,
            self._timeout,
            verify=self._verify,
            max_response_bytes=self._max_response_bytes,
            proxy=self._proxy,
        )
        self._busy.add(connection)
        return connection

    def _checkin(self, connection: AsyncKeepAliveConnection) -> None:
        self._busy.discard(connection)
        if connection.reusable and len(self._idle) < self._max_keepalive:
            self._idle.append(connection)
        else:
            connection.drop()

    async def aclose(self) -> None:
        for connection in (*self._idle, *self._busy):
            connection.drop()
        self._idle.clear()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports close


__all__ = ["AsyncConnectionPool", "AsyncKeepAliveConnection", "AsyncWire"]
