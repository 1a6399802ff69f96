"""The correction limits (syncd.rules.limits): deadlines on the platform's calendar, tax
periods, count limits, and the sentences written back."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from syncd.config.documents import RedLimits, TaxPeriod
from syncd.errors import DocumentError
from syncd.rules.limits import (
    CorrectionLimitError,
    check_red_limits,
    check_reissue_limit,
    platform_date,
)

BLUE = "26312000000000000042"


def check(limits: RedLimits, issued: datetime | None, now: datetime, reds: int = 0) -> None:
    check_red_limits(limits, invoice_no=BLUE, blue_issued_at=issued, reds_before=reds, now=now)


def test_no_limits_allow_anything():
    old = datetime(2001, 1, 1, tzinfo=UTC)
    check(RedLimits(), old, datetime(2026, 1, 1, tzinfo=UTC), reds=1000)


def test_deadline_counts_platform_days_inclusive():
    limits = RedLimits(within_days=30)
    # 2026-01-01 20:00 UTC is 2026-01-02 on the platform (UTC+8)
    issued = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)
    assert platform_date(issued).isoformat() == "2026-01-02"
    check(limits, issued, datetime(2026, 2, 1, 15, 59, tzinfo=UTC))  # Feb 1 23:59 CST: ok
    with pytest.raises(CorrectionLimitError) as caught:
        check(limits, issued, datetime(2026, 2, 1, 16, 0, tzinfo=UTC))  # Feb 2 CST
    err = caught.value
    assert err.code == "RED_DEADLINE_PASSED"
    assert err.invoice_no == BLUE
    assert isinstance(err, DocumentError)
    assert "issued on 2026-01-02" in str(err)
    assert "until 2026-02-01" in str(err)
    assert "within_days: 30" in str(err)


def test_unknown_issue_time_skips_date_limits_but_not_counts():
    limits = RedLimits(within_days=0, same_period=TaxPeriod.MONTH, max_reds_per_invoice=1)
    check(limits, None, datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(CorrectionLimitError, match="max_reds_per_invoice: 1"):
        check(limits, None, datetime(2030, 1, 1, tzinfo=UTC), reds=1)


@pytest.mark.parametrize(
    ("period", "issued", "now", "ok"),
    [
        (TaxPeriod.MONTH, "2026-03-31T15:00", "2026-03-31T15:59", True),  # both Mar 31 CST
        (TaxPeriod.MONTH, "2026-03-31T15:00", "2026-03-31T16:00", False),  # Apr 1 CST
        (TaxPeriod.QUARTER, "2026-01-05T00:00", "2026-03-30T00:00", True),
        (TaxPeriod.QUARTER, "2026-03-05T00:00", "2026-04-02T00:00", False),
        (TaxPeriod.YEAR, "2026-01-05T00:00", "2026-12-30T00:00", True),
        (TaxPeriod.YEAR, "2026-12-05T00:00", "2027-01-02T00:00", False),
    ],
)
def test_same_period(period, issued, now, ok):
    limits = RedLimits(same_period=period)
    at = [datetime.fromisoformat(v).replace(tzinfo=UTC) for v in (issued, now)]
    if ok:
        check(limits, at[0], at[1])
    else:
        with pytest.raises(CorrectionLimitError) as caught:
            check(limits, at[0], at[1])
        assert caught.value.code == "RED_PERIOD_CLOSED"
        assert f"same_period: {period.value}" in str(caught.value)


def test_count_limit_counts_earlier_reds():
    limits = RedLimits(max_reds_per_invoice=3)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    check(limits, now, now, reds=2)
    with pytest.raises(CorrectionLimitError) as caught:
        check(limits, now, now, reds=3)
    assert caught.value.code == "RED_COUNT_EXCEEDED"
    assert "already has 3 red invoice(s)" in str(caught.value)


def test_naive_and_other_zones_compare_on_the_platform_calendar():
    limits = RedLimits(within_days=0)
    issued = datetime(2026, 5, 1, 1, 0, tzinfo=timezone(timedelta(hours=-5)))  # May 1 14:00 CST
    check(limits, issued, datetime(2026, 5, 1, 15, 0))  # naive = UTC: May 1 23:00 CST
    with pytest.raises(CorrectionLimitError):
        check(limits, issued, datetime(2026, 5, 1, 16, 0))


def test_reissue_limit():
    check_reissue_limit(None, 1000)
    check_reissue_limit(2, 1)
    with pytest.raises(CorrectionLimitError) as caught:
        check_reissue_limit(2, 2)
    assert caught.value.code == "REISSUE_LIMIT"
    assert "max_reissues_per_day: 2" in str(caught.value)
    assert "re-issue refused" in str(caught.value)


def test_config_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        RedLimits(within_days=-1)
    with pytest.raises(ValueError):
        RedLimits(max_reds_per_invoice=0)
    with pytest.raises(ValueError):
        RedLimits.model_validate({"same_period": "week"})
