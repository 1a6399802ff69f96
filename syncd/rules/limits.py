"""The time and count limits on corrections, checked before anything is sent.

Invariant protected here: syncd never asks the platform for a red-letter invoice (full or
partial) or a re-issue that the rules forbid; such a correction is refused here, with a
sentence the ERP can show, instead of being sent and refused there (or, worse, accepted by
a lenient provider and found by the tax bureau later).

The limits (see docs/configuration.md, `red_limits` and `max_reissues_per_day`):
* a red invoice only until `within_days` days after the blue invoice's issue date;
* a red invoice only within the blue invoice's tax period (`same_period`: month, quarter or
  year), for companies whose bureau or auditor asks for it;
* at most `max_reds_per_invoice` red invoices (full and partial) against one blue invoice;
* at most `max_reissues_per_day` new revisions of one document within 24 h (platforms cap
  re-issue attempts per day).

Dates are the platform's: China Standard Time (UTC+8), whatever the daemon's clock zone.
Pure: the limits, the facts and `now` in, nothing or a `CorrectionLimitError` out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from syncd.config.documents import RedLimits, TaxPeriod
from syncd.errors import DocumentError

__all__ = [
    "PLATFORM_TZ",
    "CorrectionLimitError",
    "check_red_limits",
    "check_reissue_limit",
    "platform_date",
]

#: The 数电 platform dates invoices in China Standard Time.
PLATFORM_TZ = timezone(timedelta(hours=8), "CST")


class CorrectionLimitError(DocumentError, ValueError):
    """A correction the rules forbid: never sent; `code` names the limit, `str()` is the
    sentence written back to the ERP."""

    def __init__(self, code: str, message: str, *, invoice_no: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.invoice_no = invoice_no


def platform_date(moment: datetime) -> date:
    """The calendar date of `moment` on the platform (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(PLATFORM_TZ).date()


def _period(day: date, period: TaxPeriod) -> tuple[int, int]:
    if period is TaxPeriod.MONTH:
        return day.year, day.month
    if period is TaxPeriod.QUARTER:
        return day.year, (day.month - 1) // 3 + 1
    return day.year, 0


def _period_name(day: date, period: TaxPeriod) -> str:
    if period is TaxPeriod.MONTH:
        return f"{day.year}-{day.month:02d}"
    if period is TaxPeriod.QUARTER:
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def check_red_limits(
    limits: RedLimits,
    *,
    invoice_no: str,
    blue_issued_at: datetime | None,
    reds_before: int,
    now: datetime,
) -> None:
    """Raise `CorrectionLimitError` when one more red invoice against the blue invoice
    `invoice_no` (issued at `blue_issued_at`, with `reds_before` live red invoices already)
    breaks `limits` at `now`. An unknown issue time skips the date limits."""
    if limits.max_reds_per_invoice is not None and reds_before >= limits.max_reds_per_invoice:
        raise CorrectionLimitError(
            "RED_COUNT_EXCEEDED",
            f"invoice {invoice_no} already has {reds_before} red invoice(s) "
            f"(red_limits.max_reds_per_invoice: {limits.max_reds_per_invoice}); "
            "correct it by hand with the tax bureau",
            invoice_no=invoice_no,
        )
    if blue_issued_at is None:
        return
    issued, today = platform_date(blue_issued_at), platform_date(now)
    if limits.within_days is not None:
        last = issued + timedelta(days=limits.within_days)
        if today > last:
            raise CorrectionLimitError(
                "RED_DEADLINE_PASSED",
                f"invoice {invoice_no} was issued on {issued.isoformat()}; red invoices were "
                f"possible until {last.isoformat()} (red_limits.within_days: "
                f"{limits.within_days}), today is {today.isoformat()}",
                invoice_no=invoice_no,
            )
    period = limits.same_period
    if period is not None and _period(today, period) != _period(issued, period):
        raise CorrectionLimitError(
            "RED_PERIOD_CLOSED",
            f"invoice {invoice_no} belongs to the tax period {_period_name(issued, period)}, "
            f"which is closed (red_limits.same_period: {period.value}); "
            f"today is in {_period_name(today, period)}",
            invoice_no=invoice_no,
        )


def check_reissue_limit(limit: int | None, done_last_24h: int) -> None:
    """Raise `CorrectionLimitError` when one more re-issue of a document that had
    `done_last_24h` re-issues in the last 24 h breaks `max_reissues_per_day`."""
    if limit is not None and done_last_24h >= limit:
        raise CorrectionLimitError(
            "REISSUE_LIMIT",
            f"re-issue refused: {done_last_24h} re-issue(s) of this document in the last "
            f"24 h (max_reissues_per_day: {limit}); confirm it again later",
        )
