"""How many issue+query requests per second the sandbox platform serves.

Starts a real `syncd sandbox` process (zero latency, zero issue delay, fresh
store) and drives it with syncd's own `SandboxIssuer` from several load
processes x threads, each doing issue -> query pairs for a fixed time. Every
request is signed, nonce-checked, rule-checked, and logged to SQLite, as in
production use.

    .venv/bin/python bench/sandbox_bench.py [--seconds 10] [--procs 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd.issuers.base import Issued, Processing
from tests.integration.sandbox_process import SandboxProcess
from tests.sandbox_samples import invoice


def _load(url: str, seconds: float, threads: int, worker: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
    from syncd.issuers.sandbox import SandboxIssuer, SandboxIssuerSettings

    settings = SandboxIssuerSettings(
        base_url=url,
        app_key=DEV_APP_KEY,
        app_secret=DEV_APP_SECRET,
        max_connections=threads,
        max_keepalive_connections=threads,
    )
    client = SandboxIssuer(settings)
    template = invoice("BENCH0000000000")
    counts = {"ok": 0, "bad": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(tid: int) -> None:
        n = ok = bad = 0
        while time.monotonic() < deadline:
            n += 1
            doc = {**template, "serial": f"B{worker:02d}{tid:02d}{n:010d}"}
            first = client.issue(doc)
            second = client.query(doc["serial"])
            for result in (first, second):
                if isinstance(result, (Processing, Issued)):
                    ok += 1
                else:
                    bad += 1
        with lock:
            counts["ok"] += ok
            counts["bad"] += bad

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    client.close()
    out.put(counts)


def _raw_pair(host: str, serial: str, template: bytes) -> tuple[bytes, bytes]:
    """A signed (issue, query) request pair as raw HTTP/1.1 bytes."""
    from pydantic import SecretStr

    from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
    from syncd.issuers.signing import auth_headers

    body = template.replace(b"BENCH0000000000", serial.encode())
    out = []
    for method, path, content in (
        ("POST", "/v1/invoices", body),
        ("GET", f"/v1/invoices/{serial}", b""),
    ):
        headers = auth_headers(DEV_APP_KEY, SecretStr(DEV_APP_SECRET), method, path, content)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {host}",
            f"Content-Length: {len(content)}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + content)
    return out[0], out[1]


async def _raw_connection(host: str, port: int, prefix: str, deadline: float) -> tuple[int, int]:
    import asyncio

    template = json.dumps(invoice("BENCH0000000000"), separators=(",", ":")).encode()
    reader, writer = await asyncio.open_connection(host, port)
    ok = bad = n = 0
    while time.monotonic() < deadline:
        n += 1
        for request in _raw_pair(f"{host}:{port}", f"{prefix}{n:010d}", template):
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status in (200, 202):
                ok += 1
            else:
                bad += 1
    writer.close()
    return ok, bad


def _raw_load(
    url: str, seconds: float, conns: int, worker: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    import asyncio

    host, port = url.split("//", 1)[1].split(":")

    async def go() -> list[tuple[int, int]]:
        deadline = time.monotonic() + seconds
        return await asyncio.gather(
            *(
                _raw_connection(host, int(port), f"R{worker:02d}{c:03d}", deadline)
                for c in range(conns)
            )
        )

    results = asyncio.run(go())
    out.put({"ok": sum(r[0] for r in results), "bad": sum(r[1] for r in results)})


def _cpu_seconds(sandbox: SandboxProcess) -> float:
    """utime + stime of the sandbox process (Linux /proc), 0 when unknown."""
    if sandbox.proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{sandbox.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=2, help="load-generating processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per load process")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="pre-signed requests over raw keep-alive sockets (measures the "
        "server, not syncd's client); --threads = connections per process",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="use this running sandbox (dev key/secret) instead of starting one",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sandbox = SandboxProcess(store=Path(tmp) / "bench.db", issue_delay=0.0)
        if args.url:
            sandbox.port = int(args.url.rsplit(":", 1)[1])
        else:
            sandbox.start()
        try:
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            procs = [
                multiprocessing.Process(
                    target=_raw_load if args.raw else _load,
                    args=(sandbox.url, args.seconds, args.threads, w, queue),
                )
                for w in range(args.procs)
            ]
            cpu_before = _cpu_seconds(sandbox)
            started = time.monotonic()
            for p in procs:
                p.start()
            totals = {"ok": 0, "bad": 0}
            for _ in procs:
                got = queue.get(timeout=args.seconds + 120)
                totals["ok"] += got["ok"]
                totals["bad"] += got["bad"]
            for p in procs:
                p.join()
            elapsed = time.monotonic() - started
            cpu_used = _cpu_seconds(sandbox) - cpu_before
            issued = len(sandbox.issued())
        finally:
            sandbox.stop()
    requests = totals["ok"] + totals["bad"]
    report = {
        "benchmark": "sandbox issue+query",
        "requests": requests,
        "failed": totals["bad"],
        "seconds": round(elapsed, 2),
        "requests_per_second": round(requests / elapsed, 1),
        "invoices_issued": issued,
        # what the server itself spent: independent of how busy the machine is
        "server_cpu_ms_per_request": round(cpu_used * 1000 / requests, 3) if requests else None,
        "server_requests_per_cpu_second": round(requests / cpu_used, 1) if cpu_used else None,
        "load": f"{args.procs} procs x {args.threads} "
        + ("raw connections" if args.raw else "SandboxIssuer threads"),
    }
    print(json.dumps(report))
    return 0 if totals["bad"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
