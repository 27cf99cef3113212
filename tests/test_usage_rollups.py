"""Usage rollups (tollway.ledger.rollups): written with the events, never twice, rebuilt and
filled by the migration equal to the events; the CSV's rows."""

from __future__ import annotations

import random
import secrets
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, insert, select

from tests.conftest import DATABASES, migrated_database, throwaway_database
from tollway.ledger import rollups
from tollway.ledger.replay import replay
from tollway.ledger.report import events_groups, events_summary
from tollway.ledger.routes import csv_lines, usd
from tollway.ledger.usage_report import usage_groups, usage_summary
from tollway.ledger.writer import UsageWriter, usage_row
from tollway.store import Database, accounts, api_keys, usage_events
from tollway.store.schema import usage_rollups

MODELS = ("gpt-x", "claude,y", 'm"z')  # a comma and a quote: the CSV must quote them
DAY0 = 1_772_928_000_000  # 2026-03-08 00:00 UTC (US DST starts that day)


@pytest.fixture(params=DATABASES)
def db(request) -> Iterator[Database]:
    with migrated_database(request.param) as database:
        yield database


def new_account(db: Database, n_keys: int = 4, rng: Optional[random.Random] = None) -> tuple[str, list[str]]:
    """An account with keys: some with an end user, some with tags (one with none, one with two)."""
    rng = rng or random.Random(0)
    account = "acct_" + secrets.token_hex(6)
    keys = [f"key_{account[5:]}_{i}" for i in range(n_keys)]
    tag_choices: list[Optional[list[str]]] = [None, [], ["a"], ["a", "b"], ["b"]]
    with db.engine.begin() as conn:
        conn.execute(insert(accounts).values(id=account, name=account, created_at=0))
        for i, key in enumerate(keys):
            conn.execute(
                insert(api_keys).values(
                    id=key, account_id=account, name=f"k{i}", scope="standard", secret_hash=secrets.token_hex(32),
                    secret_hint="x", end_user_id=rng.choice([None, "u1", "u2"]), metadata={},
                    created_at=0, tags=tag_choices[i % len(tag_choices)],
                )
            )  # fmt: skip
    return account, keys


def event(account: str, key: str, model: str, created_at: int, rng: random.Random) -> dict[str, Any]:
    return usage_row(
        request_id="req_" + secrets.token_hex(6), account_id=account, key_id=key, model=model, provider="p",
        http_status=200, outcome="ok", stream=rng.random() < 0.5, input_tokens=rng.randrange(0, 5000),
        output_tokens=rng.randrange(0, 5000), cache_read_tokens=rng.randrange(0, 300),
        cache_write_tokens=rng.randrange(0, 300), cost_micros=rng.randrange(0, 2_000_000),
        latency_ms=rng.randrange(0, 30_000), created_at=created_at,
    )  # fmt: skip


def random_events(account: str, keys: list[str], n: int, lo: int, hi: int, rng: random.Random) -> list[dict[str, Any]]:
    return [event(account, rng.choice(keys), rng.choice(MODELS), rng.randrange(lo, hi), rng) for _ in range(n)]


def write(db: Database, rows: list[dict[str, Any]], check_first: bool = False) -> list[dict[str, Any]]:
    with db.engine.begin() as conn:
        return rollups.insert_events(conn, db, rows, check_first=check_first)


def set_zone(db: Database, account: str, zone: Optional[str]) -> None:
    """The account's time zone, as PATCH /v1/account sets it (its day and month rows recomputed)."""
    with db.engine.begin() as conn:
        rollups.set_zone(conn, account, None if zone in (None, "UTC") else zone)


def event_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(usage_events)).scalar_one()


def rollup_requests(db: Database, span: int) -> int:
    with db.engine.connect() as conn:
        query = select(func.sum(usage_rollups.c.request_count)).where(usage_rollups.c.span_ms == span)
        return int(conn.execute(query).scalar() or 0)


def test_events_written_twice_count_once(db: Database) -> None:
    rng = random.Random(1)
    account, keys = new_account(db)
    rows = random_events(account, keys, 300, DAY0, DAY0 + 3 * rollups.DAY, rng)
    assert len(write(db, rows[:200])) == 200
    with pytest.raises(rollups.DuplicateEvents):  # rolled back: nothing of this batch stays
        write(db, rows[150:])
    assert event_count(db) == 200 and rollup_requests(db, rollups.HOUR) == 200
    assert [r["event_id"] for r in write(db, rows[150:], check_first=True)] == [r["event_id"] for r in rows[200:]]
    assert write(db, rows, check_first=True) == []
    assert event_count(db) == 300 and rollup_requests(db, rollups.HOUR) == rollup_requests(db, rollups.DAY) == 300
    assert rollups.differences(db) == []


def test_writer_retrying_a_committed_batch_adds_nothing(db: Database, tmp_path: Path) -> None:
    """A commit whose acknowledgement was lost is retried: the writer meets its own rows."""
    rng = random.Random(2)
    account, keys = new_account(db)
    rows = random_events(account, keys, 120, DAY0, DAY0 + rollups.DAY, rng)
    write(db, rows[:50])  # as if the writer's first attempt had committed them
    writer = UsageWriter(db, tmp_path)
    writer.start()
    for row in rows:
        writer.submit(row)
    assert writer.flush()
    writer.close()
    assert event_count(db) == 120
    assert rollups.differences(db) == []
    assert rollup_requests(db, rollups.HOUR) == 120


def test_replay_counts_only_the_rows_it_inserts(db: Database, tmp_path: Path) -> None:
    rng = random.Random(3)
    account, keys = new_account(db)
    rows = random_events(account, keys, 80, DAY0, DAY0 + rollups.DAY, rng)
    write(db, rows[:30])  # committed just before the crash
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "unwritten-usage-1.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    result = replay(db, tmp_path / "journal", spill)
    assert result.rows_inserted == 50
    assert event_count(db) == 80 and rollup_requests(db, rollups.DAY) == 80
    assert rollups.differences(db) == []
    (spill / "unwritten-usage-2.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert replay(db, tmp_path / "journal", spill).rows_inserted == 0  # a replay repeated after a crash
    assert rollups.differences(db) == [] and rollup_requests(db, rollups.DAY) == 80


def test_rebuild_and_verify(db: Database) -> None:
    rng = random.Random(4)
    account, keys = new_account(db)
    other, other_keys = new_account(db)
    write(db, random_events(account, keys, 200, DAY0, DAY0 + 2 * rollups.DAY, rng))
    write(db, random_events(other, other_keys, 50, DAY0, DAY0 + 2 * rollups.DAY, rng))
    with db.engine.begin() as conn:  # damage: one row off, one missing, one that should not exist
        conn.execute(usage_rollups.update().where(usage_rollups.c.account_id == account).values(cost_micros=1))
        conn.execute(
            usage_rollups.delete().where(usage_rollups.c.account_id == other, usage_rollups.c.span_ms == rollups.DAY)
        )
        conn.execute(
            insert(usage_rollups).values(
                account_id=other, span_ms=rollups.HOUR, bucket_ms=0, key_id="k", model="m", request_count=1,
                cost_micros=1, input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, latency_ms=0,
            )
        )  # fmt: skip
    wrong = rollups.differences(db)
    assert {w[0] for w in wrong} == {account, other}
    assert any(w[5] is None for w in wrong) and any(w[6] is None for w in wrong)
    rollups.rebuild(db, account)
    assert {w[0] for w in rollups.differences(db)} == {other}
    written = rollups.rebuild(db)
    assert rollups.differences(db) == []
    with db.engine.connect() as conn:
        assert written == conn.execute(select(func.count()).select_from(usage_rollups)).scalar_one()


@pytest.mark.parametrize("kind", DATABASES)
def test_migration_fills_the_rollups_from_existing_events(kind: str) -> None:
    with throwaway_database(kind) as url:
        db = Database(url)
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("tollway.store").joinpath("migrations")))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0006_key_policy")
        rng = random.Random(5)
        rows = []
        for account, zone in (("acct_old", None), ("acct_kolkata", "Asia/Kolkata")):
            with db.engine.begin() as conn:
                conn.execute(insert(accounts).values(id=account, name=account, created_at=0, timezone=zone))
            rows += random_events(account, ["key_a", "key_b"], 100, DAY0, DAY0 + 3 * rollups.DAY, rng)
        with db.engine.begin() as conn:
            conn.execute(insert(usage_events), rows)
        db.migrate()  # 0007 fills UTC days, 0009 recomputes them in each account's zone, with months
        assert rollups.differences(db) == []
        for span in rollups.SPANS:
            assert rollup_requests(db, span) == 200
        from collections import Counter
        from zoneinfo import ZoneInfo

        from tollway.ledger.local_days import label
        from tollway.ledger.report import day_label

        kolkata = ZoneInfo("Asia/Kolkata")
        expected = Counter(day_label(r["created_at"], kolkata) for r in rows if r["account_id"] == "acct_kolkata")
        with db.engine.connect() as conn:
            found = Counter()
            for bucket, n in conn.execute(
                select(usage_rollups.c.bucket_ms, usage_rollups.c.request_count).where(
                    usage_rollups.c.account_id == "acct_kolkata", usage_rollups.c.span_ms == rollups.DAY
                )
            ):
                found[label(bucket)] += n
        utc = Counter(day_label(r["created_at"], None) for r in rows if r["account_id"] == "acct_kolkata")
        assert found == expected != utc  # Kolkata's calendar days, not UTC's
        db.dispose()


def test_reports_from_rollups_equal_the_event_scans(db: Database) -> None:
    """A fixed sample (the property test, tests/test_usage_rollups_property.py, draws many more)."""
    from zoneinfo import ZoneInfo

    rng = random.Random(6)
    account, keys = new_account(db, 6)
    write(db, random_events(account, keys, 2000, DAY0 - rollups.DAY, DAY0 + 4 * rollups.DAY, rng))
    for lo, hi in [(0, DAY0 + 10 * rollups.DAY), (DAY0 + 1, DAY0 + 2 * rollups.DAY - 1), (DAY0 + 5, DAY0 + 7)]:
        assert usage_summary(db, account, lo, hi) == events_summary(db, account, lo, hi)
        for tz in (None, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Asia/Kathmandu")):
            set_zone(db, account, tz and tz.key)
            for group_by in (["key"], ["day"], ["tag", "day"], ["end_user", "model", "day", "key", "tag"]):
                assert usage_groups(db, account, lo, hi, group_by) == events_groups(db, account, lo, hi, group_by, tz)


def test_csv_lines_and_usd() -> None:
    assert usd(0) == "0.000000" and usd(1) == "0.000001" and usd(12_345_678) == "12.345678" and usd(-5) == "-0.000005"
    groups = [
        {
            "model": "a,b",
            "tag": None,
            "cost_micros": 1_500_000,
            "request_count": 2,
            "input_tokens": 3,
            "output_tokens": 4,
        }
    ]
    assert csv_lines(groups, ["model", "tag"]) == [
        ["model", "tag", "request_count", "input_tokens", "output_tokens", "cost_micros", "cost_usd"],
        ["a,b", "", 2, 3, 4, 1_500_000, "1.500000"],
    ]


def test_day_grouping_exact_at_every_quarter_hour(db: Database) -> None:
    """Events on and around every quarter hour over DST changes (New York, Lord Howe's half hour,
    Chatham's +13:45 changing on the UTC day of a local midnight at :15) and fractional offsets."""
    from zoneinfo import ZoneInfo

    rng = random.Random(7)
    account, keys = new_account(db, 3)
    rows = []
    for start in (DAY0 - rollups.DAY, 1_775_347_200_000 - 2 * rollups.DAY):
        for q in range(0, 3 * rollups.DAY, 900_000):
            for delta in (-1, 0, 1):
                rows.append(event(account, rng.choice(keys), rng.choice(MODELS), start + q + delta, rng))
    write(db, rows)
    zones = ("America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata", "Asia/Kathmandu")
    for tz in (None, *(ZoneInfo(z) for z in zones)):
        set_zone(db, account, tz and tz.key)
        assert rollups.differences(db, account) == []
        for lo, hi in [(0, 2_000_000_000_000), (DAY0 - 7_654_321, DAY0 + 2 * rollups.DAY + 1_234_567)]:
            for group_by in (["day"], ["model", "day"]):
                assert usage_groups(db, account, lo, hi, group_by) == events_groups(db, account, lo, hi, group_by, tz)


def test_a_tag_changed_later_regroups_past_usage_as_before(db: Database) -> None:
    """Tags and end users are the key's when the report is read (as the event scans always did)."""
    rng = random.Random(8)
    account, keys = new_account(db, 2)
    write(db, random_events(account, keys, 100, DAY0, DAY0 + 2 * rollups.DAY, rng))
    with db.engine.begin() as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == keys[0]).values(tags=["renamed"], end_user_id="u9"))
    for group_by in (["tag"], ["end_user", "tag", "day"]):
        groups = usage_groups(db, account, 0, DAY0 + 3 * rollups.DAY, group_by)
        assert groups == events_groups(db, account, 0, DAY0 + 3 * rollups.DAY, group_by)
        assert "renamed" in {g["tag"] for g in groups}
    assert "u9" in {g["end_user_id"] for g in usage_groups(db, account, 0, DAY0 + 3 * rollups.DAY, ["end_user"])}
