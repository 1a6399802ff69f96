"""The remaining credit line of a Nuonuo account: what counts as a report, how often."""

from __future__ import annotations

from decimal import Decimal

from syncd.issuers.base import Reason, Retryable
from syncd.issuers.nuonuo import CreditWatch, Envelope, credit_of


def _answer(code: str = "E0000", **result: object) -> Envelope:
    return Envelope(code, "", result)


def test_credit_of_reads_what_is_left() -> None:
    assert credit_of(_answer(kysyed="1234.50", bysxed="5000")) == Decimal("1234.50")
    assert credit_of(_answer(kysyed=0)) == Decimal(0)
    assert credit_of(_answer(bysxed="5000")) is None
    assert credit_of(_answer(kysyed="-1")) is None
    assert credit_of(_answer(kysyed="many")) is None
    assert credit_of(_answer("E9999", kysyed="1")) is None


def test_asked_once_per_interval_and_never_where_refused() -> None:
    watch = CreditWatch(300.0)
    assert watch.due(1000.0)
    assert not watch.due(1100.0)  # another worker, same interval
    watch.record(_answer(kysyed="10"))
    assert watch.remaining == Decimal("10")
    watch.record(Retryable("S", Reason("HTTP_503", "")))  # no answer: keep the last report
    assert watch.remaining == Decimal("10")
    assert watch.due(1300.0)
    watch.record(_answer("E9999"))  # the platform does not offer the method
    assert not watch.due(10_000.0)
    watch.exhausted()
    assert watch.remaining == Decimal(0)


def test_off_unless_asked_for() -> None:
    assert not CreditWatch(None).due(0.0)
