"""A timed queue of steps, run on a bounded pool of worker threads.

The scheduler knows nothing of documents: it runs `step(item_id)` for integer ids, each
when it falls due. Between steps an id waits in a time-ordered heap, never in a sleeping
thread, so thousands of documents polling a slow provider cost no threads; a due id goes
to the workers through a C queue (`SimpleQueue`), which costs far less interpreter time
per step than a `ThreadPoolExecutor` and its futures.

The invariant kept here: an id is never stepped twice at once. It is *active* from
`submit` until `finish` (or `forget`, or `stop`), and while active it is either waiting
(one live heap entry) or running (handed to a worker, or to whoever the step handed its
outcome to). `submit` of an active id is a no-op, except that `expedite` may move a
*waiting* step forward; a running step is never doubled. A step that ends calls
`reschedule` (wait again) or `finish` (done); until then the id stays running.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class Scheduled(enum.Enum):
    """What `Scheduler.submit` did."""

    #: the id was not active: it is now, with its step due after the delay
    ADDED = "added"
    #: the id was waiting for a later step: that step moved forward (`expedite`)
    EXPEDITED = "expedited"
    #: nothing (already active, or the scheduler is stopping)
    UNCHANGED = "unchanged"


@dataclass(order=True, frozen=True, slots=True)
class _Entry:
    due: float
    seq: int
    item_id: int


class Scheduler:
    """Runs `step(item_id)` on `workers` threads, each step when it falls due.

    `lock` guards the schedule. It is re-entrant, so a caller that keeps per-id state
    beside the schedule may hold it around a call (e.g. `submit`) to change that state
    atomically with the schedule: a worker cannot start the id's step in between.
    """

    def __init__(self, step: Callable[[int], None], *, workers: int) -> None:
        self._step = step
        self.lock = threading.Condition(threading.RLock())
        self._work: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closed = False  # set at the drain deadline: queued steps are no longer run
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._active: set[int] = set()
        self._running: set[int] = set()
        #: id -> its live heap entry while waiting (older entries are skipped when popped)
        self._waiting: dict[int, _Entry] = {}
        self._stopping = False
        self._thread = threading.Thread(
            target=self._schedule_loop, name="syncd-scheduler", daemon=True
        )
        self._workers = [
            threading.Thread(target=self._work_loop, name=f"syncd-doc_{n}", daemon=True)
            for n in range(workers)
        ]
        self._thread.start()
        for worker in self._workers:
            worker.start()

    @property
    def active_count(self) -> int:
        with self.lock:
            return len(self._active)

    def is_active(self, item_id: int) -> bool:
        with self.lock:
            return item_id in self._active

    def is_running(self, item_id: int) -> bool:
        with self.lock:
            return item_id in self._running

    def submit(self, item_id: int, delay: float = 0.0, *, expedite: bool = False) -> Scheduled:
        """Schedule a step of `item_id` in `delay` seconds (no-op when already active).

        `expedite`: if the id is waiting for a later step, move that step forward to
        `delay` from now. A running step is never doubled.
        """
        with self.lock:
            if self._stopping:
                return Scheduled.UNCHANGED
            if item_id in self._active:
                waiting = self._waiting.get(item_id)
                if expedite and waiting is not None and waiting.due > time.monotonic() + delay:
                    self._push(item_id, delay)
                    return Scheduled.EXPEDITED
                return Scheduled.UNCHANGED
            self._active.add(item_id)
            self._push(item_id, delay)
            return Scheduled.ADDED

    def claim(self, item_id: int) -> bool:
        """Make `item_id` active and running at once: the caller runs its step on its own
        thread (no queue, no worker) and ends it with `reschedule` or `finish` as a worker
        would. False, changing nothing, when the id is already active or we are stopping."""
        with self.lock:
            if self._stopping or item_id in self._active:
                return False
            self._active.add(item_id)
            self._running.add(item_id)
            return True

    def _push(self, item_id: int, delay: float) -> None:
        if delay <= 0:
            # due now: straight to a worker, without waking the scheduler thread first (an
            # entry it still holds for this id is skipped when popped)
            self._waiting.pop(item_id, None)
            self._running.add(item_id)
            self._work.put(item_id)
            return
        entry = _Entry(time.monotonic() + delay, next(self._seq), item_id)
        self._waiting[item_id] = entry
        heapq.heappush(self._heap, entry)
        self.lock.notify()

    def reschedule(self, item_id: int, delay: float) -> None:
        """The running step of `item_id` ended: run the next one in `delay` seconds."""
        with self.lock:
            self._running.discard(item_id)
            if self._stopping:
                self._active.discard(item_id)
                if not self._running:
                    self.lock.notify_all()  # the last running step: `stop` may return
                return
            self._push(item_id, delay)

    def finish(self, item_id: int) -> None:
        """The running step of `item_id` ended and nothing more is to be done for it."""
        with self.lock:
            self._running.discard(item_id)
            self._active.discard(item_id)
            if self._stopping and not self._running:
                # `stop` waits for the last running step; nobody else waits for a finish
                # (waking the scheduler thread on every one cost ~2 % of the daemon's CPU)
                self.lock.notify_all()

    def forget(self, item_ids: set[int]) -> set[int]:
        """Drop the waiting (not running) steps of `item_ids`; returns the ids no longer
        running (those are inactive now)."""
        with self.lock:
            keep = [
                e for e in self._heap if e.item_id not in item_ids or e.item_id in self._running
            ]
            heapq.heapify(keep)
            self._heap = keep
            dropped = item_ids - self._running
            for item_id in dropped:
                self._active.discard(item_id)
                self._waiting.pop(item_id, None)
            return dropped

    def _schedule_loop(self) -> None:
        while True:
            with self.lock:
                while not self._stopping and (
                    not self._heap or self._heap[0].due > time.monotonic()
                ):
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self.lock.wait(timeout)
                if self._stopping:
                    return
                entry = heapq.heappop(self._heap)
                if self._waiting.get(entry.item_id) is not entry:
                    continue  # superseded by an expedited entry (or forgotten)
                del self._waiting[entry.item_id]
                self._running.add(entry.item_id)
            self._work.put(entry.item_id)

    def _work_loop(self) -> None:
        while True:
            item_id = self._work.get()
            if item_id is None:
                self._work.put(None)  # wake the next worker: all of them stop
                return
            if not self._closed:
                self._step(item_id)

    def stop(self, deadline: float) -> int:
        """Stop scheduling; wait until running steps end or `deadline` (monotonic) passes.

        Waiting steps are dropped, and steps still queued for a worker at the deadline are
        not started. Returns how many steps were still running at the deadline.
        """
        with self.lock:
            self._stopping = True
            self._heap.clear()
            self._waiting.clear()
            self.lock.notify_all()
            while self._running and time.monotonic() < deadline:
                self.lock.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            still = len(self._running)
        self._closed = True  # steps still queued are not started
        self._work.put(None)
        return still

    def drained(self) -> bool:
        with self.lock:
            return not self._running


__all__ = ["Scheduled", "Scheduler"]
