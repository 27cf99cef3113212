"""/v1/usage from the rollups (tollway.ledger.rollups): exact for any from_ms / to_ms.

The account's months and days (in its time zone, as its rows are) that lie wholly in the
window [from_ms, to_ms) are read from their rows (months only for the sums per key and model:
a month row has no days); a month the window cuts, as its days inside or its row less its days
outside. A day the window cuts is read as its part
inside the window, or as its day row less its part outside, whichever reads fewer rows;
a part is its whole hours' hour rows and the events of its partial hours (a day need not
start on a UTC hour: Asia/Kolkata's starts at :30). Every part lies in one day, so each
carries its day; all of it is summed, and grouped by key, model, end user and day, in one
query. The answers are equal to the event scans of tollway.ledger.report
(tests/test_usage_rollups_property.py holds them to it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, Sequence

import orjson
from sqlalchemy import BigInteger, Integer, Text, cast, func, literal, select, union_all

from tollway.ledger import local_days
from tollway.ledger.report import group_document, key_names, summary_document
from tollway.ledger.rollups import DAY, DAY_BY_KEY, HOUR, HOUR_BY_KEY, MONTH
from tollway.store import Database, accounts, api_keys, usage_events
from tollway.store.schema import usage_rollups

EVENTS = 0
Part = tuple[int, int, int, int, Optional[int]]  # (EVENTS, HOUR or DAY; lo; hi; sign; day bucket or None)
_ATTEMPTS = 3


def _ceil(ms: int, span: int) -> int:
    return -(-ms // span) * span


def _pieces(lo: int, hi: int, sign: int, day: int) -> list[Part]:
    """[lo, hi), within one day: the events of its partial hours, the hour rows of its whole ones."""
    if lo >= hi:
        return []
    h0, h1 = _ceil(lo, HOUR), hi // HOUR * HOUR
    if h0 >= h1:
        return [(EVENTS, lo, hi, sign, day)]
    parts = [(EVENTS, lo, h0, sign, day), (HOUR, h0, h1, sign, day), (EVENTS, h1, hi, sign, day)]
    return [p for p in parts if p[1] < p[2]]


def _cost(parts: Sequence[Part]) -> float:
    """Rows read, per key and model: a month row one, a day row range its days, an hour row range
    its hours, an events piece about three an hour (a busy key's), and one more for each part."""
    spans = {MONTH: MONTH, DAY: DAY, HOUR: HOUR}
    return sum(1 + ((hi - lo) * 3 / HOUR if src == EVENTS else (hi - lo) // spans[src]) for src, lo, hi, _, _ in parts)


Day = tuple[int, list[tuple[int, int]]]  # (bucket, its ranges): local_days.days


def _day_plan(days: Sequence[Day], lo: int, hi: int, sign: int) -> list[Part]:
    """[lo, hi) from day rows (days wholly inside), and each day it cuts as its part inside or
    as its row less its part outside (``days``: the days meeting [lo, hi), whole)."""
    parts: list[Part] = []
    for bucket, ranges in days:
        inside = [(max(s, lo), min(e, hi)) for s, e in ranges if max(s, lo) < min(e, hi)]
        if not inside:
            continue
        if len(ranges) == 1 and inside[0] == ranges[0]:
            parts.append((DAY, bucket, bucket + DAY, sign, None))
            continue
        direct = [p for a, b in inside for p in _pieces(a, b, sign, bucket)]
        if len(ranges) == 1:
            (start, end), (a, b) = ranges[0], inside[0]
            less = [(DAY, bucket, bucket + DAY, sign, None), *_pieces(start, a, -sign, bucket),
                    *_pieces(b, end, -sign, bucket)]  # fmt: skip
            if _cost(less) < _cost(direct):
                direct = less
        parts += direct
    return parts


def _months(days: Sequence[Day]) -> list[tuple[int, Optional[tuple[int, int]], list[Day]]]:
    """The months of ``days``: (bucket, its one range, or None when ``days`` lack some of its days
    or a day of it is not one range; its days)."""
    members: dict[int, list[Day]] = {}
    for day in days:
        members.setdefault(local_days.month_bucket(day[0]), []).append(day)
    result = []
    for month, its in members.items():
        span: Optional[tuple[int, int]] = None
        complete = its[0][0] == month and its[-1][0] + DAY == local_days.next_month(month)
        if complete and all(len(ranges) == 1 for _, ranges in its):
            if all(a[1][0][1] == b[1][0][0] for a, b in zip(its, its[1:], strict=False)):
                span = (its[0][1][0][0], its[-1][1][0][1])
        result.append((month, span, its))
    return result


def plan(from_ms: int, to_ms: int, tz: Optional[dt.tzinfo], months: bool = False) -> list[Part]:
    """The parts covering [from_ms, to_ms) for day rows in ``tz`` (None: UTC); with ``months``,
    month rows too (a month cut by the window is read as its part inside, or its row less its
    part outside, whichever reads fewer rows). Parts of day and month rows carry no day: only
    a report without days may use month rows."""
    if from_ms >= to_ms:
        return []
    q0, q1 = from_ms - from_ms % local_days.QUARTER, _ceil(to_ms, local_days.QUARTER)
    margin = 33 * DAY if months else 2 * DAY
    days = local_days.days(q0 - margin, q1 + margin, tz)
    if not months:
        return _merged(_day_plan(days, from_ms, to_ms, 1))
    parts: list[Part] = []
    for month, span, members in _months(days):
        if span is None:
            parts += _day_plan(members, from_ms, to_ms, 1)
            continue
        start, end = span
        if end <= from_ms or start >= to_ms:
            continue
        row = (MONTH, month, local_days.next_month(month), 1, None)
        if from_ms <= start and end <= to_ms:
            parts.append(row)
            continue
        direct = _day_plan(members, from_ms, to_ms, 1)
        less = [row, *_day_plan(members, start, from_ms, -1),
                *_day_plan(members, to_ms, end, -1)]  # fmt: skip
        parts += less if _cost(less) < _cost(direct) else direct
    return _merged(parts)


def _merged(parts: list[Part]) -> list[Part]:
    """Adjacent ranges of day (or month) rows of one sign as one range."""
    rows = sorted(p for p in parts if p[0] in (DAY, MONTH) and p[4] is None)
    merged: list[Part] = []
    for p in rows:
        last = merged[-1] if merged else None
        if last is not None and last[0] == p[0] and last[2] == p[1] and last[3] == p[3]:
            merged[-1] = (p[0], last[1], p[2], p[3], None)
        else:
            merged.append(p)
    return merged + [p for p in parts if not (p[0] in (DAY, MONTH) and p[4] is None)]


def _signed(column: Any, sign: int) -> Any:
    return column if sign == 1 else column * literal(sign, Integer)


def _part_query(account_id: str, part: Part, by_model: bool) -> Any:
    e, r = usage_events, usage_rollups
    source, lo, hi, sign, day = part
    span = source if by_model else {DAY: DAY_BY_KEY, HOUR: HOUR_BY_KEY}.get(source, source)  # 5x fewer rows
    if source == EVENTS:
        return select(
            e.c.key_id.label("key_id"),
            e.c.model.label("model"),
            literal(day, BigInteger).label("day"),
            _signed(e.c.cost_micros, sign).label("cost"),
            literal(sign, Integer).label("n"),
            _signed(e.c.input_tokens + e.c.cache_read_tokens + e.c.cache_write_tokens, sign).label("tin"),
            _signed(e.c.output_tokens, sign).label("tout"),
            _signed(e.c.latency_ms, sign).label("lat"),
        ).where(e.c.account_id == account_id, e.c.created_at >= lo, e.c.created_at < hi)
    return select(
        r.c.key_id.label("key_id"),
        r.c.model.label("model"),
        (r.c.bucket_ms if day is None else literal(day, BigInteger)).label("day"),
        _signed(r.c.cost_micros, sign).label("cost"),
        _signed(r.c.request_count, sign).label("n"),
        _signed(r.c.input_tokens + r.c.cache_read_tokens + r.c.cache_write_tokens, sign).label("tin"),
        _signed(r.c.output_tokens, sign).label("tout"),
        _signed(r.c.latency_ms, sign).label("lat"),
    ).where(r.c.account_id == account_id, r.c.span_ms == span, r.c.bucket_ms >= lo, r.c.bucket_ms < hi)


def _grouped(conn: Any, account_id: str, parts: Sequence[Part], fields: Sequence[str]) -> list[tuple[Any, ...]]:
    """(the ``fields`` of each group..., cost, count, input, output, latency sum) over the parts,
    fields among key_id, model, day (a bucket), end_user and tags (the key's, as it is now)."""
    if not parts:
        return []
    queries = [_part_query(account_id, p, "model" in fields) for p in parts]
    u = (union_all(*queries) if len(queries) > 1 else queries[0]).subquery()
    source: Any = u
    if "end_user" in fields or "tags" in fields:
        source = u.outerjoin(api_keys, api_keys.c.id == u.c.key_id)
    columns = {
        "key_id": u.c.key_id, "model": u.c.model, "day": u.c.day, "end_user": api_keys.c.end_user_id,
        "tags": cast(api_keys.c.tags, Text),  # the key's list as JSON text: keys with the same tags group together
    }  # fmt: skip
    keys = [columns[f] for f in fields]
    # BIGINT sums: PostgreSQL's SUM of a BIGINT is a NUMERIC, each a Decimal to the driver (slow).
    sums = [func.sum(c).cast(BigInteger) for c in (u.c.cost, u.c.n, u.c.tin, u.c.tout, u.c.lat)]
    query = select(*keys, *sums).select_from(source).group_by(*keys).having(func.sum(u.c.n) != 0).order_by(*keys)
    return [tuple(row) for row in conn.execute(query)]


def _used(conn: Any, account_id: str, from_ms: int, to_ms: int) -> tuple[int, int]:
    """[from_ms, to_ms) narrowed to the account's first and last event (the same sums, fewer parts)."""
    e = usage_events
    # Two subqueries: SQLite reads a MIN or a MAX alone off the index, both at once by a scan.
    first, last = conn.execute(
        select(
            select(func.min(e.c.created_at)).where(e.c.account_id == account_id).scalar_subquery(),
            select(func.max(e.c.created_at)).where(e.c.account_id == account_id).scalar_subquery(),
        )
    ).one()
    if first is None:
        return from_ms, from_ms
    return max(from_ms, int(first)), min(to_ms, int(last) + 1)


def _zone_name(conn: Any, account_id: str) -> Optional[str]:
    return conn.execute(select(accounts.c.timezone).where(accounts.c.id == account_id)).scalar_one_or_none()


_FIELD = {"key": "key_id", "end_user": "end_user_id", "model": "model", "tag": "tag", "day": "day"}


def _groups(
    conn: Any, account_id: str, parts: Sequence[Part], group_by: list[str], summary_rows: Sequence[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """The groups, sorted as report.group_document sorts them. Without ``day`` they are sums of
    ``summary_rows`` (per key and model); with it, of one more query grouped in the database
    as asked (by the key's list of tags for ``tag``, each list then counted under its tags)."""
    if "day" not in group_by:
        return group_document(conn, [(k, m, None, *sums[:4]) for k, m, *sums in summary_rows], group_by)
    labels: dict[int, str] = {}

    def day(bucket: Any) -> str:
        found = labels.get(bucket)
        if found is None:
            found = labels[bucket] = local_days.label(int(bucket))
        return found

    fields = [{"key": "key_id", "tag": "tags"}.get(g, g) for g in group_by]
    rows = _grouped(conn, account_id, parts, fields)
    at_day, at_tag = group_by.index("day"), group_by.index("tag") if "tag" in group_by else -1
    names = [_FIELD[g] for g in group_by]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        values = list(row[: len(group_by)])
        values[at_day] = day(values[at_day])
        cost, count, tokens_in, tokens_out, _ = row[len(group_by) :]
        # A key with several tags counts under each, one with none under null (as report.group_document).
        tags = (orjson.loads(values[at_tag]) if values[at_tag] else None) or [None] if at_tag >= 0 else [None]
        for tag in tags:
            if at_tag >= 0:
                values[at_tag] = tag
            ident = tuple(values)
            entry = groups.get(ident)
            if entry is None:
                entry = groups[ident] = dict(zip(names, values, strict=True))
                entry.update(cost_micros=0, request_count=0, input_tokens=0, output_tokens=0)
            entry["cost_micros"] += cost or 0
            entry["request_count"] += count
            entry["input_tokens"] += tokens_in or 0
            entry["output_tokens"] += tokens_out or 0
    return sorted(groups.values(), key=lambda g: tuple(str(g[n] or "") for n in names))


def usage_report(db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str]) -> dict[str, Any]:
    """The /v1/usage body: the summary, and with ``group_by`` its groups, days in the account's
    zone (= report.events_summary and report.events_groups in that zone)."""
    with db.engine.connect() as conn:
        for _ in range(_ATTEMPTS):  # the zone the day rows were read in, unchanged meanwhile
            name = _zone_name(conn, account_id)
            tz = local_days.zone_of(name)
            lo, hi = _used(conn, account_id, from_ms, to_ms)
            rows = _grouped(conn, account_id, plan(lo, hi, tz, months=True), ["key_id", "model"])
            lines = [(k, m, cost, n, tin, tout, lat / n) for k, m, cost, n, tin, tout, lat in rows]
            body = summary_document(lines, key_names(conn, {r[0] for r in rows}), from_ms, to_ms)
            if group_by:
                body["group_by"] = group_by
                parts = plan(lo, hi, tz) if "day" in group_by else []
                body["groups"] = _groups(conn, account_id, parts, group_by, rows)
            if _zone_name(conn, account_id) == name:
                break
    return body


def usage_summary(db: Database, account_id: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Spend by key and model for events with from_ms <= created_at < to_ms (= report.events_summary)."""
    return usage_report(db, account_id, from_ms, to_ms, [])


def usage_groups(db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str]) -> list[dict[str, Any]]:
    """The events with from_ms <= created_at < to_ms grouped by ``group_by`` (= report.events_groups)."""
    return usage_report(db, account_id, from_ms, to_ms, group_by).get("groups", [])
