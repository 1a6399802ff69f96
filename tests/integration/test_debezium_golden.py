"""Golden test against the real connector: re-capture and compare with the fixtures.

Registers one Debezium 3.6.1 connector per converter variant (see
tests/fixtures/debezium/capture.py), runs the fixed DML, and compares every record
with the committed fixtures after blanking volatile fields (times, LSNs, transaction
ids, versions). A Debezium upgrade that changes the wire format fails here; refresh
the fixtures with `python tests/fixtures/debezium/capture.py` and review the diff.
"""

from __future__ import annotations

import json

import pytest

from syncd.changes import ChangeEvent, DecodeError, RecordPosition
from syncd.debezium import DecodeOptions, decode_json
from tests.fixtures.debezium import capture
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def captured(stack: Stack) -> dict[str, list[dict]]:
    assert capture.stack_ready(), (
        f"Kafka Connect with the Debezium Postgres plugin is not reachable at {capture.CONNECT}"
    )
    return capture.capture()


@pytest.mark.parametrize("variant", list(capture.VARIANTS))
def test_recapture_matches_the_fixtures(captured, variant):
    fresh = capture.normalise_records(captured[variant])
    golden = capture.normalise_records(capture.load_fixture(variant))
    assert len(fresh) == len(golden), [r["topic"] for r in fresh]
    for new, old in zip(fresh, golden, strict=True):
        assert new == old, (
            f"{variant}: {old['topic']}@{old['offset']} differs from the fixture:\n"
            f"captured: {json.dumps(new)[:3000]}\nfixture:  {json.dumps(old)[:3000]}"
        )


@pytest.mark.parametrize("variant", list(capture.VARIANTS))
def test_every_recaptured_record_decodes(captured, variant):
    options = DecodeOptions(
        decimal_scales={"golden.all_types.amount": 2, "golden.all_types.price": 2}
    )
    changes = 0
    for record in captured[variant]:
        position = RecordPosition(record["topic"], record["partition"], record["offset"])
        try:
            decoded = decode_json(position, record["key"], record["value"], options)
        except DecodeError as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{variant}: {exc}")
        changes += isinstance(decoded, ChangeEvent)
    assert changes >= 11
