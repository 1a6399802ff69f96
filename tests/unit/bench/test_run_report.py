"""bench/run.py's arithmetic of the stack's ceiling and the target ratios, and its table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import run

CPU = {
    "syncd": 2.0,
    "sandbox": 1.0,
    "kafka_broker": 1.5,
    "kafka_connect": 1.0,
    "postgresql": 0.5,
    "load_generator": 0.0,
}


def _results(cpu0: dict[str, float | None]) -> dict[str, object]:
    results: dict[str, object] = {
        "syncd_docs_per_s_latency_0ms": 300.0,
        "syncd_docs_per_s_latency_50ms": 270.0,
        "syncd_docs_per_s_latency_500ms": 120.0,
        "alo_docs_per_s_latency_50ms": 300.0,
    }
    runs = {"cpu_ms_per_doc": cpu0}
    alo = {"cpu_ms_per_doc": {**cpu0, "alo": cpu0["syncd"]}}
    results.update(run.cpu_results(results, runs, runs, runs, alo))
    return results


def test_the_ceiling_is_the_cores_over_everything_but_syncd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    r = _results(dict(CPU))
    assert r["stack_ceiling_docs_per_s"] == 500.0  # 2000 ms / 4 ms
    assert r["syncd_fraction_of_ceiling_0ms"] == 0.6
    assert r["ratio_syncd_500ms_over_0ms"] == 0.4
    assert r["ratio_syncd_over_alo_50ms"] == 0.9
    assert r["ratio_syncd_cpu_over_infra_0ms"] == round(2.0 / 3.0, 2)
    assert r["cpu_ms_per_doc_kafka_broker"] == 1.5


def test_a_process_not_found_leaves_the_ceiling_unknown_and_the_table_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    r = _results({**CPU, "postgresql": None})
    assert r["stack_ceiling_docs_per_s"] is None
    assert r["syncd_fraction_of_ceiling_0ms"] is None
    assert r["ratio_syncd_cpu_over_infra_0ms"] is None
    json.dumps(r)  # the results file stays valid JSON (null)
    committed = json.loads((Path(run.__file__).parent / "results.json").read_text())
    rendered = run.table(
        {**committed, **r, "slow_latency_ms": 500, "alo_duplicates": 0, "alo_missing": 0}
    )
    assert "| n/a |" in rendered
    assert "n/a / n/a / n/a" in rendered  # the PostgreSQL row, every run
