"""The sandbox's one-write HTTP protocol: same bytes, same order, fewer socket writes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn

from syncd_sandbox.http_protocol import (
    MAX_HELD_BYTES,
    OneWriteHttpToolsProtocol,
    _HoldingTransport,
)


class _Cycle:
    response_started = False
    response_complete = False


class _Protocol:
    """What `_HoldingTransport` asks of the protocol: is a response under way?"""

    def __init__(self) -> None:
        self.cycle: _Cycle | None = None

    def in_response(self) -> bool:
        return OneWriteHttpToolsProtocol.in_response(self)  # type: ignore[arg-type]


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed


def _pair() -> tuple[_HoldingTransport, _Transport, _Protocol]:
    inner, protocol = _Transport(), _Protocol()
    return _HoldingTransport(inner, protocol), inner, protocol  # type: ignore[arg-type]


def test_a_response_goes_out_as_one_write_when_it_completes() -> None:
    outer, inner, protocol = _pair()
    protocol.cycle = cycle = _Cycle()
    cycle.response_started = True
    outer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    outer.write(b"{}")
    assert inner.writes == []
    assert outer.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n{}")
    cycle.response_complete = True
    outer.flush()
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


def test_writes_outside_a_response_are_not_held() -> None:
    outer, inner, protocol = _pair()
    outer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # no request yet
    protocol.cycle = _Cycle()
    outer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # request read, response not started
    assert inner.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_held_bytes_always_precede_later_ones() -> None:
    outer, inner, protocol = _pair()
    protocol.cycle = first = _Cycle()
    first.response_started = True
    outer.write(b"head1")
    protocol.cycle = _Cycle()  # a pipelined request's cycle took over
    outer.write(b"body1")
    assert inner.writes == [b"head1body1"]


def test_close_and_abort_send_what_is_held_first() -> None:
    for end in ("close", "abort"):
        outer, inner, protocol = _pair()
        protocol.cycle = cycle = _Cycle()
        cycle.response_started = True
        outer.write(b"head")  # e.g. a deliberately dropped answer: head, then the close
        getattr(outer, end)()
        assert inner.writes == [b"head"]
        assert inner.closed


def test_nothing_is_written_to_a_closing_socket_and_big_responses_are_not_held() -> None:
    outer, inner, protocol = _pair()
    protocol.cycle = cycle = _Cycle()
    cycle.response_started = True
    outer.write(b"head")
    inner.closed = True
    outer.flush()
    assert inner.writes == []
    inner.closed = False
    outer.write(b"x" * (MAX_HELD_BYTES + 1))
    assert inner.writes == [b"x" * (MAX_HELD_BYTES + 1)]


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.timeout(30)
def test_under_uvicorn_replies_are_whole_and_in_order() -> None:
    """Keep-alive, pipelining, HEAD and a bad request through a real server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run() -> list[bytes]:
        config = uvicorn.Config(
            _app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            http=OneWriteHttpToolsProtocol,
            log_level="critical",
            date_header=False,
            server_header=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        replies = []
        for request in (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            replies.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
        server.should_exit = True
        await task
        return replies

    ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
    pipelined, bad = asyncio.run(run())
    head_close = ok.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    assert pipelined == (ok + b"hello") * 2 + head_close
    assert bad.startswith(b"HTTP/1.1 400 Bad Request\r\n")
