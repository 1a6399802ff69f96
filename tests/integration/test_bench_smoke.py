"""The benchmark harness in miniature, so `make bench` cannot rot.

Runs bench/run.py --smoke (tens of orders, a few thousand backlog events) as `make bench`
does, against the real stack, and checks the results file: every documented key present
(the 500 ms scenario, the at-least-once peer, every process's CPU per document, the stack's
ceiling), and no duplicate or missing invoice, from syncd or from the at-least-once peer on
its clean run. Figures themselves are not asserted (tests assert behaviour, never timing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.stack import REPO_DIR, Stack

KEYS = (
    "syncd_docs_per_s_latency_0ms",
    "syncd_docs_per_s_latency_50ms",
    "syncd_docs_per_s_latency_500ms",
    "alo_docs_per_s_latency_50ms",
    "alo_duplicates",
    "alo_missing",
    "naive_docs_per_s_latency_50ms",
    "decode_events_per_s",
    "raw_consume_events_per_s",
    "peak_rss_mb_backlog",
    "freshness_p50_s",
    "freshness_p99_s",
    "duplicates",
    "missing",
    "cpu_ms_per_doc_syncd",
    "cpu_ms_per_doc_sandbox",
    "cpu_ms_per_doc_kafka_broker",
    "cpu_ms_per_doc_kafka_connect",
    "cpu_ms_per_doc_postgresql",
    "cpu_ms_per_doc_load_generator",
    "stack_ceiling_docs_per_s",
    "syncd_fraction_of_ceiling_0ms",
)


def test_bench_harness_smoke(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {
        **os.environ,
        "SYNCD_PG_PORT": str(stack.pg_port),
        "SYNCD_KAFKA_PORT": str(stack.kafka_port),
        "SYNCD_CONNECT_PORT": str(stack.connect_port),
    }
    run = subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO_DIR,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    results = json.loads(out.read_text())
    missing_keys = [k for k in KEYS if k not in results]
    assert not missing_keys, missing_keys
    assert results["duplicates"] == 0
    assert results["missing"] == 0
    assert results["alo_duplicates"] == 0
    assert results["alo_missing"] == 0
    runs = results["cpu_ms_per_doc_by_run"]
    assert set(runs) == {"syncd_0ms", "syncd_50ms", "syncd_500ms", "alo_50ms"}
    assert "alo" in runs["alo_50ms"]
    assert results["cores"] >= 1
    assert {"python", "confluent_kafka", "librdkafka", "postgresql"} <= set(results["versions"])
    for key in KEYS:
        assert isinstance(results[key], (int, float)), (key, results[key])
    assert "| measurement |" in run.stdout
