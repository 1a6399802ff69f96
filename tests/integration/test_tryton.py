"""Tryton end to end, through Tryton itself: invoices posted, cancelled and credited with
proteus (the credit through Tryton's own credit wizard) while the real daemon runs and is
killed with SIGKILL once after the posting (dev/tryton_demo.sh, DEMO_KILL9=1), checked for
exactly-once issuance, reversal, the credit note as exactly one red invoice referencing the
credited invoice, and side-table write-back (dev/tryton_summary.py: `result: OK`).

Part of `make test`: Tryton's virtualenv and initialised database are cached under
~/.cache/syncd-tools (dev/tryton.sh); on a clean machine dev/test.sh builds them in the
background while the rest of the suite runs and runs this module last. SYNCD_TRYTON=0 skips it
explicitly (docs/packaged-erp.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.stack import Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("SYNCD_TRYTON") == "0", reason="SYNCD_TRYTON=0"),
]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(pid_file: Path) -> None:
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)


def test_tryton_invoices_are_issued_reversed_and_written_back_once(stack: Stack):
    sandbox, metrics = _free_port(), _free_port()
    env = dict(
        os.environ,
        SYNCD_SANDBOX_PORT=str(sandbox),
        SYNCD_METRICS_PORT=str(metrics),
        DEMO_INVOICES="4",
        DEMO_KILL9="1",
    )
    run_dir = Path(env.get("SYNCD_STACK_DIR", ROOT / ".stack")) / "run"
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "dev" / "tryton_demo.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    finally:
        _stop(run_dir / "syncd-tryton.pid")
        _stop(run_dir / f"sandbox-{sandbox}.pid")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "result: OK" in done.stdout.splitlines()
    assert "blue issued                        4" in done.stdout
    assert "red issued                         1" in done.stdout
    assert "credit notes as red invoices       1" in done.stdout
