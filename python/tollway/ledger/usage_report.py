"""/v1/usage from the rollups (tollway.ledger.rollups): exact for any from_ms / to_ms.

A window [from_ms, to_ms) is cut into: the partial hours at its two ends, read from the
events; whole UTC days, from the day rows; the whole hours around them, from the hour rows.
Grouped by day in a zone other than UTC, the day rows do not fit (a UTC day straddles two
local days), so the whole hours come from the hour rows, each counted under its local day;
an hour in which the local day changes (a local midnight not on a UTC hour, as in
Asia/Kolkata, +5:30) is read from its events. The answers are equal to the event scans of
tollway.ledger.report (tests/test_usage_rollups_property.py holds them to it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, Sequence

from sqlalchemy import Integer, and_, case, func, literal, select, union_all

from tollway.ledger.report import day_label, event_rows, group_document, key_names, summary_document
from tollway.ledger.rollups import DAY, HOUR
from tollway.store import Database, usage_events
from tollway.store.schema import usage_rollups

EVENTS = 0
_RUNS_PER_QUERY = 200  # local days per CASE expression


def _ceil(ms: int, span: int) -> int:
    return -(-ms // span) * span


def plan(from_ms: int, to_ms: int, days: bool) -> list[tuple[int, int, int]]:
    """(source, lo, hi) parts covering [from_ms, to_ms): source EVENTS, HOUR or DAY."""
    h0, h1 = _ceil(from_ms, HOUR), to_ms // HOUR * HOUR
    if h0 >= h1:
        parts = [(EVENTS, from_ms, to_ms)]
    else:
        parts = [(EVENTS, from_ms, h0), (EVENTS, h1, to_ms)]
        d0, d1 = _ceil(h0, DAY), h1 // DAY * DAY
        if days and d0 < d1:
            parts += [(HOUR, h0, d0), (DAY, d0, d1), (HOUR, d1, h1)]
        else:
            parts.append((HOUR, h0, h1))
    return [p for p in parts if p[1] < p[2]]


def _rollup_where(account_id: str, span: int, lo: int, hi: int) -> Any:
    r = usage_rollups
    return and_(r.c.account_id == account_id, r.c.span_ms == span, r.c.bucket_ms >= lo, r.c.bucket_ms < hi)


def usage_summary(db: Database, account_id: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Spend by key and model for events with from_ms <= created_at < to_ms (= report.events_summary)."""
    e, r = usage_events, usage_rollups
    parts = []
    for source, lo, hi in plan(from_ms, to_ms, days=True):
        if source == EVENTS:
            parts.append(
                select(
                    e.c.key_id.label("key_id"),
                    e.c.model.label("model"),
                    e.c.cost_micros.label("cost"),
                    literal(1, Integer).label("n"),
                    (e.c.input_tokens + e.c.cache_read_tokens + e.c.cache_write_tokens).label("tin"),
                    e.c.output_tokens.label("tout"),
                    e.c.latency_ms.label("lat"),
                ).where(e.c.account_id == account_id, e.c.created_at >= lo, e.c.created_at < hi)
            )
        else:
            parts.append(
                select(
                    r.c.key_id.label("key_id"),
                    r.c.model.label("model"),
                    r.c.cost_micros.label("cost"),
                    r.c.request_count.label("n"),
                    (r.c.input_tokens + r.c.cache_read_tokens + r.c.cache_write_tokens).label("tin"),
                    r.c.output_tokens.label("tout"),
                    r.c.latency_ms.label("lat"),
                ).where(_rollup_where(account_id, source, lo, hi))
            )
    if not parts:
        return summary_document([], {}, from_ms, to_ms)
    u = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    query = (
        select(
            u.c.key_id,
            u.c.model,
            func.sum(u.c.cost),
            func.sum(u.c.n),
            func.sum(u.c.tin),
            func.sum(u.c.tout),
            func.sum(u.c.lat),
        )
        .group_by(u.c.key_id, u.c.model)
        .order_by(u.c.key_id, u.c.model)
    )
    with db.engine.connect() as conn:
        rows = [
            (key_id, model, cost, n, tin, tout, int(lat or 0) / int(n))
            for key_id, model, cost, n, tin, tout, lat in conn.execute(query)
            if n
        ]
        names = key_names(conn, {row[0] for row in rows})
    return summary_document(rows, names, from_ms, to_ms)


def _sums() -> list[Any]:
    r = usage_rollups
    return [
        func.sum(r.c.cost_micros),
        func.sum(r.c.request_count),
        func.sum(r.c.input_tokens + r.c.cache_read_tokens + r.c.cache_write_tokens),
        func.sum(r.c.output_tokens),
    ]


def _offset(ms: int, tz: dt.tzinfo) -> int:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz)
    return int(moment.utcoffset().total_seconds() * 1000)  # type: ignore[union-attr]


def local_hours(lo: int, hi: int, tz: dt.tzinfo) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
    """For whole hours lo..hi: runs (start, end, local day) of hours wholly in one local day,
    and the hours in which the local day changes (read from their events).

    Per UTC day: when the zone's offset is the same at its start, middle and end, the local
    day changes once, at the local midnight; else (a DST change) hour by hour, an hour being
    one day's when its four quarter hours are (the events' day is their quarter hour's:
    report.event_rows)."""
    runs: list[tuple[int, int, str]] = []
    straddling: list[tuple[int, int]] = []

    def run(start: int, end: int) -> None:
        if start >= end:
            return
        label = day_label(start, tz)
        if runs and runs[-1][2] == label and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end, label)
        else:
            runs.append((start, end, label))

    d = lo
    while d < hi:
        e = min((d // DAY + 1) * DAY, hi)
        off = _offset(d, tz)
        if off == _offset((d + e) // 2 // HOUR * HOUR, tz) == _offset(e, tz):
            midnight = ((d + off) // DAY + 1) * DAY - off  # the first local midnight after d
            hour = midnight // HOUR * HOUR
            if midnight >= e:
                run(d, e)
            elif midnight % HOUR == 0:
                run(d, midnight)
                run(midnight, e)
            else:
                run(d, hour)
                straddling.append((hour, hour + HOUR))
                run(hour + HOUR, e)
        else:
            for h in range(d, e, HOUR):
                label = day_label(h, tz)
                if any(day_label(h + q, tz) != label for q in (900_000, 1_800_000, 2_700_000)):
                    straddling.append((h, h + HOUR))
                else:
                    run(h, h + HOUR)
        d = e
    return runs, straddling


def _local_hour_rows(conn: Any, account_id: str, lo: int, hi: int, tz: dt.tzinfo) -> list[tuple[Any, ...]]:
    r = usage_rollups
    where = _rollup_where(account_id, HOUR, lo, hi)
    first, last = conn.execute(select(func.min(r.c.bucket_ms), func.max(r.c.bucket_ms)).where(where)).one()
    if first is None:
        return []
    runs, straddling = local_hours(int(first), int(last) + HOUR, tz)  # only the hours with usage
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(runs), _RUNS_PER_QUERY):
        chunk = runs[i : i + _RUNS_PER_QUERY]
        which = case(*((r.c.bucket_ms < end, n) for n, (_, end, _) in enumerate(chunk)), else_=-1)
        skipped = [start for start, _ in straddling if chunk[0][0] <= start < chunk[-1][1]]
        query = (
            select(r.c.key_id, r.c.model, which, *_sums())
            .where(_rollup_where(account_id, HOUR, chunk[0][0], chunk[-1][1]), r.c.bucket_ms.not_in(skipped))
            .group_by(r.c.key_id, r.c.model, which)
        )
        out += [(k, m, chunk[int(n)][2], *sums) for k, m, n, *sums in conn.execute(query)]
    for i in range(0, len(straddling), _RUNS_PER_QUERY):
        out += event_rows(conn, account_id, straddling[i : i + _RUNS_PER_QUERY], True, tz)
    return out


def usage_groups(
    db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str], tz: Optional[dt.tzinfo] = None
) -> list[dict[str, Any]]:
    """The events with from_ms <= created_at < to_ms grouped by ``group_by`` (= report.events_groups)."""
    r = usage_rollups
    with_day = "day" in group_by
    local = with_day and tz not in (None, dt.timezone.utc)
    rows: list[Sequence[Any]] = []
    with db.engine.connect() as conn:
        parts = plan(from_ms, to_ms, days=not local)
        rows += event_rows(conn, account_id, [(lo, hi) for s, lo, hi in parts if s == EVENTS], with_day, tz)
        for source, lo, hi in parts:
            if source == EVENTS:
                continue
            if local:
                rows += _local_hour_rows(conn, account_id, lo, hi, tz)
            elif with_day:  # UTC: an hour's or day's rows are all in its UTC day
                query = (
                    select(r.c.key_id, r.c.model, r.c.bucket_ms, *_sums())
                    .where(_rollup_where(account_id, source, lo, hi))
                    .group_by(r.c.key_id, r.c.model, r.c.bucket_ms)
                )
                rows += [(k, m, day_label(b, None), *sums) for k, m, b, *sums in conn.execute(query)]
            else:
                query = (
                    select(r.c.key_id, r.c.model, literal(None), *_sums())
                    .where(_rollup_where(account_id, source, lo, hi))
                    .group_by(r.c.key_id, r.c.model)
                )
                rows += list(conn.execute(query))
        return group_document(conn, rows, group_by)
