"""A tiny HTTP CONNECT proxy (and a TLS front) on 127.0.0.1 for the issuer's proxy tests.

`ConnectProxy` answers `CONNECT host:port` by opening a TCP connection there and relaying
bytes both ways; it records every tunnel it was asked for (target and the credentials
given) so a test can prove the traffic went through it, and it can require Basic
credentials (answering 407 otherwise). Anything but CONNECT gets 405: syncd never sends
forwarding requests to a proxy.

`TlsFront` terminates TLS with a given certificate and relays the plain bytes to a local
port: it puts an https:// address in front of the plain-HTTP sandbox.

Both run an asyncio loop on a daemon thread; `start()` returns once they listen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tunnel:
    target: str  # host:port of the CONNECT request
    credentials: str | None  # "user:password" from Proxy-Authorization, decoded
    status: int  # what the proxy answered


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


class _LoopThread:
    """An asyncio loop on its own daemon thread serving one listener."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def _listen(self, handler, ssl_context: ssl.SSLContext | None = None) -> None:  # type: ignore[no-untyped-def]
        self._thread.start()

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class ConnectProxy:
    """`http://[user:password@]127.0.0.1:port`: CONNECT only."""

    credentials: str | None = None  # "user:password" required, or None for an open proxy
    tunnels: list[Tunnel] = field(default_factory=list)
    _runner: _LoopThread = field(default_factory=_LoopThread)

    @property
    def port(self) -> int:
        return self._runner.port

    def url(self, userinfo: str | None = None) -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    def start(self) -> ConnectProxy:
        self._runner._listen(self._handle)
        return self

    def stop(self) -> None:
        self._runner.stop()

    def __enter__(self) -> ConnectProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0]
        given = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() == "basic":
                    given = base64.b64decode(token).decode()
        if method != "CONNECT":
            await self._answer(writer, target, given, 405, "Method Not Allowed")
            return
        if self.credentials is not None and given != self.credentials:
            await self._answer(writer, target, given, 407, "Proxy Authentication Required")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            await self._answer(writer, target, given, 502, "Bad Gateway")
            return
        self.tunnels.append(Tunnel(target, given, 200))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _relay((reader, writer), upstream)

    async def _answer(
        self, writer: asyncio.StreamWriter, target: str, given: str | None, code: int, text: str
    ) -> None:
        self.tunnels.append(Tunnel(target, given, code))
        writer.write(f"HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


@dataclass
class TlsFront:
    """https://127.0.0.1:port terminating TLS and relaying to 127.0.0.1:`upstream_port`."""

    upstream_port: int
    context: ssl.SSLContext
    _runner: _LoopThread = field(default_factory=_LoopThread)

    @property
    def port(self) -> int:
        return self._runner.port

    def start(self) -> TlsFront:
        self._runner._listen(self._handle, self.context)
        return self

    def stop(self) -> None:
        self._runner.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await _relay((reader, writer), upstream)
