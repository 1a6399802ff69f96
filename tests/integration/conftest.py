"""Fixtures for integration tests: the real local stack (PostgreSQL, Kafka, Connect + Debezium).

Every test module here is an integration test; the stack is brought up once per session with
`dev/stack.sh up` (a no-op when it already runs) and left running -- `make test` / CI stop it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from tests.integration.stack import Stack, ensure_stack_up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Stack:
    return ensure_stack_up()


@pytest.fixture(scope="session")
def erp_engine(stack: Stack) -> Iterator[Engine]:
    # pre-ping: test_9 restarts PostgreSQL under the session-wide pool
    engine = create_engine(stack.dsn, pool_size=5, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def it_erp(stack: Stack, erp_engine: Engine) -> Stack:
    """The isolated ERP schema `erp_it` and its Debezium connector (see daemon_harness)."""
    from tests.integration.daemon_harness import ensure_it_erp

    ensure_it_erp(stack, erp_engine)
    return stack
