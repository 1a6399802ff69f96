"""The event-loop connection and its pool against the same real local HTTP server as the
threaded one: reuse, chunked and close-delimited bodies, idle closes, the size limit,
the pool bound, and the error types the exactly-once rules depend on (connect errors
only before a byte was sent; a cancelled request never leaves its connection reused)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from syncd.issuers.aio_transport import AsyncConnectionPool, AsyncKeepAliveConnection
from syncd.issuers.transport import Origin, Reply
from tests.unit.issuers.test_issuer_transport import (
    TIMEOUT,
    Handler,
    _serve_once,
    server,  # noqa: F401 -- the fixture
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def connect(url: str, **kwargs: Any) -> AsyncKeepAliveConnection:
    return AsyncKeepAliveConnection(Origin.parse(url), TIMEOUT, **kwargs)


async def get(t: AsyncKeepAliveConnection | AsyncConnectionPool, target: str) -> Reply:
    return await t.request("GET", target, [("User-Agent", "t")], None)


def test_reuses_one_connection(server: str) -> None:  # noqa: F811
    async def go() -> None:
        t = connect(server)
        for i in range(5):
            r = await get(t, f"/x{i}")
            assert r.status == 200
            assert json.loads(r.content) == {"path": f"/x{i}", "ua": "t"}
        t.drop()

    run(go())
    assert len(Handler.connections) == 1


def test_post_body_chunked_and_close_delimited_replies(server: str) -> None:  # noqa: F811
    async def go() -> None:
        t = connect(server)
        r = await t.request("POST", "/p", [("Content-Type", "application/json")], b'{"a":1}')
        assert (r.status, r.content) == (201, b'{"a":1}')
        assert json.loads((await get(t, "/chunked")).content) == {"chunked": True}
        r = await get(t, "/until-close")
        assert (r.status, r.content) == (200, b'{"until":"close"}')
        assert not t.reusable  # that connection is used up
        assert (await get(t, "/after")).status == 200
        t.drop()

    run(go())


def test_idle_connection_closed_by_server_is_replaced_not_an_error(
    server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Handler, "timeout", 0.2, raising=False)

    async def go() -> None:
        t = connect(server)
        assert (await get(t, "/a")).status == 200
        await asyncio.sleep(0.6)  # the server hung up meanwhile: the loop saw the EOF
        assert not t.reusable
        assert (await get(t, "/b")).status == 200
        t.drop()

    run(go())
    assert len(Handler.connections) == 2


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        t = connect(f"http://127.0.0.1:{s.getsockname()[1]}")  # bound, not listening
        with pytest.raises(httpx.ConnectError):
            run(get(t, "/x"))


def test_slow_reply_is_a_read_timeout_and_the_connection_is_dropped(
    server: str,  # noqa: F811
) -> None:
    async def go() -> None:
        t = connect(server)
        with pytest.raises(httpx.ReadTimeout):
            await get(t, "/slow")
        assert not t.reusable
        assert (await get(t, "/after")).status == 200
        t.drop()

    run(go())


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"cut":',
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_server_gone_after_connect_is_not_a_connect_error(reply: bytes) -> None:
    listener, thread = _serve_once(reply)
    with listener:
        t = connect(f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(httpx.HTTPError) as info:
            run(t.request("POST", "/v1/invoices", [], b"{}"))
        assert not isinstance(info.value, (httpx.ConnectError, httpx.ConnectTimeout))
        assert not t.reusable
        thread.join(2)


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000,
    ],
)
def test_response_over_the_size_limit_is_refused(reply: bytes) -> None:
    listener, thread = _serve_once(reply)
    with listener:
        t = connect(f"http://127.0.0.1:{listener.getsockname()[1]}", max_response_bytes=1024)
        with pytest.raises(httpx.RemoteProtocolError, match="larger than 1024 bytes"):
            run(get(t, "/v1/invoices/x"))
        assert not t.reusable
        thread.join(2)


def test_a_cancelled_request_never_leaves_its_connection_for_reuse(
    server: str,  # noqa: F811
) -> None:
    """Shutdown cancels calls in flight: the half-used connection is closed, not pooled."""

    async def go() -> None:
        pool = AsyncConnectionPool(
            Origin.parse(server), TIMEOUT, max_connections=2, max_keepalive=2
        )
        task = asyncio.create_task(get(pool, "/slow"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._idle == [] and pool._busy == set()
        assert (await get(pool, "/after")).status == 200
        await pool.aclose()

    run(go())


def test_the_pool_bounds_requests_in_flight_and_times_out_waiting() -> None:
    """`max_connections` requests at once; one more waits at most `pool_timeout` and then
    fails as a pool timeout (nothing was sent). The server never answers, so the two
    requests holding the slots cannot end first."""
    waiting = httpx.Timeout(connect=1.0, read=60.0, write=1.0, pool=0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: connects succeed, replies never come
        origin = Origin.parse(f"http://127.0.0.1:{listener.getsockname()[1]}")

        async def go() -> None:
            pool = AsyncConnectionPool(origin, waiting, max_connections=2, max_keepalive=2)
            held = [asyncio.create_task(get(pool, "/held")) for _ in range(2)]
            await asyncio.sleep(0.1)
            started = time.monotonic()
            with pytest.raises(httpx.PoolTimeout):
                await get(pool, "/third")
            assert time.monotonic() - started >= 0.25
            assert all(not task.done() for task in held)
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            await pool.aclose()

        run(go())


def test_many_concurrent_requests_share_kept_alive_connections(
    server: str,  # noqa: F811
) -> None:
    async def go() -> None:
        pool = AsyncConnectionPool(
            Origin.parse(server), TIMEOUT, max_connections=4, max_keepalive=4
        )
        for _ in range(3):
            replies = await asyncio.gather(*(get(pool, f"/n{i}") for i in range(20)))
            assert [json.loads(r.content)["path"] for r in replies] == [f"/n{i}" for i in range(20)]
        await pool.aclose()

    run(go())
    assert len(Handler.connections) <= 4


def test_a_body_the_server_never_reads_is_a_write_timeout_and_the_connection_dropped() -> None:
    """Flow control: once the kernel's buffers are full the request waits at most the
    write timeout, then fails as a write error (after the first byte: the provider may
    have acted) and its connection is never reused."""
    short = httpx.Timeout(connect=1.0, read=5.0, write=0.3, pool=1.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # never accepted, never read
        t = AsyncKeepAliveConnection(
            Origin.parse(f"http://127.0.0.1:{listener.getsockname()[1]}"), short
        )
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            run(t.request("POST", "/v1/invoices", [], b"x" * (64 << 20)))
        assert time.monotonic() - started < 3.0
        assert not t.reusable
