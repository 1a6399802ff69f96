"""The driver's query path with and without a query horizon: before it (or unset) a
"not found" re-sends the same serial; past it nothing is re-sent. No database: the
provider is a fake without a list, so the search parks the document at once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from syncd.issuers import horizon
from syncd.issuers.base import (
    InvoicePayload,
    IssueResult,
    NeedsHuman,
    NotFound,
    Processing,
    ReversalRequest,
)
from syncd.lifecycle import DocumentState, RetryPolicy
from syncd.observability.metrics import Metrics
from syncd.pipeline.driver import Driver, _Exchange
from tests.unit.pipeline.test_outcomes import SERIAL, row


class Forgetful:
    """A provider that answers every query "not found" and accepts every submit."""

    provider = "forgetful"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def issue(self, invoice: InvoicePayload) -> IssueResult:
        self.sent.append(SERIAL)
        return Processing(SERIAL)

    def query(self, serial: str) -> IssueResult:
        return NotFound(serial)

    def reverse(self, request: ReversalRequest) -> IssueResult:
        raise AssertionError("not used")

    def query_reversal(self, serial: str) -> IssueResult:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def driver(issuer: Forgetful, query_horizon: float | None) -> Driver:
    return Driver(
        engine=None,  # type: ignore[arg-type]
        issuer=issuer,
        config=None,  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
        owner="test",
        workers=1,
        policy=RetryPolicy(),
        query_horizon=query_horizon,
    )


def call(d: Driver, issuer: Forgetful, doc: Any) -> tuple[IssueResult, bool]:
    """The step's exchange with the provider, on this thread."""
    return d._exchange(_Exchange(doc, None, "default", issuer, None))  # type: ignore[arg-type]


def unknown(age: timedelta) -> Any:
    created = datetime.now(UTC) - age
    return dataclasses.replace(row(DocumentState.OUTCOME_UNKNOWN, attempts=1), created_at=created)


def test_without_a_horizon_not_found_re_sends_the_same_serial() -> None:
    issuer = Forgetful()
    d = driver(issuer, None)
    try:
        result, resent = call(d, issuer, unknown(timedelta(days=30)))
        assert resent and issuer.sent == [SERIAL]
        assert isinstance(result, Processing)
    finally:
        d.stop(0)


def test_before_the_horizon_not_found_is_still_trusted() -> None:
    issuer = Forgetful()
    d = driver(issuer, 3600)
    try:
        _, resent = call(d, issuer, unknown(timedelta(minutes=5)))
        assert resent and issuer.sent == [SERIAL]
    finally:
        d.stop(0)


def test_past_the_horizon_nothing_is_re_sent() -> None:
    issuer = Forgetful()
    d = driver(issuer, 3600)
    try:
        result, resent = call(d, issuer, unknown(timedelta(hours=2)))
        assert not resent and issuer.sent == []
        assert isinstance(result, NeedsHuman)
        assert result.reason.code == horizon.NO_LIST  # this provider cannot list
        assert "nothing re-sent" in result.reason.message
    finally:
        d.stop(0)
