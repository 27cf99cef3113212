"""Spend windows: where a day, a week (from Monday 00:00) and a calendar month begin and end.

Windows follow the account's IANA time zone (UTC when it sets none), so a "day" in
Europe/Paris is 23 or 25 hours long on the days the clocks change. A window is the
half-open interval [start, end) in Unix milliseconds; ``total`` has no bounds.
Nothing resets a window: a request is charged to the window its start time falls in,
so spend "resets" exactly at the boundary, with no job that could miss it.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("day", "week", "month", "total")
WINDOWED = ("day", "week", "month")
UTC = dt.timezone.utc
_NAME = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


def adjective(period: str) -> str:
    return _NAME[period]


@lru_cache(maxsize=512)
def zone(name: Optional[str]) -> dt.tzinfo:
    """The tzinfo of an IANA name (None: UTC); ValueError for a name the tz database lacks."""
    if name is None or name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris')") from None


def _ms(local: dt.datetime) -> int:
    return int(local.timestamp() * 1000)


def _midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz)


def window(period: str, now_ms: int, tz: dt.tzinfo = UTC) -> tuple[int, int]:
    """[start, end) of the ``period`` window holding ``now_ms`` (not for ``total``)."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    if period == "day":
        first, after = today, today + dt.timedelta(days=1)
    elif period == "week":
        first = today - dt.timedelta(days=today.weekday())
        after = first + dt.timedelta(days=7)
    elif period == "month":
        first = today.replace(day=1)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"no window for the period {period!r}")
    start, end = _ms(_midnight(first, tz)), _ms(_midnight(after, tz))
    # A zone whose midnight falls in a DST gap, or a float rounding at the edge:
    # keep ``now`` inside by stepping to the neighbouring window.
    if now_ms < start:
        return window(period, start - 1, tz)
    if now_ms >= end:
        return window(period, end, tz)
    return start, end


def iso(ms: int) -> str:
    """RFC 3339, UTC, to the second: what a 402 and GET /v1/key say a window resets at."""
    return dt.datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
