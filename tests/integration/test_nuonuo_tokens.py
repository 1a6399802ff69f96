"""Nuonuo access tokens shared by a fleet: the real PostgreSQL and the sandbox's token
endpoint, which counts every fetch.

The verdicts do not depend on timing: however the threads and processes interleave,
the ledger's row lock allows one fetch, and every caller must end up with that token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from syncd.commands.sandbox import DEV_APP_KEY, DEV_APP_SECRET
from syncd.issuers.base import NeedsHuman, NotFound
from syncd.issuers.nuonuo import NuonuoIssuer, NuonuoIssuerSettings
from syncd.issuers.tokens import Grant
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.ledger.tokens import LedgerTokenStore
from tests.integration.sandbox_process import SandboxProcess

pytestmark = pytest.mark.integration

SERVER = os.environ.get(
    "SYNCD_TEST_PG",
    f"postgresql+psycopg://postgres@127.0.0.1:{os.environ.get('SYNCD_PG_PORT', '15432')}",
)
DB = "nuonuo_tokens_test"
URL = f"{SERVER}/{DB}"
SELLER = "91310115MA1K4PLN89"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{DB}"'))
    except DBAPIError as exc:  # pragma: no cover - environment problem, say so clearly
        pytest.fail(f"PostgreSQL of the local stack not reachable at {SERVER}: {exc}")
    upgrade(URL)
    yield URL
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("nuonuo") / "sandbox.db"
    process = SandboxProcess(store=store, dialect="nuonuo", issue_delay=0.05).start()
    try:
        yield process
    finally:
        process.stop()


def settings(sandbox: SandboxProcess, **changes: Any) -> NuonuoIssuerSettings:
    values: dict[str, Any] = {
        "base_url": sandbox.url,
        "app_key": DEV_APP_KEY,
        "app_secret": DEV_APP_SECRET,
        "seller_tax_id": SELLER,
        "read_timeout": 10.0,
    }
    values.update(changes)
    return NuonuoIssuerSettings.model_validate(values)


def token_stats(sandbox: SandboxProcess) -> dict[str, dict[str, int]]:
    response = sandbox.control("GET", "/_sandbox/tokens")
    response.raise_for_status()
    return dict(response.json()["apps"])


def fetches(sandbox: SandboxProcess, app_key: str = DEV_APP_KEY) -> int:
    return token_stats(sandbox).get(app_key, {}).get("fetches", 0)


# A replica: its own process, engine, store and client, asking once.
REPLICA = """
import sys
from syncd.issuers.nuonuo import NuonuoIssuer, NuonuoIssuerSettings
from syncd.ledger.engine import ledger_engine
from syncd.ledger.tokens import LedgerTokenStore
url, base, key, secret, seller, serial = sys.argv[1:]
engine = ledger_engine(url, pool_size=2)
issuer = NuonuoIssuer(
    NuonuoIssuerSettings(base_url=base, app_key=key, app_secret=secret, seller_tax_id=seller),
    token_store=LedgerTokenStore(engine),
)
print(type(issuer.query(serial)).__name__)
issuer.close()
engine.dispose()
"""


def test_many_threads_and_processes_cause_one_fetch_then_one_refresh(
    database: str, sandbox: SandboxProcess
) -> None:
    engine = ledger_engine(database, pool_size=20)
    try:
        # 12 threads, each with its own store and client (as separate replicas would be).
        barrier = threading.Barrier(12)
        results: list[object] = []

        def replica() -> None:
            issuer = NuonuoIssuer(settings(sandbox), token_store=LedgerTokenStore(engine))
            barrier.wait(timeout=30)
            results.append(issuer.query("NEVERSUBMITTED01"))
            issuer.close()

        threads = [threading.Thread(target=replica) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [type(r) for r in results] == [NotFound] * 12
        assert fetches(sandbox) == 1

        # The platform drops every token: the fleet notices and refreshes once.
        sandbox.control("POST", "/_sandbox/tokens/expire").raise_for_status()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    REPLICA,
                    database,
                    sandbox.url,
                    DEV_APP_KEY,
                    DEV_APP_SECRET,
                    SELLER,
                    f"NEVERSUBMITTED{i:02d}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                cwd=REPO,
            )
            for i in range(4)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outputs
        assert [o[0].decode().strip() for o in outputs] == ["NotFound"] * 4
        assert fetches(sandbox) == 2
        assert LedgerTokenStore(engine).fetches(DEV_APP_KEY) == 2

        # Refresh before expiry: a token with less than the margin left is replaced.
        store = LedgerTokenStore(engine)
        issuer = NuonuoIssuer(settings(sandbox), token_store=store)
        later = store.token(
            DEV_APP_KEY,
            issuer._fetch_token,
            refresh_margin=3600,
            refusal_hold=900,
            now=time.time() + 86400 - 1800,
        )
        assert isinstance(later, Grant)
        assert fetches(sandbox) == 3
        issuer.close()
    finally:
        engine.dispose()


def test_refused_credentials_are_needs_human_and_asked_once(
    database: str, sandbox: SandboxProcess
) -> None:
    engine = ledger_engine(database, pool_size=10)
    try:
        results: list[object] = []

        def replica() -> None:
            issuer = NuonuoIssuer(
                settings(sandbox, app_key="unknown-app"), token_store=LedgerTokenStore(engine)
            )
            results.append(issuer.query("ANY0000001"))
            issuer.close()

        threads = [threading.Thread(target=replica) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 8
        assert all(isinstance(r, NeedsHuman) for r in results)
        assert {r.reason.code for r in results if isinstance(r, NeedsHuman)} == {"TOKEN_REFUSED"}
        assert token_stats(sandbox)["unknown-app"] == {"fetches": 0, "asked": 1}
    finally:
        engine.dispose()


def test_the_token_limit_is_enforced_by_the_sandbox(tmp_path: Path) -> None:
    sb = SandboxProcess(
        store=tmp_path / "limit.db", dialect="nuonuo", extra_args=("--token-limit", "2")
    ).start()
    try:
        form = {
            "client_id": DEV_APP_KEY,
            "client_secret": DEV_APP_SECRET,
            "grant_type": "client_credentials",
        }
        answers = [httpx.post(f"{sb.url}/accessToken", data=form, timeout=5) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 400]
        assert answers[2].json()["error"] == "070306"
        assert answers[0].json()["expires_in"] == 86400
    finally:
        sb.stop()
