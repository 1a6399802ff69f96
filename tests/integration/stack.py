"""Helpers for integration tests against the local stack (dev/stack.sh).

Kept outside conftest.py so test modules can import them explicitly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

REPO_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    pg_port: int
    kafka_port: int
    connect_port: int
    #: the secured listeners (SYNCD_STACK_SECURE=1): SASL_SSL with SCRAM, and mutual TLS
    sasl_port: int = 0
    mtls_port: int = 0
    #: the stack's state directory; its tls/ holds the throwaway CA, certificates and
    #: the SCRAM password of user `syncd`
    state_dir: Path = REPO_DIR / ".stack"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def scram_password(self) -> str:
        return (self.tls_dir / "scram-syncd.password").read_text(encoding="utf-8").strip()

    @property
    def dsn(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/erp"

    def dsn_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{database}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"


def stack_from_env() -> Stack:
    """The stack's ports and state directory, with dev/stack.sh's defaults."""
    kafka_port = int(os.environ.get("SYNCD_KAFKA_PORT", "19092"))
    return Stack(
        pg_port=int(os.environ.get("SYNCD_PG_PORT", "15432")),
        kafka_port=kafka_port,
        connect_port=int(os.environ.get("SYNCD_CONNECT_PORT", "18083")),
        sasl_port=int(os.environ.get("SYNCD_KAFKA_SASL_PORT", str(kafka_port + 2))),
        mtls_port=int(os.environ.get("SYNCD_KAFKA_MTLS_PORT", str(kafka_port + 3))),
        state_dir=Path(os.environ.get("SYNCD_STACK_DIR", str(REPO_DIR / ".stack"))),
    )


def ensure_stack_up() -> Stack:
    """Reuse a running stack; start it (idempotent `dev/stack.sh up`) otherwise.

    SYNCD_STACK_EXTERNAL=1: the stack is run by someone else (another checkout, CI
    services); only check that its ports answer, never start or change anything.
    """
    if os.environ.get("SYNCD_STACK_EXTERNAL") == "1":
        stack = stack_from_env()
        for port in (stack.pg_port, stack.kafka_port, stack.connect_port):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        return stack
    # Always with the secured listeners (they come on top of the plain ones): the TLS
    # tests need them, and a test run must not depend on how the stack was started before.
    result = subprocess.run(
        ["bash", str(REPO_DIR / "dev" / "stack.sh"), "up"],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNCD_STACK_SECURE": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"dev/stack.sh up failed:\n{result.stdout}\n{result.stderr}")
    return stack_from_env()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def topic_partitions(client: Any, topic: str, timeout: float = 60.0) -> list[int]:
    """The partitions of `topic`, waiting until it exists (Debezium creates topics lazily)."""
    deadline = time.monotonic() + timeout
    while True:
        md = client.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and md.partitions:
            return sorted(md.partitions)
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} did not appear within {timeout} s")
        time.sleep(0.3)


def read_topic(
    bootstrap: str,
    topic: str,
    match: Callable[[bytes | None, bytes | None], bool],
    *,
    count: int = 1,
    timeout: float = 60.0,
) -> list[tuple[bytes | None, bytes | None, int]]:
    """Read `topic` from the beginning until `count` records satisfy `match(key, value)`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("it-reader"),
            "enable.auto.commit": False,
        }
    )
    found: list[tuple[bytes | None, bytes | None, int]] = []
    deadline = time.monotonic() + timeout
    try:
        partitions = topic_partitions(consumer, topic, timeout)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while len(found) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(found)} of {count} records matched on {topic}")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer error: {error}")
                continue
            if match(msg.key(), msg.value()):
                found.append((msg.key(), msg.value(), msg.offset() or 0))
    finally:
        consumer.close()
    return found


def payload(doc: bytes | None) -> Any:
    """The payload of a JSON-converter record with schemas enabled (None for a tombstone, or
    for a record that is not such JSON: tests/crafted.py puts those on the captured topic,
    and a test reading the topic from its beginning must pass over them)."""
    if doc is None:
        return None
    try:
        parsed = json.loads(doc)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    found = parsed.get("payload", parsed)
    return found if isinstance(found, dict) else None


def iter_lines(path: Path) -> Iterator[str]:
    with path.open() as fh:
        yield from (line.rstrip("\n") for line in fh)
