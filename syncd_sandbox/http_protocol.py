"""uvicorn's httptools protocol, writing each reply to the socket once instead of twice.

uvicorn writes a response's head (`http.response.start`) and its body
(`http.response.body`) with one `transport.write` each, and uvloop sends every
write at once: two `send()` system calls per reply, two TCP segments on the
loopback, two wake-ups of the client. In the sandbox benchmark those two
writes were the largest single cost of the sandbox (~20 % of its CPU), and the
second one buys nothing: the body always follows at once.

`OneWriteHttpToolsProtocol` hands uvicorn a transport that *holds* what is
written while a response is between its start and its end, and passes it on as
one write when the response completes (or the connection is closed, or
anything else is written). The bytes on the wire and their order are exactly
uvicorn's; only their grouping into system calls changes. Nothing is held
outside a response (a `100 Continue`, uvicorn's own 400 replies go out at
once), and a started response whose app then fails still gets its head out
before the close, as before (the sandbox's "lost answer" faults rely on that).

It also bounds how long a connection may take to deliver a request: a client that opens
a connection and sends nothing, or dribbles its head or body, is closed after
`request_timeout` seconds (uvicorn's own keep-alive timeout only runs between a reply
and the next request's first byte). The clock runs from the connection's start or the
previous reply, and stops while a received request is being answered.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A response larger than this is passed on as it comes (the sandbox never sends one;
# this only bounds what a streamed reply could keep back).
MAX_HELD_BYTES: Final = 256 * 1024
# A reply is a head and one body write; a third write inside one response means the body
# is streamed in pieces (a slowed-down file download): from then on pieces go out as
# they come, so the client sees the download progress.
HELD_WRITES: Final = 2


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` whose responses reach the socket in one write each, and whose
    connections must deliver each request within `request_timeout` seconds."""

    #: seconds a connection may take to deliver one whole request (None: unbounded)
    request_timeout: float | None = 15.0

    _request_timer: asyncio.TimerHandle | None = None
    #: requests received in full and not yet answered (more than one when pipelined)
    _unanswered = 0

    @classmethod
    def with_request_timeout(cls, seconds: float | None) -> type[OneWriteHttpToolsProtocol]:
        """This protocol with another `request_timeout` (uvicorn takes a class)."""
        return type(cls.__name__, (cls,), {"request_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HoldingTransport(transport, self))
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_timer()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._unanswered += 1
        self._disarm_request_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        transport = self.transport
        if isinstance(transport, _HoldingTransport):
            transport.flush()
        self._unanswered = max(0, self._unanswered - 1)
        super().on_response_complete()
        if self._unanswered == 0:
            self._arm_request_timer()

    def _arm_request_timer(self) -> None:
        self._disarm_request_timer()
        if self.request_timeout is not None:
            self._request_timer = self.loop.call_later(self.request_timeout, self._request_late)

    def _disarm_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_late(self) -> None:
        self._request_timer = None
        if self._unanswered == 0 and not self.transport.is_closing():
            self.transport.close()

    def in_response(self) -> bool:
        """True between a response's start and its end (uvicorn's per-request cycle)."""
        cycle = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete


class _HoldingTransport(asyncio.Transport):
    """Passes everything to `transport`, keeping back writes made inside a response.

    Held bytes always go out before anything written later, so the byte stream
    is unchanged. They go out when the response completes (`flush`, called by
    the protocol), with the next write outside a response, and before the
    transport is closed, aborted or handed on.
    """

    def __init__(self, transport: asyncio.Transport, protocol: OneWriteHttpToolsProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] = []
        self._held_size = 0

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if (
            self._protocol.in_response()
            and len(self._held) < HELD_WRITES
            and self._held_size + len(data) <= MAX_HELD_BYTES
        ):
            self._held.append(bytes(data))
            self._held_size += len(data)
            return
        if self._held:
            self._held.append(bytes(data))
            data = b"".join(self._held)
            self._held.clear()
            self._held_size = 0
        self._transport.write(data)

    def flush(self) -> None:
        """Pass on what is held, as one write (dropped if the socket is already closing:
        a write to it would not reach the peer either)."""
        if not self._held:
            return
        data = b"".join(self._held)
        self._held.clear()
        self._held_size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.flush()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._held_size + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
