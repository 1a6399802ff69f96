import dataclasses
import enum
import io
import json
import logging
import random
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from syncd.observability.logs import (
    _json_line,
    _timestamp,
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


# --------------------------------------------------------------------------- item 14/11


def test_logging_json_false_gives_text_lines_with_the_same_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", stream=stream, json_lines=False)
        with bind(topic="erp.erp.sales_order", partition=2, serial="SX3F7Q2M9KD4HT6W1B8N5C0RJA"):
            logging.getLogger("syncd.x").error("issue failed for %s", "password=hunter22")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    assert not line.startswith("{")
    assert " ERROR syncd.x: issue failed for password=***" in line
    assert "topic=erp.erp.sales_order partition=2 serial=SX3F7Q2M9KD4HT6W1B8N5C0RJA" in line


@pytest.mark.parametrize("json_lines", [True, False])
def test_run_starts_logging_as_the_config_says(json_lines: bool) -> None:
    """`syncd run`'s own start-up path: `logging.json: false` gives text lines, the default
    JSON lines, and a configured secret is masked either way."""
    import yaml

    from syncd.commands.run import start_logging
    from syncd.config import parse_config
    from tests.integration.stack import REPO_DIR

    data = yaml.safe_load((REPO_DIR / "config" / "demo.yaml").read_text())
    data["logging"]["json"] = json_lines
    config = parse_config(yaml.safe_dump(data))
    secret = config.primary_issuer.provider_settings()["app_secret"]
    secret = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    stream = io.StringIO()
    start_logging(config, stream=stream)
    try:
        logging.getLogger("syncd.test").warning("platform said %s", secret)
    finally:
        configure_logging()
    line = stream.getvalue().strip()
    assert secret not in line and "WARNING" in line
    if json_lines:
        assert json.loads(line)["level"] == "WARNING"
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_rate_limit_lets_one_line_of_a_kind_through_per_interval() -> None:
    from syncd.observability.logs import RateLimitFilter

    now = [0.0]
    limit = RateLimitFilter(60.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("syncd.kafka", logging.ERROR, "x", 0, msg, None, None)

    fail = (
        "FAIL [c#consumer-1] b:1/bootstrap: Connect failed: refused (after {}ms in state CONNECT)"
    )
    passed = [limit.filter(rec(fail.format(i % 3))) for i in range(100)]
    assert passed.count(True) == 1  # the millisecond count does not make a new kind
    assert limit.filter(rec("another message"))  # other kinds are not held back
    now[0] = 61.0
    again = rec(fail.format(0))
    assert limit.filter(again) and again.suppressed == 99  # type: ignore[attr-defined]


def test_librdkafka_lines_reach_the_kafka_logger_rate_limited(out: io.StringIO) -> None:
    """A real client against a closed port: its lines go through syncd's handler."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from syncd.config import KafkaSettings
    from syncd.kafka.client import operator_config

    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", group_id="g", topic_prefix="erp")
    admin = AdminClient(operator_config(kafka, client_id="syncd-test", timeout=1.5))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1.5)
    admin.poll(0.2)  # librdkafka's log queue is served from poll()
    fails = [r for r in lines(out) if "FAIL" in r["msg"]]
    assert fails and {r["logger"] for r in fails} == {"syncd.kafka"}
    assert {r["level"] for r in fails} == {"ERROR"}
    assert len(fails) <= 2  # librdkafka retried ~30 times meanwhile


RUNBOOK = __import__("pathlib").Path(__file__).resolve().parents[3] / "docs" / "runbook.md"


def _runbook_queries() -> list[str]:
    import re

    text = RUNBOOK.read_text(encoding="utf-8")
    return re.findall(r"jq '([^']+)'", text)


def _select(query: str, record: dict[str, Any]) -> bool:
    """The runbook's queries are `select(.a=="x" and .b==3 ...)`: their Python meaning."""
    import re

    body = re.fullmatch(r"select\((.+)\)", query)
    assert body, f"not a select(...) query: {query}"
    for term in body.group(1).split(" and "):
        m = re.fullmatch(r'\s*\.(\w+)\s*==\s*("[^"]*"|\d+)\s*', term)
        assert m, f"unsupported term {term!r} in {query}"
        if record.get(m.group(1)) != json.loads(m.group(2)):
            return False
    return True


def test_the_runbooks_log_queries_select_real_log_lines(out: io.StringIO) -> None:
    import shutil
    import subprocess

    log = logging.getLogger("syncd.pipeline.driver")
    with bind(topic="erp.erp.sales_order", partition=3, offset=41, serial="S" + "7" * 25):
        log.info("issued")
        log.warning("platform answered 503, retrying")
        log.error("document DEAD after 10 attempts")
    logging.getLogger("syncd").error("outside any document")
    kafka_logger().error("FAIL [syncd-runbook#consumer-1] b:1/bootstrap: Connect failed")
    produced = out.getvalue()
    records = lines(out)
    queries = _runbook_queries()
    assert 'select(.level=="ERROR")' in queries
    expected_levels = {"INFO", "WARNING", "ERROR"}
    assert {r["level"] for r in records} == expected_levels
    for query in queries:
        chosen = [r for r in records if _select(query, r)]
        assert chosen, f"{query} selects none of syncd's real log lines"
        if ".level" in query:
            level = query.split('.level=="')[1].split('"')[0]
            assert level in expected_levels  # spelled as syncd spells it
            assert all(r["level"] == level for r in chosen)
        if shutil.which("jq"):
            got = subprocess.run(
                ["jq", "-c", query], input=produced, capture_output=True, text=True, check=True
            ).stdout.splitlines()
            assert [json.loads(g) for g in got] == chosen


# --------------------------------------------------------------------------- fast paths


@dataclasses.dataclass
class _Point:
    x: int


class _Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": "text ünïcode 发票 \u2028", "c": None, "d": True, "e": 1.5},
        {"when": datetime(2026, 12, 3, 21, 0, tzinfo=UTC), "day": date(2026, 12, 3)},
        {"amount": Decimal("165.14"), "point": _Point(3), "colour": _Colour.RED},
        {"nested": {"list": [1, (2, 3)], "big": 2**70}},
        {"keys": {1: "non-string key"}},
        {"control": "tab\tnew\nline\x01", "quote": 'a "b" \\ c'},
    ],
)
def test_the_json_line_is_what_json_dumps_writes(value: dict[str, Any]) -> None:
    expected = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    assert _json_line(value) == expected


def test_the_timestamp_is_the_datetime_text_to_the_millisecond() -> None:
    samples = [0.0, 1.0, 1.9995, 5.0000004, 1_699_999_999.999_999_6, 1_796_332_800.0005]
    samples += [random.Random(7).uniform(0, 4e9) for _ in range(20_000)]
    for created in samples:
        expected = (
            datetime.fromtimestamp(created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        assert _timestamp(created) == expected, created
