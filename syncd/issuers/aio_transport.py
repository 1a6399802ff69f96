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
from typing import Protocol

import httptools
import httpx

from syncd.issuers.proxy import Proxy
from syncd.issuers.transport import (
    CONNECT_HEAD_LIMIT,
    HEAD_ALLOWANCE,
    MAX_RESPONSE_BYTES,
    READ_SIZE,
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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_line = f"Host: {origin.host_header}\r\n"

    @property
    def reusable(self) -> bool:
        """Open, and nothing from the server pending (an idle close shows as EOF)."""
        reader, writer = self._reader, self._writer
        return not (reader is None or writer is None or reader.at_eof() or writer.is_closing())

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> Reply:
        reader, writer = await self._connection()
        head = request_head(method, target, self._host_line, headers, body)
        try:
            # Sent at once: a connection of ours has nothing else queued.
            writer.write(head + body if body else head)
            async with asyncio.timeout(self._timeout.write):
                await writer.drain()
        except TimeoutError as exc:
            self.drop()
            raise httpx.WriteTimeout("write timed out") from exc
        except OSError as exc:
            self.drop()
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.drop()  # cancelled half-way: the connection cannot be reused
            raise
        reply, keep_alive = await self._read_reply(reader)
        if not keep_alive:
            self.drop()
        return reply

    async def _read_reply(self, reader: asyncio.StreamReader) -> tuple[Reply, bool]:
        parsed = ResponseReader()
        parser = parsed.parser
        limit = self._max_response_bytes
        received = 0
        loop = asyncio.get_running_loop()
        read_timeout = self._timeout.read
        try:
            async with asyncio.timeout(None) as deadline:
                while not parsed.done:
                    # A read timeout bounds each wait for data, as on a blocking socket.
                    if read_timeout is not None:
                        deadline.reschedule(loop.time() + read_timeout)
                    data = await reader.read(READ_SIZE)
                    if not data:
                        if ends_at_close(parsed):
                            break  # a body delimited by the connection's end
                        raise httpx.RemoteProtocolError(
                            "server closed the connection before the response was complete"
                        )
                    received += len(data)
                    if received > limit + HEAD_ALLOWANCE:
                        raise httpx.RemoteProtocolError(response_too_large(limit))
                    parser.feed_data(data)
                    if parsed.size > limit or announced_length(parsed) > limit:
                        raise httpx.RemoteProtocolError(response_too_large(limit))
        except TimeoutError as exc:
            self.drop()
            raise httpx.ReadTimeout("read timed out") from exc
        except OSError as exc:
            self.drop()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        except httptools.HttpParserError as exc:
            self.drop()
            raise httpx.RemoteProtocolError(f"malformed response: {exc}") from exc
        except BaseException:
            self.drop()
            raise
        keep_alive = parsed.done and parsed.keep_alive
        reply = Reply(parser.get_status_code(), parsed.headers, b"".join(parsed.body))
        return reply, keep_alive

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reusable:
            assert self._reader is not None and self._writer is not None
            return self._reader, self._writer
        self.drop()
        origin = self._origin
        tls = (self._ssl or ssl.create_default_context()) if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self._timeout.connect):
                if self._proxy is not None:
                    reader, writer = await self._tunnel(self._proxy)
                    if tls is not None:
                        await writer.start_tls(tls, server_hostname=origin.host)
                else:
                    reader, writer = await asyncio.open_connection(
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
        self._reader, self._writer = reader, writer
        return reader, writer

    def _where(self, message: str) -> str:
        if self._proxy is None:
            return message
        return f"through proxy {self._proxy.display}: {message}"

    async def _tunnel(self, proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A CONNECT tunnel through the proxy to the origin (nothing of a request sent)."""
        try:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        except OSError as exc:
            raise httpx.ConnectError(f"proxy {proxy.display} unreachable: {exc}") from exc
        authority, connect = connect_request(self._origin, proxy)
        try:
            writer.write(connect)
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > CONNECT_HEAD_LIMIT:
                raise ValueError("the proxy's answer to CONNECT is too long")
            status = parse_connect_status(head)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise httpx.ConnectError(
                f"proxy {proxy.display} failed CONNECT {authority}: {exc or type(exc).__name__}"
            ) from exc
        if not 200 <= status[0] < 300:
            writer.close()
            raise httpx.ConnectError(
                f"proxy {proxy.display} refused CONNECT {authority}: {status[0]} {status[1]}"
            )
        return reader, writer

    def drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


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
