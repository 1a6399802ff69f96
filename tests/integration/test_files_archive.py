"""The archive of invoice files on the real PostgreSQL and the real sandbox process.

The sandbox serves a real PDF (and XML) per issued invoice; `file_delay_ms` makes a
download slow in a known way, so `syncd files fetch` can be killed with SIGKILL half-way
through one: no partial file under an archive name, no duplicate, the file completed
after the restart with the SHA-256 the platform's bytes have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from syncd.identity import DocumentIdentity
from syncd.issuers.base import Issued
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from syncd.observability.metrics import Metrics
from syncd.pipeline.files import FileArchiver
from tests import sandbox_samples as samples
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.integration.sandbox_process import SandboxProcess
from tests.integration.stack import REPO_DIR

pytestmark = pytest.mark.integration

S = DocumentState
TIMEOUT = 8.0  # files.timeout_seconds: a claim lasts 18 s


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    process = SandboxProcess(store=tmp_path / "sandbox.db").start()
    yield process
    process.stop()


def _env(stack: Any, tmp_path: Path, sandbox: SandboxProcess, **files: Any) -> OpsEnv:
    return create_env(
        stack,
        tmp_path,
        issuer={"base_url": sandbox.url},
        files={"timeout_seconds": TIMEOUT, "poll_seconds": 0.2, "max_attempts": 5, **files},
    )


@pytest.fixture
def directory_env(stack: Any, tmp_path: Path, sandbox: SandboxProcess) -> Iterator[OpsEnv]:
    e = _env(stack, tmp_path, sandbox, archive="directory", directory=str(tmp_path / "archive"))
    yield e
    drop_env(e)


def _issue(env: OpsEnv, sandbox: SandboxProcess, n: int) -> tuple[str, Issued]:
    """An invoice issued at the sandbox and recorded ISSUED in the ledger."""
    doc = samples.invoice()
    with sandbox.client() as client:
        client.issue(doc)
        result = client.wait_issued(doc["serial"])
    assert isinstance(result, Issued)
    eng = env.ledger()
    with eng.begin() as c:
        row, _ = repo.ensure_document(
            c,
            DocumentIdentity.of("sales_order", "erp.sales_order", {"id": n}),
            doc["serial"],
            actor="t",
            state=S.READY,
            payload=doc,
        )
        repo.transition(
            c,
            row.id,
            S.READY,
            S.ISSUED,
            actor="t",
            invoice_no=result.invoice_no,
            issued_at=datetime.now(UTC),
        )
    eng.dispose()
    return doc["serial"], result


def _rows(env: OpsEnv, invoice_no: str) -> dict[str, dict[str, Any]]:
    eng = env.erp()
    with eng.connect() as c:
        found = c.execute(
            text(
                "SELECT format, state, sha256, size, location, attempts "
                "FROM syncd_ops.invoice_files WHERE invoice_no = :n"
            ),
            {"n": invoice_no},
        ).mappings()
        rows = {m["format"]: dict(m) for m in found}
    eng.dispose()
    return rows


def _fetch_command(env: OpsEnv) -> list[str]:
    return [sys.executable, "-m", "syncd", "files", "fetch", "-c", str(env.config_path)]


def _wait(condition: Any, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_mid_download_leaves_no_partial_and_no_duplicate(
    directory_env: OpsEnv, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    env = directory_env
    archive = tmp_path / "archive"
    _, issued = _issue(env, sandbox, 1)
    number = issued.invoice_no
    platform_pdf = httpx.get(issued.files["pdf"], timeout=30).content
    assert platform_pdf.startswith(b"%PDF-")
    # ten pieces, 0.6 s before each: six seconds for one file
    sandbox.set_faults(file_delay_ms=600)
    partial = archive / ".partial" / f"{number}.pdf.part"
    proc = subprocess.Popen(
        _fetch_command(env), cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        try:
            _wait(lambda: partial.exists() and partial.stat().st_size > 0, 60, "a partial")
        except AssertionError:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"no partial download: {err.decode()[-2000:]}") from None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 < partial.stat().st_size < len(platform_pdf)
    assert not list(archive.glob("[0-9]*/*/*")), "nothing under an archive name yet"
    assert _rows(env, number)["pdf"]["state"] == "PENDING"

    sandbox.reset_faults()

    def fetched() -> bool:
        r = subprocess.run(_fetch_command(env), cwd=REPO_DIR, capture_output=True, text=True)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return all(row["state"] != "PENDING" for row in _rows(env, number).values())

    _wait(fetched, 90, "the files after the restart")
    rows = _rows(env, number)
    assert {f: r["state"] for f, r in rows.items()} == {
        "pdf": "DONE",
        "xml": "DONE",
        "ofd": "UNAVAILABLE",  # the sandbox offers no OFD
    }
    assert rows["pdf"]["attempts"] >= 2
    files = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    assert [f.rsplit("/", 1)[-1] for f in files] == [f"{number}.pdf", f"{number}.xml"]
    assert not partial.exists()
    stored = (archive / rows["pdf"]["location"]).read_bytes()
    assert stored == platform_pdf
    assert hashlib.sha256(stored).hexdigest() == rows["pdf"]["sha256"]
    assert rows["pdf"]["size"] == len(platform_pdf)

    out = tmp_path / "copy.pdf"
    r = env.syncd("files", "get", "-c", str(env.config_path), "--invoice", number,
                  "--format", "pdf", "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == platform_pdf
    r = env.syncd(
        "files", "get", "-c", str(env.config_path), "--invoice", number, "--format", "ofd"
    )
    assert r.returncode == 1 and "unavailable" in r.stderr
    r = env.syncd(
        "files", "get", "-c", str(env.config_path), "--invoice", "9" * 20, "--format", "pdf"
    )
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
    (archive / rows["xml"]["location"]).write_bytes(b"<tampered/>")
    r = env.syncd(
        "files", "get", "-c", str(env.config_path), "--invoice", number, "--format", "xml"
    )
    assert r.returncode == 8 and "SHA-256" in r.stderr and "Traceback" not in r.stderr

    eng = env.erp()
    with eng.connect() as c:
        reasons = list(
            c.execute(
                text("SELECT reason FROM syncd_ops.audit WHERE reason LIKE '%file%'")
            ).scalars()
        )
    eng.dispose()
    assert sorted(reasons) == sorted(
        ["pdf file archived", "xml file archived", "ofd file not offered by the platform"]
    )


def test_database_archive_and_the_metric(
    stack: Any, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    env = _env(stack, tmp_path, sandbox, archive="database", formats=["pdf", "xml"])
    try:
        _, issued = _issue(env, sandbox, 1)
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        eng = env.ledger()
        with sandbox.client() as issuer:
            archiver = FileArchiver(
                env.config, engine=eng, issuer=issuer, owner="t", metrics=metrics
            )
            archiver.run_once()  # queues both files, archives the first
            assert registry.get_sample_value("syncd_invoice_files", {"state": "pending"}) == 1
            while archiver.run_once():
                pass
        eng.dispose()
        assert registry.get_sample_value("syncd_invoice_files", {"state": "pending"}) == 0
        assert registry.get_sample_value("syncd_invoice_files", {"state": "failed"}) == 0
        assert (
            registry.get_sample_value("syncd_invoice_files_archived_total", {"format": "pdf"}) == 1
        )
        out = tmp_path / "from-db.pdf"
        r = env.syncd("files", "get", "-c", str(env.config_path), "--invoice", issued.invoice_no,
                      "--format", "pdf", "--output", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == httpx.get(issued.files["pdf"], timeout=30).content
        r = env.syncd("files", "status", "-c", str(env.config_path), "--json")
        assert json.loads(r.stdout)["files"] == {
            "pending": 0,
            "done": 2,
            "failed": 0,
            "unavailable": 0,
        }
    finally:
        drop_env(env)


def test_a_file_the_platform_refuses_is_retried_then_failed(
    directory_env: OpsEnv, sandbox: SandboxProcess
) -> None:
    env = directory_env
    _, issued = _issue(env, sandbox, 1)
    eng = env.ledger()
    with sandbox.client() as issuer:
        archiver = FileArchiver(env.config, engine=eng, issuer=issuer, owner="t")
        # a link whose token is wrong: the platform answers 401 every time
        real_query = issuer.query

        def forged(serial: str) -> Any:
            result = real_query(serial)
            assert isinstance(result, Issued)
            files = {k: v.split("?")[0] + "?token=" + "0" * 32 for k, v in result.files.items()}
            return dataclasses.replace(result, files=files)

        issuer.query = forged  # type: ignore[method-assign]
        with eng.begin() as c:
            c.execute(text("UPDATE syncd_ops.invoice_files SET attempts = 0"))
        for _ in range(40):
            archiver.run_once()
            with eng.begin() as c:  # no waiting for the backoff in a test
                c.execute(text("UPDATE syncd_ops.invoice_files SET next_attempt_at = now()"))
            if all(r["state"] != "PENDING" for r in _rows(env, issued.invoice_no).values()):
                break
    eng.dispose()
    rows = _rows(env, issued.invoice_no)
    assert rows["pdf"]["state"] == "FAILED" and rows["pdf"]["attempts"] == 5
    root = Path(str(env.config.files.directory))
    assert not [p for p in root.rglob("*") if p.is_file()], "no file, not even a partial one"


def test_the_daemon_archives_the_files_of_what_it_issues(it_erp: Any, tmp_path: Path) -> None:
    from tests.integration.daemon_harness import world

    archive = tmp_path / "daemon-archive"
    files = {"archive": "directory", "directory": str(archive), "poll_seconds": 0.2}
    with world(it_erp, tmp_path) as w:
        d = w.daemon(sections={"files": files}).start()
        d.wait_ready()
        ids = [w.create_order() for _ in range(2)]
        numbers = [r["invoice_no"] for r in w.wait_issued(ids).values()]
        end = time.monotonic() + 90
        while len(list(archive.glob("[0-9]*/*/*.pdf"))) < 2:
            assert time.monotonic() < end, d.output()[-3000:]
            time.sleep(0.2)
        pdfs = sorted(p.name for p in archive.glob("[0-9]*/*/*.pdf"))
        assert pdfs == sorted(f"{n}.pdf" for n in numbers)
        _wait(lambda: 'syncd_invoice_files{state="pending"} 0.0' in d.metrics(), 60, "metric")
        assert d.terminate() == 0
