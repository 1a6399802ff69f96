"""Decisions on real Debezium 3.6.1 records (golden fixtures of the decoder helper).

golden.toast_default has REPLICA IDENTITY DEFAULT and a TOASTed text column: its
update arrives without a before image and with the TOAST placeholder -- exactly
the cases that must be *undecided*, never silently issued or skipped.
"""

import json
from pathlib import Path

import pytest

from syncd.changes import ChangeEvent, RecordPosition
from syncd.config import parse_config
from syncd.debezium import decode_json
from syncd.pipeline.classify import decode_options
from syncd.rules.decide import Action, decide_event
from tests.unit.config_helpers import DEMO

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
VARIANTS = [
    "schema_precise",
    "schema_string",
    "schema_double",
    "noschema_precise",
    "noschema_string",
    "noschema_double",
]


def config_for(variant: str, qualifies: str):
    text = DEMO.read_text()
    text = text.replace("topic_prefix: erp", f"topic_prefix: golden_{variant}", 1)
    text = text.replace(
        "    table: erp.sales_order          # topic derived: erp.erp.sales_order",
        "    table: golden.toast_default",
    )
    start = text.index("    qualifies:")
    end = text.index("    snapshot:")
    text = text[:start] + f"    qualifies: {qualifies}\n" + text[end:]
    # the golden table has no returns and no re-issues: the plain rules only
    start, end = text.index("    # Confirmed again"), text.index("\n# Scales")
    text = text[:start] + text[end:]
    # write back elsewhere: the golden table has no invoice-number column
    text = text.replace("      table: erp.sales_order\n", "      table: golden.invoices\n")
    text = text.replace("snapshot: issue_if_uninvoiced", "snapshot: ignore")
    return parse_config(text, "golden.yaml")


def toast_update(variant: str, config) -> ChangeEvent:
    for line in (FIXTURES / f"{variant}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["topic"].endswith(".golden.toast_default") and record["offset"] == 1:
            position = RecordPosition(record["topic"], record["partition"], record["offset"])
            decoded = decode_json(position, record["key"], record["value"], decode_options(config))
            assert isinstance(decoded, ChangeEvent)
            return decoded
    raise AssertionError("fixture record missing")


@pytest.mark.parametrize("variant", VARIANTS)
def test_toast_placeholder_makes_the_decision_undecided(variant):
    config = config_for(variant, "{column: big, equals: x}")
    decision = decide_event(toast_update(variant, config), config)
    assert decision.action is Action.UNDECIDED
    assert "big: value not sent by Debezium (unchanged TOAST column" in decision.reason


@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_before_image_makes_a_transition_undecided(variant):
    config = config_for(variant, "{column: n, becomes: 2}")
    decision = decide_event(toast_update(variant, config), config)
    assert decision.action is Action.UNDECIDED
    assert "no before image" in decision.reason


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_test_on_sent_column_decides(variant):
    config = config_for(variant, "{column: n, equals: 2}")
    decision = decide_event(toast_update(variant, config), config)
    assert decision.action is Action.ISSUE
    assert decision.reason == "n is 2"
    assert decision.identity is not None and decision.identity.key == (("id", 1),)
