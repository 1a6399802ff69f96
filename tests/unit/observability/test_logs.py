import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from syncd.observability.logs import (
    bind,
    bound,
    configure_logging,
    kafka_logger,
    mask_tax_id,
    redact_text,
    redact_value,
    register_secret,
)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("DEBUG", stream=stream)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_bound_context(out: io.StringIO) -> None:
    log = logging.getLogger("syncd.pipeline.loop")
    with bind(topic="erp.public.sales_order", partition=3, offset=41):
        with bind(table="public.sales_order", key={"id": 42}, serial="SX3F7Q2M9KD4HT6W1B8N5C0RJA"):
            log.info("issued %s", "INV-1", extra={"invoice_no": "26312000000000012345"})
        log.warning("outer")
    log.info("outside")
    first, second, third = lines(out)
    assert first["msg"] == "issued INV-1" and first["level"] == "INFO"
    assert first["logger"] == "syncd.pipeline.loop" and first["ts"].endswith("Z")
    assert first["topic"] == "erp.public.sales_order" and first["partition"] == 3
    assert first["offset"] == 41 and first["key"] == {"id": 42}
    assert first["serial"] == "SX3F7Q2M9KD4HT6W1B8N5C0RJA"  # never mistaken for a tax ID
    assert first["invoice_no"] == "26312000000000012345"
    assert "serial" not in second and second["partition"] == 3
    assert "topic" not in third
    assert bound() == {}


def test_context_does_not_leak_between_threads(out: io.StringIO) -> None:
    seen: list[dict[str, Any]] = []

    def other() -> None:
        seen.append(dict(bound()))

    with bind(partition=1):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == [{}]


def test_secrets_never_reach_the_output(out: io.StringIO) -> None:
    register_secret("s3cr3t-api-key-value")
    log = logging.getLogger("syncd.issuer")
    log.info("calling with key s3cr3t-api-key-value")
    log.info("dsn=%s", "postgresql+psycopg://syncd:hunter2@db:5432/erp")
    log.info(
        "headers",
        extra={
            "headers": {"Authorization": "Bearer abc.def", "X-Req": "1"},
            "password": "pw-in-extra",
            "api_key": "k",
        },
    )
    log.info("config: password=topsecret token: tkn123 ok")
    log.info("auth Bearer eyJhbGciOi.payload.sig")
    text = out.getvalue()
    for secret in (
        "s3cr3t-api-key-value",
        "hunter2",
        "abc.def",
        "pw-in-extra",
        "topsecret",
        "tkn123",
        "eyJhbGciOi",
    ):
        assert secret not in text, secret
    recs = lines(out)
    assert recs[1]["msg"] == "dsn=postgresql+psycopg://syncd:***@db:5432/erp"
    assert recs[2]["headers"] == {"Authorization": "***", "X-Req": "1"}
    assert recs[2]["password"] == "***"


def test_tax_ids_are_masked(out: io.StringIO) -> None:
    log = logging.getLogger("syncd.invoice.validation")
    log.warning("buyer 91310115MA1K4PLN8E rejected", extra={"buyer_tax_id": "91110108MA01ABCD2X"})
    with bind(buyer={"name": "Example", "tax_id": "91110108MA01ABCD2X"}):
        log.info("x")
    a, b = lines(out)
    assert a["msg"] == "buyer 9131********8E rejected"
    assert a["buyer_tax_id"] == "9111********2X"
    assert b["buyer"] == {"name": "Example", "tax_id": "9111********2X"}
    assert "91310115MA1K4PLN8E" not in out.getvalue()


def test_exceptions_are_formatted_and_redacted(out: io.StringIO) -> None:
    log = logging.getLogger("syncd.db")
    try:
        raise ConnectionError("could not connect to postgresql://syncd:hunter2@db/erp")
    except ConnectionError:
        log.exception("database down")
    (rec,) = lines(out)
    assert "ConnectionError" in rec["exc"] and "hunter2" not in rec["exc"]
    assert "Traceback" in rec["exc"]


def test_library_loggers_use_the_same_formatter(out: io.StringIO) -> None:
    lib = logging.getLogger("httpx")
    lib.addHandler(logging.StreamHandler(io.StringIO()))  # a library's own handler
    configure_logging("DEBUG", stream=out)
    assert not logging.getLogger("httpx").handlers
    logging.getLogger("httpx").warning("HTTP Request: POST https://u:pw@platform/v1 503")
    kafka_logger().error("FAIL|rdkafka#consumer-1| broker down")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT secret params")  # below WARNING
    recs = lines(out)
    assert [r["logger"] for r in recs] == ["httpx", "syncd.kafka"]
    assert recs[0]["msg"] == "HTTP Request: POST https://u:***@platform/v1 503"


def test_configure_is_idempotent(out: io.StringIO) -> None:
    configure_logging("INFO", stream=out)
    configure_logging("INFO", stream=out)
    logging.getLogger("syncd").info("once")
    assert len(lines(out)) == 1


def test_unformattable_message_is_still_logged(out: io.StringIO) -> None:
    logging.getLogger("syncd").info("%d items", "not-a-number")
    (rec,) = lines(out)
    assert "unformattable" in rec["msg"]


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("91310115MA1K4PLN8E", "9131********8E"),
        ("110101199003071234", "1101********34"),
        ("12345", "***"),
    ],
)
def test_mask_tax_id(value: str, masked: str) -> None:
    assert mask_tax_id(value) == masked


def test_redaction_helpers() -> None:
    assert redact_text("id 110101199003071234 and 26312000000000012345") == (
        "id 1101********34 and 26312000000000012345"
    )
    assert redact_value({"db": {"password": "x"}, "n": 3, "ok": None}) == {
        "db": {"password": "***"},
        "n": 3,
        "ok": None,
    }
    assert redact_value(["Bearer abc"]) == ["Bearer ***"]
