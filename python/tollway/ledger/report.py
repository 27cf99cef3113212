"""Usage reports from the events themselves (synchronous; call from a worker thread): a key's
last events, and the reference that the rollup-based reports (tollway.ledger.usage_report)
must equal, with the documents both build."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, and_, func, literal_column, or_, select

from tollway.store import Database, api_keys, usage_events


def month_start_ms(now_ms: int) -> int:
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp() * 1000)


def events_summary(db: Database, account_id: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Spend by key and model for events with from_ms <= created_at < to_ms, from the events alone
    (the reference tollway.ledger.usage_report.usage_summary is tested against)."""
    e = usage_events
    query = (
        select(
            e.c.key_id,
            e.c.model,
            func.sum(e.c.cost_micros),
            func.count(),
            func.sum(e.c.input_tokens + e.c.cache_read_tokens + e.c.cache_write_tokens),
            func.sum(e.c.output_tokens),
            func.avg(e.c.latency_ms),
        )
        .where(e.c.account_id == account_id, e.c.created_at >= from_ms, e.c.created_at < to_ms)
        .group_by(e.c.key_id, e.c.model)
        .order_by(e.c.key_id, e.c.model)
    )
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
        names = key_names(conn, {r[0] for r in rows})
    return summary_document(rows, names, from_ms, to_ms)


def key_names(conn: Connection, key_ids: set[str]) -> dict[str, str]:
    ids = sorted(key_ids)
    names: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        names.update(
            conn.execute(select(api_keys.c.id, api_keys.c.name).where(api_keys.c.id.in_(ids[i : i + 500]))).all()
        )
    return names


def summary_document(rows: Sequence[Sequence[Any]], names: dict[str, str], from_ms: int, to_ms: int) -> dict[str, Any]:
    """The /v1/usage body from (key_id, model, cost, count, input tokens, output tokens, average
    latency) rows in key_id, model order."""
    by_key: dict[str, dict[str, Any]] = {}
    for key_id, model, cost, count, tokens_in, tokens_out, avg_latency in rows:
        entry = by_key.setdefault(
            key_id,
            {
                "key_id": key_id,
                "name": names.get(key_id),
                "cost_micros": 0,
                "request_count": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "by_model": [],
            },
        )
        model_entry = {
            "model": model,
            "cost_micros": int(cost or 0),
            "request_count": int(count),
            "input_tokens": int(tokens_in or 0),
            "output_tokens": int(tokens_out or 0),
            "avg_latency_ms": round(float(avg_latency or 0), 1),
        }
        entry["by_model"].append(model_entry)
        for field in ("cost_micros", "request_count", "input_tokens", "output_tokens"):
            entry[field] += model_entry[field]
    keys = list(by_key.values())
    return {
        "object": "usage",
        "from_ms": from_ms,
        "to_ms": to_ms,
        "total_cost_micros": sum(k["cost_micros"] for k in keys),
        "request_count": sum(k["request_count"] for k in keys),
        "by_key": keys,
    }


def key_events(db: Database, key_id: str, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
    """(total cost of the key, its last ``limit`` events, newest first)."""
    e = usage_events
    with db.engine.connect() as conn:
        total = conn.execute(select(func.sum(e.c.cost_micros)).where(e.c.key_id == key_id)).scalar()
        rows = conn.execute(
            select(
                e.c.request_id,
                e.c.model,
                e.c.http_status,
                e.c.outcome,
                e.c.stream,
                e.c.latency_ms,
                e.c.cost_micros,
                e.c.input_tokens,
                e.c.output_tokens,
                e.c.cache_read_tokens,
                e.c.cache_write_tokens,
                e.c.estimated,
                e.c.created_at,
            )
            .where(e.c.key_id == key_id)
            .order_by(e.c.created_at.desc(), e.c.id.desc())
            .limit(limit)
        ).all()
    events = [
        {
            "request_id": r.request_id,
            "model": r.model,
            "status": r.http_status,
            "outcome": r.outcome,
            "stream": bool(r.stream),
            "latency_ms": r.latency_ms,
            "cost_micros": r.cost_micros,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cache_read_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_tokens,
            "estimated": bool(r.estimated),
            "created_at": r.created_at,
        }
        for r in rows
    ]
    return int(total or 0), events


GROUPS = ("key", "end_user", "model", "tag", "day")
_QUARTER_HOUR = 900_000
_DAY = 86_400_000


def day_label(ms: int, tz: Optional[dt.tzinfo]) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz or dt.timezone.utc).date().isoformat()


def event_rows(
    conn: Connection,
    account_id: str,
    ranges: Sequence[tuple[int, int]],
    with_day: bool,
    tz: Optional[dt.tzinfo] = None,
) -> list[tuple[Any, ...]]:
    """(key_id, model, day or None, cost, count, input tokens, output tokens) of the events with
    lo <= created_at < hi for one of ``ranges``. The day is the calendar day in ``tz``, exact
    across DST changes: events are summed per quarter hour (per day in UTC) in the database."""
    ranges = [(lo, hi) for lo, hi in ranges if lo < hi]
    if not ranges:
        return []
    e = usage_events
    local = tz not in (None, dt.timezone.utc)
    width = _QUARTER_HOUR if local else _DAY
    columns: list[Any] = [e.c.key_id, e.c.model]
    if with_day:
        columns.append(e.c.created_at // literal_column(str(width)))  # one expression in SELECT and GROUP BY
    when = or_(*(and_(e.c.created_at >= lo, e.c.created_at < hi) for lo, hi in ranges))
    query = (
        select(
            *columns,
            func.sum(e.c.cost_micros),
            func.count(),
            func.sum(e.c.input_tokens + e.c.cache_read_tokens + e.c.cache_write_tokens),
            func.sum(e.c.output_tokens),
        )
        .where(e.c.account_id == account_id, when)
        .group_by(*columns)
    )
    days: dict[int, str] = {}
    out = []
    for row in conn.execute(query):
        day = None
        if with_day:
            bucket = int(row[2])
            day = days.get(bucket)
            if day is None:
                day = days[bucket] = day_label(bucket * width, tz)
        out.append((row[0], row[1], day, *row[-4:]))
    return out


def group_document(conn: Connection, rows: Sequence[Sequence[Any]], group_by: list[str]) -> list[dict[str, Any]]:
    """The groups of /v1/usage from (key_id, model, day, cost, count, input, output) rows (several
    rows may share a group). ``end_user`` and ``tag`` come from the key as it is now (a key with
    several tags counts under each, so tag groups may add up to more than the total; a key with
    none under ``tag: null``)."""
    key_ids = sorted({r[0] for r in rows})
    keys: dict[str, Any] = {}
    for i in range(0, len(key_ids), 500):
        found = select(api_keys.c.id, api_keys.c.end_user_id, api_keys.c.tags).where(
            api_keys.c.id.in_(key_ids[i : i + 500])
        )
        keys.update({r.id: r for r in conn.execute(found)})
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key_id, model, day, cost, count, tokens_in, tokens_out in rows:
        key = keys.get(key_id)
        tags = (list(key.tags or []) if key is not None else []) or [None]
        for tag in tags if "tag" in group_by else [None]:
            values = {
                "key": key_id,
                "end_user": key.end_user_id if key is not None else None,
                "model": model,
                "tag": tag,
                "day": day,
            }
            ident = tuple(values[g] for g in group_by)
            entry = groups.get(ident)
            if entry is None:
                entry = groups[ident] = {
                    **{_FIELD[g]: values[g] for g in group_by},
                    "cost_micros": 0,
                    "request_count": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                }
            entry["cost_micros"] += int(cost or 0)
            entry["request_count"] += int(count)
            entry["input_tokens"] += int(tokens_in or 0)
            entry["output_tokens"] += int(tokens_out or 0)
    return sorted(groups.values(), key=lambda g: tuple(str(g[_FIELD[f]] or "") for f in group_by))


def events_groups(
    db: Database, account_id: str, from_ms: int, to_ms: int, group_by: list[str], tz: Optional[dt.tzinfo] = None
) -> list[dict[str, Any]]:
    """Spend, requests and tokens of events with from_ms <= created_at < to_ms, grouped by any
    of ``GROUPS``, from the events alone (the reference of usage_report.usage_groups)."""
    with db.engine.connect() as conn:
        return group_document(conn, event_rows(conn, account_id, [(from_ms, to_ms)], "day" in group_by, tz), group_by)


_FIELD = {"key": "key_id", "end_user": "end_user_id", "model": "model", "tag": "tag", "day": "day"}
