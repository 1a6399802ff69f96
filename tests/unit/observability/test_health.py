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


def _bounded(**kwargs: Any) -> HealthServer:
    srv = HealthServer(CollectorRegistry(), host="127.0.0.1", port=0, **kwargs)
    srv.start()
    return srv


def test_half_open_clients_time_out_and_hold_no_more_than_the_thread_bound() -> None:
    """50 connections that never finish their request: at most `max_connections` threads
    serve them, each is dropped after `socket_timeout`, and probes are answered again."""
    import socket
    import threading
    import time

    srv = _bounded(socket_timeout=0.5, max_connections=4)
    before = threading.active_count()
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /heal")  # never the rest of the request line
            socks.append(s)
        time.sleep(0.2)
        assert threading.active_count() - before <= 4
        deadline = time.monotonic() + 20
        while True:  # the held slots free themselves after the socket timeout
            try:
                if get(f"{srv.url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "health server never answered again"
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_a_client_gone_mid_reply_is_a_log_line_not_a_traceback(
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    # Only pytest's capture handlers: a handler an earlier test left on a stream that is
    # closed by now would print its own "Logging error" traceback to stderr.
    for name in ("", "syncd", "syncd.observability", "syncd.observability.health"):
        logger = logging.getLogger(name)
        kept = [h for h in logger.handlers if type(h).__module__.startswith("_pytest")]
        monkeypatch.setattr(logger, "handlers", kept)

    srv = _bounded()
    try:
        server = srv._server
        assert server is not None
        caplog.set_level(logging.DEBUG, logger="syncd.observability.health")
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
        try:
            raise RuntimeError("unexpected")
        except RuntimeError:
            server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    finally:
        srv.stop()
    assert "Traceback" not in capfd.readouterr().err
    records = [r for r in caplog.records if r.getMessage() == "health request failed"]
    assert [(r.levelname, r.__dict__["error"]) for r in records] == [
        ("DEBUG", "BrokenPipeError"),
        ("WARNING", "RuntimeError"),
    ]
    assert all(r.exc_info is None for r in records)


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError, match="socket_timeout"):
        HealthServer(CollectorRegistry(), socket_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        HealthServer(CollectorRegistry(), max_connections=0)
