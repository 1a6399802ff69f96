"""Pure parts of the operator commands: document references, dead-letter headers (and the
daemon's dead-letter producer, on a fake Producer)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.changes import RecordPosition
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.identity import DocumentKind as LedgerKind
from syncd.kafka.deadletter import (
    H_CODE,
    H_ERROR,
    DeadLetterProducer,
    dead_letter_headers,
    describe_dead_letter,
    headers_of,
    source_of,
    strip_syncd_headers,
)
from syncd.lifecycle import DocumentState, is_allowed
from syncd.pipeline.redrive import (
    RETRYABLE_STATES,
    ById,
    BySerial,
    BySourceKey,
    DocumentRefError,
    parse_document_ref,
)

SERIAL = serial_for(
    DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)], DocumentKind.ISSUE)
)


# --------------------------------------------------------------------------- references


def test_digits_are_a_ledger_id() -> None:
    assert parse_document_ref("42") == ById(42)
    assert parse_document_ref(" 7 ") == ById(7)


def test_a_real_serial_is_recognised() -> None:
    assert parse_document_ref(SERIAL) == BySerial(SERIAL)


def test_typed_key_is_canonicalised_like_the_ledger() -> None:
    ref = parse_document_ref('sales_order:{ "id" : 42 }')
    assert ref == BySourceKey("sales_order", '{"id":42}')
    # key order and integral floats do not matter: the ledger's canonical JSON is the same
    assert parse_document_ref('sales_order:{"b":"x","a":1.0}') == BySourceKey(
        "sales_order", '{"a":1,"b":"x"}'
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "S123",
        "sales_order:42",
        "sales_order:{not json}",
        "sales_order:{}",
        'Sales-Order:{"id":1}',
        "-1",
        'sales_order:["id", 1]',
    ],
)
def test_malformed_references_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(DocumentRefError) as info:
        parse_document_ref(text)
    assert "expected" in str(info.value) or "key" in str(info.value)


@pytest.mark.parametrize("kind", list(LedgerKind))
@pytest.mark.parametrize("state", sorted(RETRYABLE_STATES))
def test_every_retryable_state_may_move_to_outcome_unknown(
    kind: LedgerKind, state: DocumentState
) -> None:
    # the state machine must allow the operator's move for both kinds, or retry would fail
    assert is_allowed(kind, state, DocumentState.OUTCOME_UNKNOWN)


# --------------------------------------------------------------------------- dead letters


def test_strip_removes_only_syncd_headers_and_keeps_order() -> None:
    original = [("traceparent", b"00-abc"), ("syncd-ish", b"keep"), ("b", None)]
    headers = dead_letter_headers(
        RecordPosition("erp.erp.sales_order", 2, 99), "undecodable", "bad JSON", original
    )
    assert strip_syncd_headers(headers) == [
        ("traceparent", b"00-abc"),
        ("syncd-ish", b"keep"),
        ("b", b""),
    ]
    assert strip_syncd_headers(None) == []


def test_describe_reads_back_what_the_daemon_wrote() -> None:
    headers = dead_letter_headers(RecordPosition("t", 1, 5), "unroutable", "no document type")
    info = describe_dead_letter(headers)
    assert info.source == RecordPosition("t", 1, 5)
    assert (info.code, info.reason) == ("unroutable", "no document type")
    assert info.failed_at is not None


def test_a_record_dead_lettered_twice_reports_the_newest_reason() -> None:
    headers = [(H_ERROR, b"old"), (H_CODE, b"a"), (H_ERROR, b"new"), (H_CODE, b"b")]
    info = describe_dead_letter(headers)
    assert (info.code, info.reason) == ("b", "new")
    assert info.source is None and source_of(headers) is None


class FakeProducer:
    def __init__(self, undelivered: int = 0) -> None:
        self.produced: list[dict[str, Any]] = []
        self.flushes: list[float] = []
        self.undelivered = undelivered

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append({"topic": topic, **kwargs})

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        return self.undelivered


def test_the_dead_letter_producer_sends_the_bytes_untouched_with_the_reason() -> None:
    producer = FakeProducer()
    letters = DeadLetterProducer(producer, "syncd.dead-letter")  # type: ignore[arg-type]
    position = RecordPosition("erp.erp.sales_order", 2, 99)
    letters.send(position, "undecodable", "bad JSON", b"k", b"\xff", [("traceparent", b"00")])
    assert letters.flush(10.0) and producer.flushes == [10.0]
    [sent] = producer.produced
    assert (sent["topic"], sent["key"], sent["value"]) == ("syncd.dead-letter", b"k", b"\xff")
    assert sent["headers"][0] == ("traceparent", b"00")
    info = describe_dead_letter(sent["headers"])
    assert (info.source, info.code, info.reason) == (position, "undecodable", "bad JSON")


def test_a_dead_letter_still_queued_after_the_flush_is_reported() -> None:
    letters = DeadLetterProducer(FakeProducer(undelivered=1), "dlq")  # type: ignore[arg-type]
    letters.send(RecordPosition("t", 0, 1), "x", "y", None, None)
    assert not letters.flush(10.0)


def test_consumed_headers_become_a_list_of_bytes() -> None:
    assert headers_of(None) == [] and headers_of([]) == []
    assert headers_of([("a", b"1"), ("b", None), ("c", "text")]) == [
        ("a", b"1"),
        ("b", None),
        ("c", b"text"),
    ]
    assert headers_of({"a": b"1"}) == [("a", b"1")]
