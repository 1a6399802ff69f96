"""The config the chart renders, plus the environment it sets, is accepted by syncd's loader.

Catches drift between the chart (values.yaml defaults, ci/ examples, env overrides) and
syncd/config.py: a renamed key fails here, not in a pod at start-up. The DBAs' document
mappings (`seller`, `documents`) must be in every value set: the chart refuses a config
without them (test_schema.py), since syncd would refuse to start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import parse_config
from tests.chart.conftest import CHART, CI_VALUES, Render, find

pytestmark = pytest.mark.chart

SECRETS = "/etc/syncd/secrets/"
#: Value sets whose config the chart renders (existing-values.yaml brings its own ConfigMap).
RENDERED = [p for p in CI_VALUES if p.name != "existing-values.yaml"]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", RENDERED, ids=lambda p: p.name)
def test_rendered_config_loads(
    render: Render, values: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render([values])
    text = find(docs, "ConfigMap", "syncd")["data"]["config.yaml"]

    # Secret files as the pod sees them, under a temporary directory.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # Every key the chart's Secret may hold (the TLS files: the config checks they exist).
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name in chart_values["secretKeys"].values():
        content = "postgresql+psycopg://syncd:x@db:5432/erp" if name == "database-dsn" else "x"
        (secrets / name).write_text(content + "\n")
    config = yaml.safe_load(text.replace(SECRETS, f"{secrets}/"))
    assert config["seller"] and config["documents"]  # the chart refuses to render without

    env = {e["name"]: e["value"] for e in _container(docs)["env"] if "value" in e}
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    loaded = parse_config(yaml.safe_dump(config), "chart-config.yaml")
    assert loaded.metrics.port == int(env["SYNCD_METRICS__PORT"])
    assert loaded.metrics.host == "0.0.0.0"
    drain = float(env["SYNCD_PIPELINE__DRAIN_DEADLINE_SECONDS"])
    assert loaded.pipeline.drain_deadline_seconds == drain
    assert loaded.database.dsn_value().startswith("postgresql+psycopg://")
