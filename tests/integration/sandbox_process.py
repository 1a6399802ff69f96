"""Run the real `syncd sandbox` process for integration tests and benchmarks.

The sandbox is started exactly as an operator would (`python -m syncd sandbox`)
on a free port with a temporary store, and driven through syncd's own client.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.issuers.sandbox import SandboxIssuer, SandboxIssuerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SandboxProcess:
    store: Path
    port: int = field(default_factory=free_port)
    issue_delay: float = 0.05
    dialect: str = "idempotent"
    extra_args: Sequence[str] = ()
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: serve HTTPS with this certificate and key (`--tls-cert`, `--tls-key`), trusted by
    #: the control-plane client through `tls_ca`
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True

    def start(self) -> SandboxProcess:
        cmd = [
            sys.executable,
            "-m",
            "syncd",
            "sandbox",
            "--port",
            str(self.port),
            "--store",
            str(self.store),
            "--issue-delay",
            str(self.issue_delay),
            "--dialect",
            self.dialect,
            *self.extra_args,
        ]
        if self.tls_cert is not None and self.tls_key is not None:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        self.log = self.store.with_suffix(".log")
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        out.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{self.url}/health", timeout=0.5, verify=self._verify())
                if health.status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"sandbox did not come up: {self.output()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> SandboxProcess:
        self.stop(sig)
        return self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    # --- the unsigned control plane -------------------------------------------------

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", timeout=5, verify=self._verify(), **kwargs
        )

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        response = self.control("POST", "/_sandbox/faults", json=faults)
        response.raise_for_status()
        return dict(response.json())

    def reset_faults(self) -> None:
        self.control("DELETE", "/_sandbox/faults").raise_for_status()

    def issued(self) -> list[dict[str, Any]]:
        response = self.control("GET", "/_sandbox/invoices")
        response.raise_for_status()
        return list(response.json()["invoices"])

    def requests(self, since_id: int = 0) -> list[dict[str, Any]]:
        response = self.control("GET", "/_sandbox/requests", params={"since_id": since_id})
        response.raise_for_status()
        return list(response.json()["requests"])

    def decide_red_form(self, serial: str, decision: str = "confirm") -> httpx.Response:
        return self.control("POST", f"/_sandbox/red-forms/{serial}/{decision}")

    # --- syncd's client ---------------------------------------------------------------

    def settings(self, **overrides: Any) -> SandboxIssuerSettings:
        data: dict[str, Any] = {
            "base_url": self.url,
            "app_key": DEV_APP_KEY,
            "app_secret": DEV_APP_SECRET,
            "read_timeout": 5.0,
        }
        data.update(overrides)
        return SandboxIssuerSettings.model_validate(data)

    def client(self, **overrides: Any) -> SandboxIssuer:
        return SandboxIssuer(self.settings(**overrides))


@contextlib.contextmanager
def running_sandbox(store: Path, **kwargs: Any) -> Iterator[SandboxProcess]:
    process = SandboxProcess(store=store, **kwargs).start()
    try:
        yield process
    finally:
        process.stop()
