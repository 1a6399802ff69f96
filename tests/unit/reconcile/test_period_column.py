"""`documents.<type>.period_column`: an identifier, checked against the live schema as a
date or timestamp column."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from syncd.config import ConfigError, load_config
from syncd.erp.lines import _doc_needs

DEMO = Path(__file__).resolve().parents[3] / "config" / "demo.yaml"


def test_the_demo_dates_orders_by_order_date_and_the_live_check_needs_a_date() -> None:
    doc = load_config(DEMO).documents["sales_order"]
    assert doc.period_column == "order_date"
    needs = [n for n in _doc_needs(doc)[doc.table] if n.what.endswith("period_column")]
    assert [(n.column, n.kinds) for n in needs] == [("order_date", ("date", "timestamp"))]


def test_period_column_must_be_an_identifier(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["documents"]["sales_order"]["period_column"] = "order_date; DROP TABLE x"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="period_column"):
        load_config(path)
