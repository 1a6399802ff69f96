"""Deferred reversals: change events that must wait until their invoice's document settles.

The intake cannot record a reversal whose invoice is still on its way to the provider; it
hands the record back with the id of the invoice's document, and the record waits here.
A re-issue waits the same way behind a reversal still on its way (the reversal row's id,
or the invoice's id while the reversal record itself waits here), so the records of one
document are recorded in their order.

Invariant: a waiting record's offset is not finished, so its partition's stored position
stays below it; holding it in memory only is safe, because a restart or the partition's
next owner reads it again from there. Hence a partition's waiting records go with the
partition (revoke, loss, fencing): the new owner re-reads them. They are tried again when
the invoice's document settles and periodically (the loop's re-check), and they count as
documents in flight for backpressure, so waiting reversals cannot pile up without bound.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable

from syncd.pipeline.classify import Classified

TP = tuple[str, int]


class DeferredReversals:
    """Records waiting, by the id of the document they wait for."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[Classified]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __contains__(self, issue_id: object) -> bool:
        return issue_id in self._waiting

    @property
    def count(self) -> int:
        """Records waiting (for backpressure, each counts as a document in flight)."""
        return sum(len(v) for v in self._waiting.values())

    def issue_ids(self) -> list[int]:
        return list(self._waiting)

    def add(self, issue_id: int, record: Classified) -> None:
        self._waiting.setdefault(issue_id, []).append(record)

    def records(self, issue_ids: Iterable[int], owned: Container[TP]) -> list[Classified]:
        """The records waiting for `issue_ids` whose partitions are still `owned`."""
        return [
            c
            for i in issue_ids
            for c in self._waiting.get(i, [])
            if (c.position.topic, c.position.partition) in owned
        ]

    def drop(self, issue_ids: Iterable[int]) -> None:
        for i in issue_ids:
            self._waiting.pop(i, None)

    def drop_partitions(self, tps: Collection[TP]) -> None:
        """Forget the records of partitions this replica no longer owns."""
        for issue_id in list(self._waiting):
            kept = [
                c
                for c in self._waiting[issue_id]
                if (c.position.topic, c.position.partition) not in tps
            ]
            if kept:
                self._waiting[issue_id] = kept
            else:
                del self._waiting[issue_id]
