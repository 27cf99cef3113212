"""Property: /v1/usage answered from the rollups equals the event scans it replaced
(tollway.ledger.report.events_summary / events_groups), on random events written in random
batches (some of them twice), random [from_ms, to_ms), random group_by and time zones with
DST changes and offsets that are not whole hours."""

from __future__ import annotations

import random
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATABASES, migrated_database
from tests.test_usage_rollups import new_account, random_events, set_zone, write
from tollway.ledger import rollups
from tollway.ledger.report import GROUPS, events_groups, events_summary
from tollway.ledger.usage_report import usage_groups, usage_summary
from tollway.store import Database

HOUR, DAY = rollups.HOUR, rollups.DAY
# Around DST changes (US spring forward, EU fall back, Lord Howe's half-hour change) and the
# turn of a month (Nov 1 2026: also the US fall back).
BASES = (1_772_928_000_000, 1_792_886_400_000, 1_775_347_200_000, 1_793_491_200_000)
ZONES = (
    None, "UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
    "Pacific/Chatham",
)  # fmt: skip


@pytest.fixture(scope="module", params=DATABASES)
def db(request) -> Iterator[Database]:
    with migrated_database(request.param) as database:
        yield database


def _moment(base: int, span: int) -> st.SearchStrategy[int]:
    """A time near ``base``: often on an hour or a day, else any millisecond."""
    offset = st.integers(-span, span)
    return st.one_of(
        offset.map(lambda o: base + o),
        offset.map(lambda o: base + o // HOUR * HOUR),
        offset.map(lambda o: base + o // DAY * DAY),
        offset.map(lambda o: base + o // 900_000 * 900_000),
    )


@st.composite
def scenarios(draw):
    base = draw(st.sampled_from(BASES))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 300))
    span = draw(st.sampled_from((2 * HOUR, 2 * DAY, 5 * DAY, 40 * DAY)))
    queries = []
    for _ in range(draw(st.integers(1, 4))):
        a, b = draw(_moment(base, span + DAY)), draw(_moment(base, span + DAY))
        group_by = draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=5))
        zone = draw(st.sampled_from(ZONES))
        queries.append((min(a, b), max(a, b), group_by, zone))
    return base, seed, n, span, queries


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(scenario=scenarios())
def test_rollup_answers_equal_event_scans(db: Database, scenario) -> None:
    base, seed, n, span, queries = scenario
    rng = random.Random(seed)
    account, keys = new_account(db, rng.randint(1, 6), rng)  # an account of its own per example
    rows = random_events(account, keys, n, base - span, base + span, rng)
    for row in rows[: len(rows) // 2]:  # half of them at the edge of a quarter hour (of a local midnight)
        row["created_at"] = row["created_at"] // 900_000 * 900_000 + rng.choice((0, 1, 899_999))
    i = 0
    while i < len(rows):  # writer-sized batches, some written again (a retried commit, a replay)
        j = i + rng.randint(1, 80)
        write(db, rows[i:j])
        if rng.random() < 0.3:
            write(db, rows[max(0, i - 20) : j], check_first=True)
        i = j
    for lo, hi, group_by, zone in queries:
        tz = ZoneInfo(zone) if zone else None
        set_zone(db, account, zone)  # the account's zone: its day and month rows follow
        assert usage_summary(db, account, lo, hi) == events_summary(db, account, lo, hi)
        if group_by:
            assert usage_groups(db, account, lo, hi, group_by) == events_groups(db, account, lo, hi, group_by, tz)
        assert rollups.differences(db, account) == []
        write(db, random_events(account, keys, 20, base - span, base + span, rng))  # written in the new zone
