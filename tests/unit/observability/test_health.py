import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from syncd.observability.health import HealthServer, Heartbeat
from syncd.observability.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, ctype, body = get(url)
    assert ctype == "application/json"
    return status, json.loads(body)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[HealthServer]:
    metrics = Metrics(CollectorRegistry())
    srv = HealthServer(
        metrics.registry,
        host="127.0.0.1",
        port=0,
        heartbeat=Heartbeat(clock),
        heartbeat_timeout=30,
        on_beat=metrics.heartbeat,
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_binds_an_ephemeral_port(server: HealthServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_metrics_endpoint(server: HealthServer) -> None:
    server.beat()
    status, ctype, body = get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert b"syncd_build_info" in body
    assert b"syncd_loop_heartbeat_timestamp_seconds" in body


def test_liveness_follows_the_heartbeat(server: HealthServer, clock: FakeClock) -> None:
    status, body = get_json(server.url + "/healthz")
    assert status == 200 and body["status"] == "ok"
    clock.now += 31  # the loop is blocked: no beat for longer than the threshold
    status, body = get_json(server.url + "/healthz")
    assert status == 503 and body["reason"] == "main loop heartbeat is stale"
    assert body["heartbeat_age_seconds"] == 31
    server.beat()  # an empty poll ticks too
    assert get_json(server.url + "/healthz")[0] == 200


def test_readiness_checks_and_shutdown(server: HealthServer) -> None:
    state = {"db": False}
    server.add_readiness_check("config", lambda: True)
    server.add_readiness_check("database", lambda: (state["db"], "database unreachable"))
    status, body = get_json(server.url + "/readyz")
    assert status == 503
    assert body["checks"]["database"] == {"ok": False, "reason": "database unreachable"}
    assert "database" in body["reason"]
    state["db"] = True
    status, body = get_json(server.url + "/readyz")
    assert status == 200 and body["status"] == "ready"
    # A passing check shows no reason, though the check returns its failure text each time.
    assert body["checks"] == {"config": {"ok": True}, "database": {"ok": True}}
    assert "reason" not in body
    server.begin_shutdown()
    status, body = get_json(server.url + "/readyz")
    assert status == 503 and body["reason"] == "shutting down"
    # liveness is unaffected by shutdown: the pod must not be killed while draining
    assert get_json(server.url + "/healthz")[0] == 200


def test_a_raising_check_is_not_ready_and_leaks_nothing(server: HealthServer) -> None:
    def broken() -> bool:
        raise RuntimeError("postgresql://syncd:hunter2@db/erp refused")

    server.add_readiness_check("database", broken)
    status, body = get_json(server.url + "/readyz")
    assert status == 503
    assert "hunter2" not in json.dumps(body)
    assert body["checks"]["database"]["reason"] == "check raised RuntimeError"
    server.remove_readiness_check("database")
    assert get_json(server.url + "/readyz")[0] == 200


def test_unknown_path_is_404(server: HealthServer) -> None:
    assert get(server.url + "/nope")[0] == 404


def test_stop_and_restart_are_safe() -> None:
    srv = HealthServer(CollectorRegistry(), host="127.0.0.1", port=0)
    srv.stop()  # not started: no-op
    srv.start()
    srv.start()  # idempotent
    port = srv.port
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    srv.stop()
    srv.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_invalid_threshold() -> None:
    with pytest.raises(ValueError):
        HealthServer(CollectorRegistry(), heartbeat_timeout=0)
