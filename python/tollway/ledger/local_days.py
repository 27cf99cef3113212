"""Calendar days in an account's time zone, as the usage rollups and reports count them.

An event's day is the local date of the quarter hour it falls in (``report.event_rows`` labels
the events the same way): ``day_bucket`` is that date's midnight as if it were UTC (for UTC
itself, the UTC day start). The rollups' day rows are keyed by it, so a UTC day row and a
local one are the same kind of row; which zone an account's rows follow is its
``accounts.timezone``, and changing it recomputes them (``rollups.rebuild_days``).

A day's real extent is the quarter hours labelled with its date: [local midnight, next local
midnight) except around a DST change, and in the rare zone whose clocks go back across
midnight it is not one range (``days`` gives its ranges; the reports read such a day from
its hours and events, never its day row). A month row (``month_bucket``) sums its days' rows.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Optional

from tollway.policy.windows import UTC, zone

QUARTER = 900_000
HOUR = 3_600_000
DAY = 86_400_000
_CHUNK = 32 * DAY  # offset runs are computed (and cached) per chunk of this length
Run = tuple[int, int, int]  # [start, end) with one UTC offset (ms)


def zone_of(name: Optional[str]) -> Optional[dt.tzinfo]:
    """The zone an ``accounts.timezone`` names; None for UTC (and a name no longer known)."""
    if name is None:
        return None
    try:
        tz = zone(name)
    except ValueError:
        return None
    return None if tz is UTC else tz


def _offset(ms: int, tz: dt.tzinfo) -> int:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz)
    return int(moment.utcoffset().total_seconds() * 1000)  # type: ignore[union-attr]


@lru_cache(maxsize=4096)
def _chunk_runs(tz: dt.tzinfo, start: int) -> tuple[Run, ...]:
    """The runs of [start, start + _CHUNK) (``start`` quarter-aligned): the offset is sampled
    each hour, and an hour whose two ends differ is walked quarter by quarter."""
    end = start + _CHUNK
    out = [[start, end, _offset(start, tz)]]
    for h in range(start + HOUR, end + HOUR, HOUR):
        h = min(h, end)
        if _offset(h, tz) == out[-1][2] and h < end:
            continue
        for q in range(h - HOUR + QUARTER, h + (QUARTER if h < end else 0), QUARTER):
            off = _offset(q, tz)
            if off != out[-1][2]:
                out[-1][1] = q
                out.append([q, end, off])
    return tuple((s, e, o) for s, e, o in out if s < e)


def runs(lo: int, hi: int, tz: Optional[dt.tzinfo]) -> list[Run]:
    """[lo, hi) cut where the UTC offset of its quarter hours changes."""
    if lo >= hi:
        return []
    if tz is None:
        return [(lo, hi, 0)]
    out: list[Run] = []
    c = lo - lo % _CHUNK
    while c < hi:
        for s, e, off in _chunk_runs(tz, c):
            s, e = max(s, lo), min(e, hi)
            if s >= e:
                continue
            if out and out[-1][2] == off and out[-1][1] == s:
                out[-1] = (out[-1][0], e, off)
            else:
                out.append((s, e, off))
        c += _CHUNK
    return out


def day_bucket(ms: int, tz: Optional[dt.tzinfo]) -> int:
    """The day row ``ms`` counts in: its quarter hour's local date, as UTC midnight ms."""
    if tz is None:
        return ms - ms % DAY
    q = ms - ms % QUARTER
    local = q + _offset(q, tz)
    return local - local % DAY


def days(lo: int, hi: int, tz: Optional[dt.tzinfo]) -> list[tuple[int, list[tuple[int, int]]]]:
    """The days meeting [lo, hi) (quarter-aligned), in order: (bucket, the day's ranges within
    [lo, hi)). A day's ranges are one range unless its clocks went back across midnight."""
    found: dict[int, list[tuple[int, int]]] = {}
    for s, e, off in runs(lo, hi, tz):
        b = (s + off) - (s + off) % DAY
        while b - off < e:
            piece = (max(s, b - off), min(e, b + DAY - off))
            ranges = found.setdefault(b, [])
            if ranges and ranges[-1][1] == piece[0]:
                ranges[-1] = (ranges[-1][0], piece[1])
            else:
                ranges.append(piece)
            b += DAY
    return sorted(found.items())


@lru_cache(maxsize=8192)
def month_bucket(day: int) -> int:
    """The month row a day row (its bucket) counts in: the first of its month, as UTC midnight ms."""
    date = dt.datetime.fromtimestamp(day / 1000, dt.timezone.utc).date()
    return int(dt.datetime(date.year, date.month, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def next_month(bucket: int) -> int:
    return month_bucket(bucket + 31 * DAY)


def label(bucket: int) -> str:
    return dt.datetime.fromtimestamp(bucket / 1000, dt.timezone.utc).date().isoformat()
