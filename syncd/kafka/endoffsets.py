"""Partitions' end offsets for the lag gauges, asked for without blocking the consumer loop.

Why not `Consumer.get_watermark_offsets(cached=False)`: its ListOffsets request shares the
consumer's broker connection, where it queues behind the long-polling fetch (up to
`fetch.wait.max.ms`), so every report would stall the loop for as long as a fetch may
wait. The cached figures need no request, but they come from fetch responses and so stop
moving for a partition that backpressure paused: the lag gauge would freeze exactly when
it matters. So the question goes out on an admin client's own connection, and the loop
picks up the answers on a later pass once they are all in.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka import admin as kafka_admin

log = logging.getLogger(__name__)

TP = tuple[str, int]
# OffsetSpec is public (the admin package re-exports it) but not marked as exported.
_LATEST: Final = kafka_admin.OffsetSpec.latest()  # type: ignore[attr-defined,no-untyped-call]


class EndOffsets:
    """One ListOffsets question in flight at a time; `collect` never waits."""

    def __init__(
        self,
        client_config: dict[str, Any],
        *,
        request_timeout: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._admin = kafka_admin.AdminClient(client_config, logger=logger or log)
        self._timeout = request_timeout
        self._pending: dict[KafkaTopicPartition, Future[Any]] | None = None

    @property
    def asking(self) -> bool:
        return self._pending is not None

    def ask(self, partitions: list[TP]) -> None:
        """Ask for the end offsets of `partitions`, unless an answer is still awaited."""
        if self._pending is not None or not partitions:
            return
        try:
            self._pending = self._admin.list_offsets(
                {KafkaTopicPartition(t, p): _LATEST for t, p in partitions},
                request_timeout=self._timeout,
            )
        except (KafkaException, ValueError) as exc:
            log.debug("end offsets not asked: %s", exc)

    def collect(self) -> dict[TP, int] | None:
        """The answer once every partition's is in (failed ones left out), else None."""
        pending = self._pending
        if pending is None or not all(f.done() for f in pending.values()):
            return None
        self._pending = None
        ends: dict[TP, int] = {}
        for tp, future in pending.items():
            try:
                ends[(tp.topic, tp.partition)] = int(future.result().offset)
            except KafkaException as exc:
                log.debug("end offset of %s[%d] unknown: %s", tp.topic, tp.partition, exc)
        return ends
