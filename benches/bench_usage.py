"""GET /v1/usage over a month of usage events, from the rollups, on SQLite and PostgreSQL.

Smoke run (part of the test suite: 5,000 events, each query checked against the event scan):
    .venv/bin/python -m pytest benches/bench_usage.py
The figures (1,000,000 events in November 2026, 100 keys, 50 end users, 5 models):
    TOLLWAY_BENCH_USAGE_EVENTS=1000000 TOLLWAY_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m pytest benches/bench_usage.py --benchmark-enable -p no:cacheprovider \\
      --benchmark-columns=min,median,mean,max,rounds
Each benchmark is the route's work: usage_report (the summary, + the groups with group_by) and
the JSON encoding, for [Nov 1 00:00:12.345, Dec 1 - 6.789 s) (partial hours at both ends) and
for the calendar month, in UTC and with the account in New York / Kolkata (its day and month
rows recomputed for the zone first, then VACUUM ANALYZE on PostgreSQL, as autovacuum would). The event
scans they replaced run once each at the end (``test_event_scan_*``) for comparison, and the
writer's cost per event with and without the rollup upsert (``test_writer_*``).
"""

from __future__ import annotations

import os
import random
import secrets
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import insert

from tests.conftest import DATABASES, throwaway_database
from tollway.ledger import rollups
from tollway.ledger.report import events_groups, events_summary
from tollway.ledger.rollups import USAGE_COLUMNS, insert_statement
from tollway.ledger.usage_report import usage_report
from tollway.ledger.writer import usage_row
from tollway.store import Database, accounts, api_keys

N = int(os.environ.get("TOLLWAY_BENCH_USAGE_EVENTS", "5000"))
SMOKE = N <= 20_000
MONTH = 1_793_491_200_000  # 2026-11-01 00:00 UTC
MONTH_END = 1_796_083_200_000  # 2026-12-01 00:00 UTC
FROM_MS, TO_MS = MONTH + 12_345, MONTH_END - 6_789
KEYS, END_USERS = 100, 50
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "claude-haiku-4", "gemini-2.5-flash")
ACCOUNT = "acct_bench"
# Filling 1,000,000 events (bulk insert, then the rebuild) takes minutes: beyond the suite's 120 s.
pytestmark = pytest.mark.timeout(120 if SMOKE else 3600)
GROUP_BYS = {
    "none": [],
    "key": ["key"],
    "model": ["model"],
    "end_user,day": ["end_user", "day"],
    "tag,day": ["tag", "day"],
}


def _fill(db: Database) -> int:
    """The bench account, its keys and N events; returns how many fall in [FROM_MS, TO_MS)."""
    rng = random.Random(42)
    keys = [f"key_bench_{i:03d}" for i in range(KEYS)]
    with db.engine.begin() as conn:
        conn.execute(insert(accounts).values(id=ACCOUNT, name="bench", created_at=0))
        conn.execute(
            insert(api_keys),
            [
                {"id": k, "account_id": ACCOUNT, "name": k, "scope": "standard", "secret_hash": secrets.token_hex(32),
                 "secret_hint": "x", "end_user_id": f"user_{i % END_USERS}", "metadata": {}, "created_at": 0,
                 "tags": [["free"], ["pro"], ["pro", "eu"], []][i % 4]}
                for i, k in enumerate(keys)
            ],
        )  # fmt: skip
    columns = USAGE_COLUMNS
    in_window = 0
    chunk = 50_000
    for start in range(0, N, chunk):
        rows = []
        for i in range(start, min(N, start + chunk)):
            t = rng.randrange(MONTH, MONTH_END)
            in_window += FROM_MS <= t < TO_MS
            rows.append(
                (f"ev_{i:09d}", f"req_{i:09d}", ACCOUNT, keys[rng.randrange(KEYS)], MODELS[rng.randrange(5)], "p",
                 200, "ok", i % 3 == 0, rng.randrange(2000), rng.randrange(800), 0, 0, False,
                 rng.randrange(5000), rng.randrange(3000), t, t)
            )  # fmt: skip
        if db.is_sqlite:
            marks = ", ".join("?" for _ in columns)
            with db.engine.begin() as conn:
                conn.exec_driver_sql(f"INSERT INTO usage_events ({', '.join(columns)}) VALUES ({marks})", rows)
        else:
            raw = db.engine.raw_connection()
            try:
                with raw.cursor() as cur, cur.copy(f"COPY usage_events ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                raw.commit()
            finally:
                raw.close()
    rollups.rebuild(db)
    _analyze(db)
    return in_window


def _analyze(db: Database) -> None:
    """PostgreSQL: VACUUM ANALYZE the tables just filled or rewritten, as autovacuum does after
    a bulk change (without statistics the planner takes the month's rows for one)."""
    if not db.is_sqlite:
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("usage_events", "usage_rollups", "api_keys", "accounts"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def _zone(db: Database, zone: Any) -> None:
    """The bench account's zone (PATCH /v1/account's work: its day and month rows recomputed)."""
    name = zone.key if zone is not None else None
    if getattr(db, "zone", None) != name:
        with db.engine.begin() as conn:
            rollups.set_zone(conn, ACCOUNT, name)
        _analyze(db)
        db.zone = name  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=DATABASES)
def db(request) -> Iterator[Database]:
    with throwaway_database(request.param) as url:
        database = Database(url)
        database.migrate()
        database.in_window = _fill(database)  # type: ignore[attr-defined]
        try:
            yield database
        finally:
            database.dispose()


def _route_work(db: Database, group_by: list[str], lo: int = FROM_MS, hi: int = TO_MS) -> bytes:
    return orjson.dumps(usage_report(db, ACCOUNT, lo, hi, group_by))  # = the /v1/usage handler


def _reference(db: Database, group_by: list[str], tz: Any, lo: int = FROM_MS, hi: int = TO_MS) -> bytes:
    body = events_summary(db, ACCOUNT, lo, hi)
    if group_by:
        body["group_by"] = group_by
        body["groups"] = events_groups(db, ACCOUNT, lo, hi, group_by, tz)
    return orjson.dumps(body)


CASES = [("none", None), ("key", None), ("model", None), ("end_user,day", None), ("tag,day", None),
         ("none", "America/New_York"), ("end_user,day", "America/New_York"),
         ("none", "Asia/Kolkata"), ("end_user,day", "Asia/Kolkata"), ("tag,day", "Asia/Kolkata")]  # fmt: skip


@pytest.mark.parametrize("window", ["partial", "calendar"])
@pytest.mark.parametrize(("name", "zone"), CASES, ids=[f"{n}-{z or 'UTC'}" for n, z in CASES])
def test_usage_month(benchmark, db: Database, name: str, zone: Any, window: str) -> None:
    """``partial``: [Nov 1 00:00:12.345, Dec 1 - 6.789 s); ``calendar``: the whole of November."""
    group_by = GROUP_BYS[name]
    tz = ZoneInfo(zone) if zone else None
    lo, hi = (FROM_MS, TO_MS) if window == "partial" else (MONTH, MONTH_END)
    _zone(db, tz)
    body = benchmark.pedantic(_route_work, args=(db, group_by, lo, hi), rounds=3 if SMOKE else 10, warmup_rounds=1)
    assert orjson.loads(body)["request_count"] == (db.in_window if window == "partial" else N)  # type: ignore[attr-defined]
    if SMOKE:  # the big run compares once, in test_event_scan
        assert body == _reference(db, group_by, tz, lo, hi)


@pytest.mark.parametrize("name", ["none", "end_user,day"])
def test_event_scan(benchmark, db: Database, name: str) -> None:
    """The event scans the rollups replaced (once: at 1M events they take seconds)."""
    group_by = GROUP_BYS[name]
    _zone(db, None)
    body = benchmark.pedantic(_reference, args=(db, group_by, None), rounds=1, iterations=1)
    assert body == _route_work(db, group_by)


def _batch(n: int) -> list[dict[str, Any]]:
    rng = random.Random()
    return [
        usage_row(request_id="req", account_id=ACCOUNT, key_id=f"key_bench_{rng.randrange(KEYS):03d}",
                  model=MODELS[rng.randrange(5)], provider="p", http_status=200, outcome="ok", stream=False,
                  input_tokens=10, output_tokens=10, cost_micros=100, latency_ms=10,
                  created_at=MONTH_END + rng.randrange(3_600_000))
        for _ in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("rollup", [False, True], ids=["events_only", "with_rollups"])
@pytest.mark.parametrize("batch", [1, 100])
def test_writer(benchmark, db: Database, rollup: bool, batch: int) -> None:
    """One writer transaction of ``batch`` events: the old insert alone, or with the rollups."""
    sql, order = insert_statement(db)

    def write(rows: list[dict[str, Any]]) -> None:
        with db.engine.begin() as conn:
            if rollup:
                rollups.insert_events(conn, db, rows)
            else:
                conn.exec_driver_sql(sql, [tuple(r[k] for k in order) for r in rows] if order else rows)

    benchmark.pedantic(write, setup=lambda: ((_batch(batch),), {}), rounds=5 if SMOKE else 200)
