"""One asyncio event loop, on its own thread, for the provider calls of document steps.

The invariant kept here: a coroutine started with `start` runs to its end on the loop
unless `stop` passes its deadline first, and nothing it does blocks the loop -- the
driver hands the loop only the provider exchange of a step (network waits), and every
database read or write stays on the worker threads and the committer. So one thread
carries every document waiting on the platform, however many, at the cost of a socket
and a parked coroutine each, while the scheduler's accounting (a document is *running*
until its outcome is committed) is exactly what it is on the worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProviderLoop:
    """An event loop thread: `start` coroutines from any thread, `call` and wait for one."""

    def __init__(self, name: str = "syncd-provider") -> None:
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        #: coroutines to start, handed over by other threads (`start`)
        self._starting: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._starting_lock = threading.Lock()
        #: the loop was woken for `_starting` and has not taken it yet
        self._wake_pending = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def start(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `make()` on the loop (from any thread); it must handle its own errors.

        Starts wait in a list; only the first of a burst wakes the loop (one write to its
        self-pipe, instead of one per document a batch of the intake hands over)."""
        with self._starting_lock:
            self._starting.append(make)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._spawn_started)

    def _spawn_started(self) -> None:
        with self._starting_lock:
            started, self._starting = self._starting, []
            self._wake_pending = False
        for make in started:
            task = self._loop.create_task(make())
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("provider call ended with an unhandled error", exc_info=task.exception())

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run `make()` on the loop and wait for its result (not from the loop's thread)."""
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def stop(self, before_close: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Cancel what still runs (the drain deadline has passed), run `before_close`
        (closing the clients), and end the loop's thread."""
        if not self._thread.is_alive():
            return

        async def wind_down() -> None:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5.0)
            if before_close is not None:
                await before_close()

        try:
            self.call(wind_down, timeout=15.0)
        except Exception:  # shutting down: log and go on
            log.warning("provider loop did not wind down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)


__all__ = ["ProviderLoop"]
