"""The lag gauges' end offsets, asked of the real broker without blocking the caller."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from syncd.kafka.endoffsets import EndOffsets
from tests.integration.stack import Stack, unique


def _collect(probe: EndOffsets, timeout: float = 30.0) -> dict[tuple[str, int], int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ends = probe.collect()
        if ends is not None:
            return ends
        time.sleep(0.02)
    raise AssertionError("no end offsets within the timeout")


def test_end_offsets_of_partitions_a_consumer_has_paused(stack: Stack) -> None:
    topic = unique("it.end-offsets")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for _ in range(5):
        producer.produce(topic, b"x", partition=0)
    producer.produce(topic, b"y", partition=1)
    assert producer.flush(30) == 0

    # A consumer holding the partitions paused (syncd's backpressure) fetches nothing, so
    # its cached watermarks would not move; the probe asks the broker itself.
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": unique("it-eo")})
    try:
        consumer.assign([KafkaTopicPartition(topic, 0, 0), KafkaTopicPartition(topic, 1, 0)])
        consumer.pause([KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)])
        probe = EndOffsets({"bootstrap.servers": stack.bootstrap})
        assert probe.collect() is None and not probe.asking  # nothing asked yet

        probe.ask([(topic, 0), (topic, 1)])
        assert probe.asking
        probe.ask([(topic, 0)])  # one question at a time: ignored while one is out
        assert _collect(probe) == {(topic, 0): 5, (topic, 1): 1}
        assert not probe.asking

        for _ in range(3):
            producer.produce(topic, b"z", partition=1)
        assert producer.flush(30) == 0
        probe.ask([(topic, 1)])
        assert _collect(probe) == {(topic, 1): 4}
    finally:
        consumer.close()


def test_a_partition_the_broker_does_not_know_is_left_out(stack: Stack) -> None:
    topic = unique("it.end-offsets-one")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    probe = EndOffsets({"bootstrap.servers": stack.bootstrap}, request_timeout=5)
    probe.ask([(topic, 0), (topic, 7)])
    assert _collect(probe) == {(topic, 0): 0}
