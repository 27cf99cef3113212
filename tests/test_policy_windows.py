"""Spend windows: day, week (Monday), month boundaries, years, DST, and the ledger's budgets rolling."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.policy.windows import UTC, iso, window, zone


def ms(*args: int, tz: dt.tzinfo = UTC) -> int:
    return int(dt.datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_day_week_month_in_utc() -> None:
    now = ms(2026, 12, 3, 15, 30)  # a Thursday
    assert window("day", now) == (ms(2026, 12, 3), ms(2026, 12, 4))
    assert window("week", now) == (ms(2026, 11, 30), ms(2026, 12, 7))  # Monday to Monday
    assert window("month", now) == (ms(2026, 12, 1), ms(2027, 1, 1))  # into the next year


def test_exact_boundaries() -> None:
    new_year = ms(2027, 1, 1)
    assert window("day", new_year - 1) == (ms(2026, 12, 31), new_year)
    assert window("day", new_year) == (new_year, ms(2027, 1, 2))
    assert window("month", new_year - 1)[1] == new_year and window("month", new_year)[0] == new_year
    # 2027-01-01 is a Friday: the week began on Monday 2026-12-28, across the year.
    assert window("week", new_year) == (ms(2026, 12, 28), ms(2027, 1, 4))
    monday = ms(2026, 12, 7)
    assert window("week", monday - 1)[1] == monday and window("week", monday)[0] == monday
    assert window("month", ms(2028, 2, 29, 12)) == (ms(2028, 2, 1), ms(2028, 3, 1))  # leap year


def test_dst_days_in_paris_are_23_and_25_hours() -> None:
    paris = zone("Europe/Paris")
    spring = window("day", ms(2027, 3, 28, 12, tz=paris), paris)  # clocks go forward at 02:00
    autumn = window("day", ms(2027, 10, 31, 12, tz=paris), paris)  # and back at 03:00
    assert spring[1] - spring[0] == 23 * 3_600_000
    assert autumn[1] - autumn[0] == 25 * 3_600_000
    assert spring[0] == ms(2027, 3, 28, tz=paris) and iso(spring[0]) == "2027-03-27T23:00:00Z"
    assert iso(autumn[1]) == "2027-10-31T23:00:00Z"  # midnight in Paris is 23:00 UTC again in winter
    week = window("week", ms(2027, 3, 26, tz=paris), paris)  # Mon 22 to Mon 29: holds the change
    assert week[1] - week[0] == (7 * 24 - 1) * 3_600_000
    assert window("month", ms(2027, 3, 15, tz=paris), paris) == (ms(2027, 3, 1, tz=paris), ms(2027, 4, 1, tz=paris))


def test_a_zone_far_from_utc_and_unknown_zones() -> None:
    tokyo = zone("Asia/Tokyo")
    start, end = window("day", ms(2026, 12, 31, 16), tokyo)  # 01:00 on Jan 1st in Tokyo
    assert iso(start) == "2026-12-31T15:00:00Z" and iso(end) == "2027-01-01T15:00:00Z"
    assert window("month", ms(2026, 12, 31, 16), tokyo)[0] == ms(2027, 1, 1, tz=tokyo)
    with pytest.raises(ValueError):
        zone("Mars/Olympus_Mons")
    assert zone(None) is UTC and zone("UTC") is UTC


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.integers(min_value=ms(1990, 1, 1), max_value=ms(2100, 1, 1)),
    st.sampled_from(["day", "week", "month"]),
    st.sampled_from(ZONES),
)
def test_windows_hold_now_and_tile_time(now: int, period: str, name: str) -> None:
    tz = zone(name)
    start, end = window(period, now, tz)
    assert start <= now < end
    assert window(period, end, tz)[0] == end  # the next window starts where this one ends
    assert window(period, start - 1, tz)[1] == start
    local = dt.datetime.fromtimestamp(now / 1000, tz)
    first = dt.datetime.fromtimestamp(start / 1000, tz)
    if period == "month":
        assert (first.year, first.month) == (local.year, local.month)
    elif period == "week":
        assert first.weekday() == 0 and (local.date() - first.date()).days < 7
    else:
        assert first.date() == local.date()
