"""Per-partition progress: which offset may be committed while many events are in flight.

Events of one partition finish out of order (a deferred reversal waits for its invoice while
later events are already recorded). The committed position is the lowest offset not yet
finished, so a crash re-delivers exactly the unfinished events -- and everything after them,
which the ledger recognises as duplicates. Pure bookkeeping; the pipeline owns the I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionProgress:
    """Offsets seen and finished on one partition."""

    #: The position this partition started from (stored offset or reset position).
    start: int
    #: Offsets handed out but not finished, as a heap plus a set (lazy deletion).
    _heap: list[int] = field(default_factory=list)
    _pending: set[int] = field(default_factory=set)
    _highest_seen: int = -1

    def seen(self, offset: int) -> None:
        if offset in self._pending:
            return
        self._pending.add(offset)
        heapq.heappush(self._heap, offset)
        self._highest_seen = max(self._highest_seen, offset)

    def done(self, offset: int) -> None:
        self._pending.discard(offset)

    def is_pending(self, offset: int) -> bool:
        return offset in self._pending

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def commit_position(self) -> int:
        """The next offset to consume after a restart: lowest unfinished, else past all seen."""
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        if self._heap:
            return self._heap[0]
        return max(self.start, self._highest_seen + 1)

    def commit_position_if_done(self, offsets: set[int]) -> int:
        """The position as it would be once `offsets` are finished (without finishing them)."""
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        for candidate in sorted(self._pending):
            if candidate not in offsets:
                return candidate
        return max(self.start, self._highest_seen + 1)

    def rewind(self, offset: int) -> None:
        """Forget everything from `offset` on (the records will be consumed again)."""
        self._pending = {o for o in self._pending if o < offset}
        self._heap = [o for o in self._heap if o in self._pending]
        heapq.heapify(self._heap)
        self._highest_seen = min(self._highest_seen, offset - 1)
        self.start = min(self.start, offset) if self.start >= 0 else offset
