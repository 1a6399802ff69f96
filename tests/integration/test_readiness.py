"""`/readyz` of a real running daemon: the body an SRE curls.

A passing check is `{"ok": true}` and nothing more (no reason to confuse a reader); a
failing one carries its reason, and the body says which checks fail. The failure is made
deterministic by starting the daemon against a database port nothing listens on, while
Kafka is up: the group joins, the first claim of its partitions fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.daemon_harness import Daemon, world
from tests.integration.sandbox_process import free_port
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return response.status_code, response.json()


def test_readyz_of_a_healthy_daemon_has_no_reasons(it_erp: Stack, tmp_path: Path) -> None:
    with world(it_erp, tmp_path) as w:
        daemon = w.daemon().start()
        daemon.wait_ready()
        status, body = _readyz(daemon.metrics_port)
        assert status == 200, body
        assert body == {
            "status": "ready",
            "checks": {"config": {"ok": True}, "database": {"ok": True}, "group": {"ok": True}},
        }
        assert daemon.terminate() == 0


def test_readyz_names_the_failing_check_and_only_its_reason(it_erp: Stack, tmp_path: Path) -> None:
    with world(it_erp, tmp_path) as w:
        path = w.config_file()
        data = yaml.safe_load(path.read_text())
        dead = free_port()
        data["database"]["dsn"] = data["database"]["dsn"].replace(
            f":{it_erp.pg_port}/", f":{dead}/"
        )
        assert f":{dead}/" in data["database"]["dsn"]
        data["database"]["connect_timeout_seconds"] = 2
        path.write_text(yaml.safe_dump(data))
        daemon = Daemon(path, tmp_path / "syncd-nodb.log", data["metrics"]["port"])
        w.daemons.append(daemon)
        daemon.start()
        deadline = time.monotonic() + 90
        seen: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            assert daemon.alive, daemon.output()[-3000:]
            try:
                seen = _readyz(daemon.metrics_port)
            except httpx.HTTPError:
                seen = None
            # both settle on their own: the database check fails at once, the group
            # joins when the consumer's first rebalance completes (timing varies)
            checks = seen[1]["checks"] if seen is not None else {}
            if (
                not checks.get("database", {"ok": True})["ok"]
                and checks.get("group", {"ok": False})["ok"]
            ):
                break
            time.sleep(0.3)
        assert seen is not None, daemon.output()[-3000:]
        status, body = seen
        assert status == 503, body
        checks = body["checks"]
        assert checks["database"] == {"ok": False, "reason": "ERP database unreachable"}
        assert checks["config"] == {"ok": True}
        assert checks["group"] == {"ok": True}  # Kafka is up: the group joined
        assert body["status"] == "not_ready"
        assert body["reason"] == "failing checks: database"
