"""The daemon's librdkafka configurations: consumer, dead-letter producer, end-offsets admin.

Invariant: an operator's librdkafka properties (`kafka.properties`, the typed security
settings) reach every client, and may tune its defaults (timeouts, reset policy, fetch
sizes), but never the settings exactly-once depends on: the consumer never commits or
stores offsets on its own (the ERP database holds the positions, see `syncd.offsets`), and
the dead-letter producer is idempotent and waits for every replica. Those are set last, so
nothing overrides them. Properties only a consumer understands are left out of the other
clients' configurations, because a producer rejects them.

Pure functions returning dicts; the caller builds the clients (and owns their lifetime).
Every client is given `logger` (`syncd.observability.logs.kafka_logger`): without it
librdkafka prints its own `%3|...|FAIL|` lines straight to stderr, several per second
while a broker is down; with it they go through syncd's handler, rate-limited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from syncd.config import KafkaSettings
from syncd.observability.logs import kafka_logger

#: librdkafka properties an operator may set for the consumer that a producer rejects.
CONSUMER_ONLY: Final = frozenset(
    {
        "auto.offset.reset",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "heartbeat.interval.ms",
        "fetch.min.bytes",
        "fetch.wait.max.ms",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "group.instance.id",
        "isolation.level",
        "queued.min.messages",
        "queued.max.messages.kbytes",
    }
)


def consumer_config(
    kafka: KafkaSettings,
    *,
    owner: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The consumer of the document topics, in group `kafka.group_id`.

    Defaults first; the operator's properties and `overrides` (tests) may tune them, but
    never the settings exactly-once depends on (set last).
    """
    return {
        "auto.offset.reset": "earliest",
        # Notice a document topic created after start within 30 s, not librdkafka's 5 min.
        "topic.metadata.refresh.interval.ms": 30000,
        "session.timeout.ms": 30000,
        "max.poll.interval.ms": 300000,
        # librdkafka prefetches up to 64 MB by default: thousands of schema-carrying
        # change events, minutes of work for a daemon bounded by its in-flight limit.
        # 16 MB keeps the fetcher ahead without holding a backlog in memory.
        "queued.max.messages.kbytes": 16384,
        # The fetch sizes count compressed bytes: 1 MB (the default) of an lz4 topic's
        # change events per partition unpacked to ~100 MB held by the fetcher of a
        # replica facing a backlog. 256 KB still reads ~60,000 uncompressed events/s.
        "max.partition.fetch.bytes": 262144,
        "client.id": f"syncd-{owner}",
        **kafka.client_config(),
        **(overrides or {}),
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": False,
    }


def shared_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The operator's settings every non-consumer client gets (consumer-only ones left out)."""
    return {k: v for k, v in kafka.client_config().items() if k not in CONSUMER_ONLY}


def dead_letter_producer_config(kafka: KafkaSettings, *, owner: str) -> dict[str, Any]:
    """The producer of the dead-letter topic: idempotent, acknowledged by all replicas, so a
    record's offset is stored only once its dead letter is durable."""
    return {
        **shared_config(kafka),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "client.id": f"syncd-dlq-{owner}",
    }


def end_offsets_config(kafka: KafkaSettings, *, owner: str) -> dict[str, Any]:
    """The admin connection the lag gauges ask end offsets on (`syncd.kafka.endoffsets`)."""
    return {**shared_config(kafka), "client.id": f"syncd-lag-{owner}"}


class BrokerErrors:
    """librdkafka's `error_cb`: keeps the reason a connection failed, so an operator command
    can say *why* the brokers are unreachable (an untrusted certificate, refused SCRAM
    credentials) rather than only "transport failure". A TLS or authentication error wins
    over a plain transport error, because it names what to fix."""

    _TELLING: Final = ("_SSL", "_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._telling = False

    def __call__(self, error: Any) -> None:
        name = str(getattr(error, "name", lambda: "")())
        telling = name in self._TELLING
        if telling or not self._telling:
            text = str(error.str() if hasattr(error, "str") else error).strip()
            self.reason = text.splitlines()[0] if text else name
            self._telling = self._telling or telling


def operator_config(
    kafka: KafkaSettings,
    *,
    client_id: str,
    timeout: float,
    consumer: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A short-lived client of an operator command (`status`, `check-config --live`,
    `dlq`): the operator's settings, librdkafka's lines through syncd's logger, and a
    connection set-up bounded by the command's `timeout`, so a broker that does not answer
    is reported as unreachable within it."""
    base = kafka.client_config() if consumer else shared_config(kafka)
    return {
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        # An operator command's idle connections are closed by the broker on purpose.
        "log.connection.close": False,
        **base,
        **(overrides or {}),
        "client.id": client_id,
        "logger": kafka_logger(),
        # `conf["error_cb"].reason` says why, when the brokers turn out unreachable.
        "error_cb": BrokerErrors(),
    }
