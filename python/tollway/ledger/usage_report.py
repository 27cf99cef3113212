"""/v1/usage from the rollups (tollway.ledger.rollups): exact for any from_ms / to_ms.

A window [from_ms, to_ms) is cut into: the partial hours at its two ends, read from the
events; whole UTC days, from the day rows; the whole hours of the days at the ends, from
the hour rows (or, when fewer rows, as the day's row less the hours outside the window).
All of it is summed in one query. Grouped by day in a zone other than UTC, the day rows do
not fit (a UTC day straddles two local days), so the whole hours come from the hour rows,
each counted under its local day; an hour in which the local day changes (a local midnight
not on a UTC hour, as in Asia/Kolkata, +5:30) is read from its events. The answers are
equal to the event scans of tollway.ledger.report (tests/test_usage_rollups_property.py
holds them to it).
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
Part = tuple[int, int, int, int]  # (EVENTS, HOUR or DAY; lo; hi; sign)


def _ceil(ms: int, span: int) -> int:
    return -(-ms // span) * span


def _edge(lo: int, hi: int, day: int) -> list[Part]:
    """The whole hours [lo, hi) of the UTC day starting at ``day``: their hour rows, or the
    day's row less the hours outside, whichever reads fewer rows."""
    inside = (hi - lo) // HOUR
    if 1 + (24 - inside) < inside:
        return [(DAY, day, day + DAY, 1), (HOUR, day, lo, -1), (HOUR, hi, day + DAY, -1)]
    return [(HOUR, lo, hi, 1)]


def plan(from_ms: int, to_ms: int, days: bool = True) -> list[Part]:
    """The parts covering [from_ms, to_ms): the events of the partial hours at the ends, and
    rollup rows (``days``: day rows where they fit; else hour rows only)."""
    h0, h1 = _ceil(from_ms, HOUR), to_ms // HOUR * HOUR
    if h0 >= h1:
        parts = [(EVENTS, from_ms, to_ms, 1)]
    else:
        parts = [(EVENTS, from_ms, h0, 1), (EVENTS, h1, to_ms, 1)]
        d0, d1 = _ceil(h0, DAY), h1 // DAY * DAY
        if not days:
            parts.append((HOUR, h0, h1, 1))
        elif d0 > d1:  # within one UTC day
            parts += _edge(h0, h1, d1)
        else:
            if h0 < d0:
                parts += _edge(h0, d0, d0 - DAY)
            parts.append((DAY, d0, d1, 1))
            if d1 < h1:
                parts += _edge(d1, h1, d1)
    return [p for p in parts if p[1] < p[2]]


def _rollup_where(account_id: str, span: int, lo: int, hi: int) -> Any:
    r = usage_rollups
    return and_(r.c.account_id == account_id, r.c.span_ms == span, r.c.bucket_ms >= lo, r.c.bucket_ms < hi)


def _signed(column: Any, sign: int) -> Any:
    return column if sign == 1 else column * literal(sign, Integer)


def _part_query(account_id: str, part: Part, with_day: bool) -> Any:
    e, r = usage_events, usage_rollups
    source, lo, hi, sign = part
    if source == EVENTS:
        day = [(e.c.created_at - e.c.created_at % literal(DAY, Integer)).label("day")] if with_day else []
        return select(
            e.c.key_id.label("key_id"),
            e.c.model.label("model"),
            *day,
            e.c.cost_micros.label("cost"),
            literal(1, Integer).label("n"),
            (e.c.input_tokens + e.c.cache_read_tokens + e.c.cache_write_tokens).label("tin"),
            e.c.output_tokens.label("tout"),
            e.c.latency_ms.label("lat"),
        ).where(e.c.account_id == account_id, e.c.created_at >= lo, e.c.created_at < hi)
    day = [(r.c.bucket_ms - r.c.bucket_ms % literal(DAY, Integer)).label("day")] if with_day else []
    return select(
        r.c.key_id.label("key_id"),
        r.c.model.label("model"),
        *day,
        _signed(r.c.cost_micros, sign).label("cost"),
        _signed(r.c.request_count, sign).label("n"),
        _signed(r.c.input_tokens + r.c.cache_read_tokens + r.c.cache_write_tokens, sign).label("tin"),
        _signed(r.c.output_tokens, sign).label("tout"),
        _signed(r.c.latency_ms, sign).label("lat"),
    ).where(_rollup_where(account_id, source, lo, hi))


def _utc_rows(
    conn: Any, account_id: str, from_ms: int, to_ms: int, with_day: bool, by_model: bool = True
) -> list[tuple[Any, ...]]:
    """(key_id, model or None, UTC day start or None, cost, count, input, output, latency sum) in
    key_id, model, day order, in one query over the plan's parts."""
    parts = [_part_query(account_id, p, with_day) for p in plan(from_ms, to_ms)]
    if not parts:
        return []
    u = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    keys = [u.c.key_id, *([u.c.model] if by_model else []), *([u.c.day] if with_day else [])]
    sums = [func.sum(u.c.cost), func.sum(u.c.n), func.sum(u.c.tin), func.sum(u.c.tout), func.sum(u.c.lat)]
    query = select(*keys, *sums).group_by(*keys).having(func.sum(u.c.n) != 0).order_by(*keys)
    out = []
    for row in conn.execute(query):
        model = row[1] if by_model else None
        day = row[len(keys) - 1] if with_day else None
        out.append((row[0], model, day, *row[len(keys) :]))
    return out


def _summary(conn: Any, rows: Sequence[tuple[Any, ...]], from_ms: int, to_ms: int) -> dict[str, Any]:
    """The summary from _utc_rows (several days of a key and model are adjacent)."""
    merged: dict[tuple[str, str], list[int]] = {}
    for key_id, model, _day, cost, n, tin, tout, lat in rows:
        acc = merged.setdefault((key_id, model), [0, 0, 0, 0, 0])
        for i, v in enumerate((cost, n, tin, tout, lat)):
            acc[i] += int(v or 0)
    lines = [(k, m, cost, n, tin, tout, lat / n) for (k, m), (cost, n, tin, tout, lat) in merged.items()]
    return summary_document(lines, key_names(conn, {k for k, _ in merged}), from_ms, to_ms)


def usage_report(
    db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str], tz: Optional[dt.tzinfo] = None
) -> dict[str, Any]:
    """The /v1/usage body: the summary, and with ``group_by`` its groups (= report.events_summary
    and report.events_groups)."""
    with_day = "day" in group_by
    local = with_day and tz not in (None, dt.timezone.utc)
    # One query when the groups are per key and model anyway (the summary's rows, or its rows
    # per day); else the summary's, and the groups' without the model (fewer rows out).
    one_query = not with_day or (not local and "model" in group_by)
    with db.engine.connect() as conn:
        rows = _utc_rows(conn, account_id, from_ms, to_ms, with_day and one_query)
        body = _summary(conn, rows, from_ms, to_ms)
        if group_by:
            body["group_by"] = group_by
            if local:
                body["groups"] = _local_groups(conn, account_id, from_ms, to_ms, group_by, tz)
            else:
                if not one_query:
                    rows = _utc_rows(conn, account_id, from_ms, to_ms, True, by_model=False)
                days: dict[int, str] = {}
                lines = [
                    (k, m, days.setdefault(d, day_label(d, None)) if with_day else None, cost, n, tin, tout)
                    for k, m, d, cost, n, tin, tout, _lat in rows
                ]
                body["groups"] = group_document(conn, lines, group_by)
    return body


def usage_summary(db: Database, account_id: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Spend by key and model for events with from_ms <= created_at < to_ms (= report.events_summary)."""
    return usage_report(db, account_id, from_ms, to_ms, [])


def usage_groups(
    db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str], tz: Optional[dt.tzinfo] = None
) -> list[dict[str, Any]]:
    """The events with from_ms <= created_at < to_ms grouped by ``group_by`` (= report.events_groups)."""
    return usage_report(db, account_id, from_ms, to_ms, group_by, tz).get("groups", [])


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


def _local_hour_rows(
    conn: Any, account_id: str, lo: int, hi: int, tz: dt.tzinfo, by_model: bool
) -> list[tuple[Any, ...]]:
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
            select(r.c.key_id, r.c.model if by_model else literal(None), which, *_sums())
            .where(_rollup_where(account_id, HOUR, chunk[0][0], chunk[-1][1]), r.c.bucket_ms.not_in(skipped))
            .group_by(r.c.key_id, *([r.c.model] if by_model else []), which)
        )
        out += [(k, m, chunk[int(n)][2], *sums) for k, m, n, *sums in conn.execute(query)]
    for i in range(0, len(straddling), _RUNS_PER_QUERY):
        out += event_rows(conn, account_id, straddling[i : i + _RUNS_PER_QUERY], True, tz)
    return out


def _local_groups(
    conn: Any, account_id: str, from_ms: int, to_ms: int, group_by: list[str], tz: dt.tzinfo
) -> list[dict[str, Any]]:
    """Grouped by day in ``tz``: the hour rows under their local day, the rest from the events."""
    parts = plan(from_ms, to_ms, days=False)
    rows = event_rows(conn, account_id, [(lo, hi) for s, lo, hi, _ in parts if s == EVENTS], True, tz)
    for source, lo, hi, _ in parts:
        if source == HOUR:
            rows += _local_hour_rows(conn, account_id, lo, hi, tz, "model" in group_by)
    return group_document(conn, rows, group_by)
