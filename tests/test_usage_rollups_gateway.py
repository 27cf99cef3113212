"""Rollups == events after a mixed load through `tollway serve` (plain and streamed calls, streams
cut by the client midway, a rebuild running meanwhile), on both databases; /v1/usage and
/v1/usage.csv over HTTP equal the event scans; `tollway usage verify` / `rebuild`."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import (
    DATABASES,
    REPO,
    Gateway,
    gateway_on,
)
from tests.fakes.runner import FakeServer
from tollway.ledger import rollups
from tollway.ledger.report import events_groups, events_summary
from tollway.ledger.routes import usd
from tollway.store import Database, api_keys, usage_events
from tollway.store.schema import usage_rollups


@pytest.fixture(scope="module", params=DATABASES)
def gw(request, fake: FakeServer) -> Iterator[Gateway]:
    with gateway_on(request.param, fake, "tollway-rollups-") as gateway:
        yield gateway


def _call(gw: Gateway, secret: str, kind: int) -> None:
    headers = {"authorization": f"Bearer {secret}"}
    stream = kind in (1, 3, 4)
    text = "a story #words=30 #chunk_delay_ms=10" if kind == 4 else f"hello #words={5 + kind}"
    if kind in (0, 1, 4):
        path = "/v1/chat/completions"
        body = {"model": "test-gpt", "messages": [{"role": "user", "content": text}], "stream": stream}
    else:
        path = "/v1/messages"
        body = {
            "model": "test-claude",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
    with httpx.Client(timeout=30) as client:
        if not stream:
            assert client.post(gw.url + path, json=body, headers=headers).status_code == 200
            return
        with client.stream("POST", gw.url + path, json=body, headers=headers) as r:
            assert r.status_code == 200
            seen = b""
            for chunk in r.iter_bytes():
                seen += chunk
                if kind == 4 and seen.count(b"\n\n") >= 5:
                    break  # the client goes away midway: billed for what was generated


def _csv(gw: Gateway, params: dict) -> list[dict]:
    r = gw.request("GET", "/v1/usage.csv", gw.admin, params=params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def test_rollups_equal_events_after_a_mixed_load(gw: Gateway) -> None:
    start = int(time.time() * 1000)
    keys = [
        gw.mint(max_spend_usd=50, end_user_id=f"user_{i % 2}", tags=[["a"], ["a", "b"], []][i % 3]) for i in range(3)
    ]
    db = Database(gw.database_url)
    stop = threading.Event()
    rebuilds = []

    def rebuild_meanwhile() -> None:  # the CLI's rebuild, while the writer writes
        while not stop.is_set():
            rebuilds.append(rollups.rebuild(db))
            time.sleep(0.05)

    rebuilder = threading.Thread(target=rebuild_meanwhile)
    rebuilder.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: _call(gw, keys[i % 3][1], i % 5), range(40)))
    finally:
        stop.set()
        rebuilder.join()
    for key_id, _ in keys:
        assert gw.wait_settled(key_id)["reserved_micros"] == 0
    end = int(time.time() * 1000) + 1
    usage = gw.request("GET", "/v1/usage", gw.admin, params={"from_ms": start, "to_ms": end}).json()
    with db.engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(usage_events)).scalar_one()
        account = conn.execute(select(api_keys.c.account_id).where(api_keys.c.id == keys[0][0])).scalar_one()
        outcomes = set(conn.execute(select(usage_events.c.outcome).distinct()).scalars())
    assert events >= 40 and "client_closed" in outcomes and len(rebuilds) >= 1
    assert rollups.differences(db) == []
    assert usage == events_summary(db, account, start, end)
    assert usage["request_count"] == events
    for group_by in (["key"], ["tag", "model"], ["end_user", "day"], ["day", "key", "tag", "model", "end_user"]):
        params = {"from_ms": start - 1234, "to_ms": end, "group_by": ",".join(group_by)}
        body = gw.request("GET", "/v1/usage", gw.admin, params=params).json()
        expected = events_groups(db, account, start - 1234, end, group_by)
        assert body["groups"] == expected
        rows = _csv(gw, params)
        assert [int(r["cost_micros"]) for r in rows] == [g["cost_micros"] for g in expected]
        assert [r["cost_usd"] for r in rows] == [usd(g["cost_micros"]) for g in expected]
        assert [int(r["request_count"]) for r in rows] == [g["request_count"] for g in expected]
    db.dispose()


def test_zone_changes_under_load_keep_the_day_rows_exact(gw: Gateway) -> None:
    """PATCH /v1/account's time zone again and again while calls are written: the day and month
    rows follow each change (none is counted in a day of the old zone), and /v1/usage by day
    and its CSV equal the event scans in the zone the account ends with."""
    from zoneinfo import ZoneInfo

    start = int(time.time() * 1000)
    keys = [gw.mint(max_spend_usd=50, end_user_id=f"user_{i}") for i in range(2)]
    zones = ["Asia/Kolkata", "America/New_York", "Pacific/Chatham", None, "Asia/Kathmandu"]
    stop = threading.Event()
    changes = []

    def change_zones() -> None:
        while not stop.is_set():
            zone = zones[len(changes) % len(zones)]
            r = gw.request("PATCH", "/v1/account", gw.admin, json={"timezone": zone})
            assert r.status_code == 200 and r.json()["timezone"] == (zone or "UTC"), r.text
            changes.append(zone)
            time.sleep(0.02)

    changer = threading.Thread(target=change_zones)
    changer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: _call(gw, keys[i % 2][1], i % 4), range(40)))
    finally:
        stop.set()
        changer.join()
    for key_id, _ in keys:
        assert gw.wait_settled(key_id)["reserved_micros"] == 0
    final = zones[(len(changes) - 1) % len(zones)]
    end = int(time.time() * 1000) + 1
    params = {"from_ms": start - 1234, "to_ms": end, "group_by": "end_user,day"}
    body = gw.request("GET", "/v1/usage", gw.admin, params=params).json()  # flushes the writer
    db = Database(gw.database_url)
    with db.engine.connect() as conn:
        account = conn.execute(select(api_keys.c.account_id).where(api_keys.c.id == keys[0][0])).scalar_one()
    assert len(changes) >= 3 and rollups.differences(db) == []
    expected = events_groups(db, account, start - 1234, end, ["end_user", "day"], ZoneInfo(final) if final else None)
    assert body["groups"] == expected and sum(g["request_count"] for g in expected) >= 40
    assert [int(r["request_count"]) for r in _csv(gw, params)] == [g["request_count"] for g in expected]
    assert gw.request("PATCH", "/v1/account", gw.admin, json={"timezone": None}).status_code == 200
    assert rollups.differences(db) == []
    db.dispose()


def _cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tollway", "usage", *args],
        env=gw.env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_verify_and_rebuild_while_the_gateway_runs(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=5)
    for kind in range(4):
        _call(gw, secret, kind)
    gw.wait_settled(key_id)
    assert gw.request("GET", "/v1/usage", gw.admin).status_code == 200  # flushes the writer
    ok = _cli(gw, "verify")
    assert ok.returncode == 0 and "match" in ok.stdout, ok.stdout + ok.stderr
    db = Database(gw.database_url)
    with db.engine.begin() as conn:
        conn.execute(usage_rollups.update().where(usage_rollups.c.key_id == key_id).values(cost_micros=7))
    bad = _cli(gw, "verify")
    assert bad.returncode == 1 and key_id in bad.stdout and "differ" in bad.stderr
    rebuilt = _cli(gw, "rebuild")
    assert rebuilt.returncode == 0 and "Rebuilt" in rebuilt.stdout, rebuilt.stderr
    assert _cli(gw, "verify").returncode == 0
    assert rollups.differences(db) == []
    db.dispose()


def test_csv_errors_are_openai_shaped(gw: Gateway) -> None:
    _, standard = gw.mint(max_spend_usd=1)
    cases = [
        (standard, {}, 403),
        ("tw_live_nope", {}, 401),
        (gw.admin, {"group_by": "key,key"}, 400),
        (gw.admin, {"from_ms": "5", "to_ms": "4"}, 400),
        (gw.admin, {"to_ms": "-1"}, 400),
    ]
    for secret, params, status in cases:
        r = gw.request("GET", "/v1/usage.csv", secret, params=params)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert set(r.json()["error"]) >= {"message", "type"}
    rows = _csv(gw, {"from_ms": "0", "to_ms": "1"})  # nothing then: the header row alone
    r = gw.request("GET", "/v1/usage.csv", gw.admin, params={"from_ms": "0", "to_ms": "1"})
    assert rows == [] and r.text == "key_id,model,request_count,input_tokens,output_tokens,cost_micros,cost_usd\r\n"
