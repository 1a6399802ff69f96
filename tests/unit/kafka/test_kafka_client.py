"""The daemon's librdkafka configurations: operators tune them, never what exactly-once needs."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.config import KafkaSettings
from syncd.kafka.client import (
    CONSUMER_ONLY,
    consumer_config,
    dead_letter_producer_config,
    end_offsets_config,
)


def _kafka(**properties: Any) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="broker-1:9092,broker-2:9092",
        topic_prefix="erp",
        group_id="syncd-test",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="syncd",
        sasl_password="s3cret",  # type: ignore[arg-type]
        properties=properties,
    )


#: What exactly-once depends on: offsets live in the ERP database, never Kafka's own.
EXACTLY_ONCE = {
    "group.id": "syncd-test",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": False,
}


def test_the_consumer_has_defaults_the_operators_settings_and_the_exactly_once_ones() -> None:
    conf = consumer_config(_kafka(), owner="replica-a")
    assert conf["bootstrap.servers"] == "broker-1:9092,broker-2:9092"
    assert conf["sasl.password"] == "s3cret"
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["queued.max.messages.kbytes"] == 16384
    assert conf["max.partition.fetch.bytes"] == 262144
    assert conf["client.id"] == "syncd-replica-a"
    assert conf.items() >= EXACTLY_ONCE.items()


def test_operator_properties_and_overrides_tune_the_consumers_defaults() -> None:
    kafka = _kafka(**{"session.timeout.ms": 45000, "client.id": "erp-sync"})
    conf = consumer_config(kafka, owner="a", overrides={"auto.offset.reset": "latest"})
    assert conf["session.timeout.ms"] == "45000"
    assert conf["client.id"] == "erp-sync"
    assert conf["auto.offset.reset"] == "latest"


@pytest.mark.parametrize(
    "key, value",
    [
        ("enable.auto.commit", True),
        ("enable.auto.offset.store", True),
        ("partition.assignment.strategy", "range"),
        ("enable.partition.eof", True),
    ],
)
def test_nothing_overrides_the_settings_exactly_once_depends_on(key: str, value: Any) -> None:
    conf = consumer_config(_kafka(**{key: value}), owner="a", overrides={key: value})
    assert conf.items() >= EXACTLY_ONCE.items()


def test_the_dead_letter_producer_is_idempotent_and_gets_no_consumer_property() -> None:
    kafka = _kafka(**{"session.timeout.ms": 45000, "fetch.max.bytes": 1024, "acks": 1})
    conf = dead_letter_producer_config(kafka, owner="replica-a")
    assert not conf.keys() & CONSUMER_ONLY
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["client.id"] == "syncd-dlq-replica-a"
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.username"] == "syncd"
    assert "group.id" not in conf


def test_the_end_offsets_connection_shares_the_security_settings_only() -> None:
    kafka = _kafka(**{"isolation.level": "read_committed", "socket.timeout.ms": 5000})
    conf = end_offsets_config(kafka, owner="replica-a")
    assert conf == {
        "bootstrap.servers": "broker-1:9092,broker-2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "syncd",
        "sasl.password": "s3cret",
        "socket.timeout.ms": "5000",
        "client.id": "syncd-lag-replica-a",
    }
