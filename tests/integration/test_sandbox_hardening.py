"""The sandbox against hostile or broken clients: clear 4xx answers, bounded connections.

A malformed auth header is a 401, a signed body nested beyond the limit a 422, a body over
`--max-body-bytes` a 413 (decided from Content-Length before reading it, or while reading
a chunked one), and a connection that does not deliver a request within
`--request-timeout` is closed -- never a 500, never a connection held forever. The real
`syncd sandbox` process, over raw sockets where httpx would be too polite.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.issuers import signing
from tests.integration.sandbox_process import SandboxProcess, running_sandbox

LIMIT = 64 * 1024
REQUEST_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("hardening") / "sandbox.db"
    args = ["--max-body-bytes", str(LIMIT), "--request-timeout", str(REQUEST_TIMEOUT)]
    with running_sandbox(store, extra_args=args) as process:
        yield process


def signed(body: bytes, **override: str) -> dict[str, str]:
    headers = signing.auth_headers(
        DEV_APP_KEY, SecretStr(DEV_APP_SECRET), "POST", "/v1/invoices", body
    )
    return {**headers, **override, "Content-Type": "application/json"}


@pytest.mark.parametrize("timestamp", ["²³", "1" * 5000, "-5", "", "12.5"])
def test_a_malformed_timestamp_is_401(sandbox: SandboxProcess, timestamp: str) -> None:
    body = b"{}"
    headers = {k.encode(): v.encode() for k, v in signed(body).items()}
    headers[b"X-Timestamp"] = timestamp.encode("latin-1")  # "²" goes on the wire as one byte
    reply = httpx.post(f"{sandbox.url}/v1/invoices", content=body, headers=headers, timeout=5)
    assert reply.status_code == 401, reply.text
    assert reply.json()["code"] in ("INVALID_TIMESTAMP", "MISSING_AUTH_HEADERS")


@pytest.mark.parametrize("depth", [40, 5000, 200000])
def test_a_signed_deeply_nested_body_is_422(sandbox: SandboxProcess, depth: int) -> None:
    body = b'{"serial":' * depth + b"1" + b"}" * depth
    if len(body) > LIMIT:
        body = b"[" * (LIMIT // 2 - 1) + b"]" * (LIMIT // 2 - 1)
    reply = httpx.post(f"{sandbox.url}/v1/invoices", content=body, headers=signed(body), timeout=5)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "NESTING_TOO_DEEP"


def _exchange(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_body_announced_over_the_limit_is_413_unread(sandbox: SandboxProcess) -> None:
    head = (
        "POST /v1/invoices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {20 * 1024 * 1024}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _exchange(sandbox.port, head + b"{" * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"BODY_TOO_LARGE" in answer
    assert time.monotonic() - started < 5  # answered, not waiting for 20 MB


def test_a_chunked_body_over_the_limit_is_413(sandbox: SandboxProcess) -> None:
    chunk = b"x" * 16384
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    head = b"POST /v1/invoices HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = _exchange(sandbox.port, head + framed + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def _closed_after(port: int, send: bytes = b"", dribble: bool = False) -> float:
    """Seconds until the sandbox closes a connection that never completes a request."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(send)
        while True:
            if dribble:  # one header byte every 0.2 s: never a whole request
                sock.settimeout(0.2)
                try:
                    if sock.recv(1024) == b"":
                        break
                except TimeoutError:
                    try:
                        sock.sendall(b"a")
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    continue
                except ConnectionResetError:
                    break
            else:
                try:
                    if sock.recv(1024) == b"":
                        break
                except ConnectionResetError:
                    break
    return time.monotonic() - started


def test_idle_and_slow_connections_are_closed(sandbox: SandboxProcess) -> None:
    assert _closed_after(sandbox.port) < REQUEST_TIMEOUT + 5
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    assert _closed_after(sandbox.port, head, dribble=True) < REQUEST_TIMEOUT + 5
    # A well-behaved client is not hurt: a request answered, the next on the same connection.
    with httpx.Client(timeout=5) as client:
        assert client.get(f"{sandbox.url}/health").status_code == 200
        assert client.get(f"{sandbox.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "not a readable"),
    ],
)
def test_bad_tls_flags_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "sandbox", "--store", str(tmp_path / "s.db"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
