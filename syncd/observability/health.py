"""One small HTTP server for `/metrics`, `/healthz` and `/readyz`.

It runs in a daemon thread so a busy or blocked main loop cannot stop Kubernetes from
seeing that it is blocked: liveness is the age of the main loop's heartbeat, which the
loop must refresh on every iteration, empty polls included. Readiness is a set of
named checks the pipeline registers (config loaded, group joined, database reachable)
and turns 503 the moment shutdown begins, so traffic and scalers stop counting on the
replica before it drains.

The server faces the network, so it is bounded: each connection gets a socket timeout
(a half-open or dribbling client is dropped after `socket_timeout` seconds), at most
`max_connections` are served at once (more are closed at once rather than each holding a
thread), and a failed request -- a probe that hung up mid-reply, a broken pipe -- is one
line through syncd's JSON logger (and its redaction), never a raw traceback on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

#: A readiness check returns True/False, or (ok, short reason). The reason says why the
#: check *fails*: it is shown only while the check fails (a check may return its failure
#: text unconditionally). It must not raise, but if it does the exception's type counts as
#: the reason (its text could hold a DSN).
ReadinessCheck = Callable[[], bool | tuple[bool, str]]

DEFAULT_HEARTBEAT_TIMEOUT: Final = 60.0
#: Seconds a connection may take to send its request (and to take the reply).
DEFAULT_SOCKET_TIMEOUT: Final = 10.0
#: Connections served at once (probes and a scraper need a handful).
DEFAULT_MAX_CONNECTIONS: Final = 16


class Heartbeat:
    """The main loop's pulse, on the monotonic clock (wall-clock jumps do not kill pods)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()

    def beat(self) -> None:
        with self._lock:
            self._last = self._clock()

    def age(self) -> float:
        with self._lock:
            return max(0.0, self._clock() - self._last)


class HealthServer:
    """`start()` binds and serves in a background thread; `stop()` shuts it down.

    `port=0` binds an ephemeral port (tests); read it back from `.port`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, not localhost
        port: int = 9400,
        heartbeat: Heartbeat | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        on_beat: Callable[[], None] | None = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        if socket_timeout <= 0 or max_connections < 1:
            raise ValueError("socket_timeout must be positive and max_connections at least 1")
        self.socket_timeout = socket_timeout
        self.max_connections = max_connections
        self.registry = registry
        self.host = host
        self._port = port
        self.heartbeat = heartbeat or Heartbeat()
        self.heartbeat_timeout = heartbeat_timeout
        self._on_beat = on_beat
        self._checks: dict[str, ReadinessCheck] = {}
        self._checks_lock = threading.Lock()
        self._shutting_down = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- API for the pipeline

    def beat(self) -> None:
        """Call once per main-loop iteration."""
        self.heartbeat.beat()
        if self._on_beat is not None:
            self._on_beat()

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        with self._checks_lock:
            self._checks[name] = check

    def remove_readiness_check(self, name: str) -> None:
        with self._checks_lock:
            self._checks.pop(name, None)

    def begin_shutdown(self) -> None:
        """From now on /readyz answers 503 (SIGTERM received)."""
        self._shutting_down.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    # ---------------------------------------------------------------- the answers

    def liveness(self) -> tuple[int, dict[str, Any]]:
        age = self.heartbeat.age()
        body: dict[str, Any] = {
            "heartbeat_age_seconds": round(age, 3),
            "threshold_seconds": self.heartbeat_timeout,
        }
        if age > self.heartbeat_timeout:
            body.update(status="unhealthy", reason="main loop heartbeat is stale")
            return HTTPStatus.SERVICE_UNAVAILABLE, body
        body["status"] = "ok"
        return HTTPStatus.OK, body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        if self._shutting_down.is_set():
            return HTTPStatus.SERVICE_UNAVAILABLE, {
                "status": "not_ready",
                "reason": "shutting down",
            }
        with self._checks_lock:
            checks = dict(self._checks)
        results: dict[str, dict[str, Any]] = {}
        ready = True
        for name, check in sorted(checks.items()):
            try:
                outcome = check()
            except Exception as exc:  # a broken check means "not ready", never a 500
                outcome = (False, f"check raised {type(exc).__name__}")
            ok, reason = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
            entry: dict[str, Any] = {"ok": ok}
            if reason and not ok:  # a passing check has nothing to explain
                entry["reason"] = reason
            results[name] = entry
            ready = ready and ok
        failing = [n for n, r in results.items() if not r["ok"]]
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": results}
        if not ready:
            body["reason"] = "failing checks: " + ", ".join(failing)
            return HTTPStatus.SERVICE_UNAVAILABLE, body
        return HTTPStatus.OK, body

    # ---------------------------------------------------------------- server

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        server = _BoundedServer(
            (self.host, self._port), _handler_for(self), max_connections=self.max_connections
        )
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="syncd-health",
            daemon=True,
        )
        self._thread.start()
        log.info("health server listening", extra={"host": self.host, "port": self.port})

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None


def database_check(engine: Engine, statement_timeout_ms: int = 2000) -> ReadinessCheck:
    """A readiness check: the database answers `SELECT 1` within the timeout.

    The reason names the error class only: driver messages can carry host names and,
    with a badly written DSN, credentials.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    def check() -> tuple[bool, str]:
        try:
            with engine.connect() as conn:
                conn.execute(
                    text("SELECT set_config('statement_timeout', :t, true)"),
                    {"t": f"{int(statement_timeout_ms)}ms"},
                )
                conn.execute(text("SELECT 1"))
                conn.rollback()
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None)
            cause = orig if orig is not None else exc
            return False, f"database unreachable ({type(cause).__name__})"
        return True, ""

    return check


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; errors logged, quietly."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refused += 1
            if self._refused == 1 or self._refused % 100 == 0:
                log.warning(
                    "health server busy: connection closed",
                    extra={"refused_total": self._refused},
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr."""
        error = sys.exc_info()[1]
        gone = isinstance(error, ConnectionError | TimeoutError)
        log.log(
            logging.DEBUG if gone else logging.WARNING,
            "health request failed",
            extra={"error": type(error).__name__ if error else "unknown"},
        )


def _handler_for(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "syncd"
        sys_version = ""
        timeout = owner.socket_timeout  # socketserver sets it on the connection

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(*owner.liveness())
            elif path == "/readyz":
                self._json(*owner.readiness())
            else:
                self._json(
                    HTTPStatus.NOT_FOUND,
                    {"status": "not_found", "paths": ["/metrics", "/healthz", "/readyz"]},
                )

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes hit these every few seconds: keep them out of the logs unless debugging.
            log.debug("health request: " + format, *args)

    return Handler
