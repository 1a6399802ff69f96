"""`--from DATE --to DATE` of the finance commands: one reading of a period everywhere.

A date is a whole calendar day in the given time zone (UTC unless `--tz`), and `--to` is
inclusive: `--from 2026-11-01 --to 2026-11-30` is all of November. A date-time (ISO 8601,
with or without offset) is an exact instant, and as `--to` it is exclusive.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.errors import OperatorError


class PeriodError(OperatorError, ValueError):
    """A period the user gave wrongly (one line, exit 2)."""


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # inclusive
    end: datetime  # exclusive

    def describe(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def add_period_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--from",
        dest="date_from",
        required=required,
        metavar="DATE",
        help="first day (YYYY-MM-DD) or instant (ISO 8601) of the period",
    )
    parser.add_argument(
        "--to",
        dest="date_to",
        required=required,
        metavar="DATE",
        help="last day, inclusive (YYYY-MM-DD), or an instant the period ends before",
    )
    parser.add_argument(
        "--tz",
        default="UTC",
        metavar="ZONE",
        help="time zone of plain dates, e.g. Asia/Shanghai (default UTC)",
    )


def zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(
            f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)"
        ) from None


def _bound(text: str, tz: tzinfo, *, end: bool, flag: str) -> datetime:
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time.min, tzinfo=tz)
        return start + timedelta(days=1) if end else start
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise PeriodError(
            f"{flag} {text!r} is neither a date (YYYY-MM-DD) nor an ISO 8601 date-time"
        ) from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=tz)


def parse_instant(text: str, flag: str, tz_name: str = "UTC") -> datetime:
    """One instant: a date is its first moment in `tz_name`."""
    return _bound(text, zone(tz_name), end=False, flag=flag)


def parse_period(date_from: str, date_to: str, tz_name: str = "UTC") -> Period:
    tz = zone(tz_name)
    start = _bound(date_from, tz, end=False, flag="--from")
    end = _bound(date_to, tz, end=True, flag="--to")
    if end <= start:
        raise PeriodError(f"--to {date_to} is not after --from {date_from}")
    return Period(start, end)


__all__ = [
    "Period",
    "PeriodError",
    "add_period_arguments",
    "parse_instant",
    "parse_period",
    "zone",
]
