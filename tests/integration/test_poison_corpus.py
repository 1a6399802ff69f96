"""Crafted records on the captured topic of the real stack, while `syncd run` is running.

Every kind of tests/crafted.py is produced straight onto the order topic, mixed with real
confirmations captured by Debezium. Verdict: every valid order is invoiced exactly once,
every crafted record is in the dead-letter topic with its reason code, `syncd dlq list`
shows each with an excerpt, and the daemon never stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

from tests import crafted
from tests.integration.daemon_harness import IT_SCHEMA, ORDER_TOPIC, world
from tests.integration.stack import Stack

RECORD_LIMIT = 512 * 1024


def dlq_list(config: Path) -> list[dict]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncd",
            "dlq",
            "list",
            "-c",
            str(config),
            "--json",
            "--limit",
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_crafted_records_are_dead_lettered_and_valid_orders_invoiced(it_erp: Stack, tmp_path: Path):
    with world(it_erp, tmp_path) as w:
        d = w.daemon({"limits": {"max_record_bytes": RECORD_LIMIT}}).start()
        d.wait_ready()
        assert d.proc is not None
        pid = d.proc.pid
        corpus = crafted.corpus(IT_SCHEMA)
        positions: dict[str, str] = {}

        def delivered(kind: str):
            def report(err, msg):
                assert err is None, err
                positions[f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"] = kind

            return report

        producer = Producer({"bootstrap.servers": it_erp.bootstrap, "message.max.bytes": 1_000_000})
        ids: list[int] = []
        for n, (kind, (key, value)) in enumerate(corpus.items()):
            producer.produce(ORDER_TOPIC, key=key, value=value, on_delivery=delivered(kind))
            if n % 4 == 0:
                producer.flush(30)
                ids.append(w.create_order())  # a real confirmation between crafted records
        producer.flush(30)
        ids.append(w.create_order())
        assert len(positions) == len(corpus)

        w.wait_issued(ids, timeout=120)
        deadline = time.monotonic() + 60
        letters: list[dict] = []
        while time.monotonic() < deadline:
            letters = dlq_list(d.config_path)
            if {x["source"] for x in letters} >= set(positions):
                break
            time.sleep(2)
        by_source = {x["source"]: x for x in letters}
        missing = sorted(kind for pos, kind in positions.items() if pos not in by_source)
        assert not missing, f"not dead-lettered: {missing}"
        for pos, kind in positions.items():
            letter = by_source[pos]
            assert letter["code"] in ("undecodable", "undecided", "undecidable"), (kind, letter)
            assert letter["reason"], kind
            assert letter["value_bytes"] == len(corpus[kind][1] or b""), kind
            assert letter["excerpt"] is not None and len(letter["excerpt"]) <= 130, kind
        assert len(letters) == len(corpus)  # nothing else: valid orders never dead-lettered

        # the daemon never stopped, and counts the dead letters by reason
        assert d.alive and d.proc.pid == pid
        metrics = d.metrics()
        assert (
            'syncd_dead_letters_total{reason="undecodable"' in metrics
            or 'reason="undecodable"' in metrics
        )
        text = subprocess.run(
            [sys.executable, "-m", "syncd", "dlq", "list", "-c", str(d.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert f"{len(corpus)} dead letter(s) shown" in text
        assert "[undecodable] key.id: decimal scale -999999999 is outside" in text
        w.verdict(issued=ids)
        assert "Traceback" not in d.output()
