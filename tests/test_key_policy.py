"""Key policy through the HTTP routes of an in-process gateway whose clock the tests move:
spend windows that reset, credit, rotation, expiry, allowed models, self-serve quota."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import DATABASES, fake_requests
from tests.fakes.runner import FakeServer
from tests.policy_helpers import Clock, local_gateway, utc_ms, window_of
from tollway.policy.windows import zone
from tollway.store import usage_events

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)


def _day(ms: int, zone_name: str) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, zone(zone_name)).date().isoformat()


def _message(r: httpx.Response) -> str:
    return r.json()["error"]["message"]


async def test_day_and_month_windows_reset_at_their_boundaries(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    clock = Clock(utc_ms(2026, 12, 30, 10))
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        # Each call costs 100 micros (10 output tokens at $10/Mtok): 3 a day, 5 a month.
        key_id, secret = await gw.mint(
            limits=[{"period": "day", "max_spend_usd": 0.0003}, {"period": "month", "max_spend_usd": 0.0005}]
        )
        for _ in range(3):
            assert (await gw.chat(secret)).status_code == 200
        r = await gw.chat(secret)
        assert r.status_code == 402 and r.json()["error"]["code"] == "spend_cap_reached"
        assert "daily spending limit, which resets at 2026-12-31T00:00:00Z" in _message(r)
        key = await gw.key(key_id)
        day = window_of(key, "day")
        assert day["spent_micros"] == 300 and day["remaining_micros"] == 0
        assert day["resets_at"] == utc_ms(2026, 12, 31) and window_of(key, "month")["spent_micros"] == 300

        clock.set(utc_ms(2026, 12, 31) - 1)  # the last millisecond of the day: still refused
        assert (await gw.chat(secret)).status_code == 402
        clock.set(utc_ms(2026, 12, 31))  # exactly at midnight the day window is new
        for _ in range(2):
            assert (await gw.chat(secret)).status_code == 200
        r = await gw.chat(secret)
        assert r.status_code == 402 and "monthly spending limit, which resets at 2027-01-01T00:00:00Z" in _message(r)

        clock.set(utc_ms(2027, 1, 1))  # a new year: a new month and a new day
        assert (await gw.chat(secret)).status_code == 200
        key = await gw.key(key_id)
        assert window_of(key, "month")["spent_micros"] == 100 and window_of(key, "month")["window_start"] == utc_ms(
            2027, 1, 1
        )
        assert key["spent_micros"] == 600  # the key's lifetime total is untouched by the windows
        usage = (await gw.request("GET", f"/v1/keys/{key_id}/usage")).json()
        assert window_of(usage, "day")["resets_at"] == utc_ms(2027, 1, 2)

    # A restart rebuilds each window from the usage events (by the time each call started).
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        key = await gw.key(key_id)
        assert window_of(key, "month")["spent_micros"] == 100 and window_of(key, "day")["spent_micros"] == 100
        assert key["spent_micros"] == 600


async def test_week_window_resets_on_monday(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    clock = Clock(utc_ms(2027, 1, 3, 23, 59, 59))  # Sunday
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        _key_id, secret = await gw.mint(max_spend_usd=0.0002, budget_period="week")
        assert [(await gw.chat(secret)).status_code for _ in range(3)] == [200, 200, 402]
        r = await gw.chat(secret)
        assert "weekly spending limit, which resets at 2027-01-04T00:00:00Z" in _message(r)
        clock.set(utc_ms(2027, 1, 4))
        assert (await gw.chat(secret)).status_code == 200


async def test_days_follow_the_account_time_zone_across_dst(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    clock = Clock(utc_ms(2027, 3, 28, 10))  # Paris moved to summer time at 01:00 UTC that day
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        r = await gw.request("PATCH", "/v1/account", json={"timezone": "Europe/Paris"})
        assert r.status_code == 200 and r.json()["timezone"] == "Europe/Paris"
        assert (await gw.request("PATCH", "/v1/account", json={"timezone": "Mars/Base"})).status_code == 400
        key_id, secret = await gw.mint(max_spend_usd=0.0002, budget_period="day")
        day = window_of(await gw.key(key_id), "day")
        assert day["window_start"] == utc_ms(2027, 3, 27, 23) and day["resets_at"] == utc_ms(2027, 3, 28, 22)
        assert [(await gw.chat(secret)).status_code for _ in range(3)] == [200, 200, 402]
        clock.set(utc_ms(2027, 3, 28, 22) - 1)  # 23:59:59.999 in Paris
        assert (await gw.chat(secret)).status_code == 402
        clock.set(utc_ms(2027, 3, 28, 22))  # midnight in Paris
        assert (await gw.chat(secret)).status_code == 200
        # Changing the zone rebuilds the windows from the usage events.
        assert (await gw.request("PATCH", "/v1/account", json={"timezone": "UTC"})).status_code == 200
        day = window_of(await gw.key(key_id), "day")
        assert day["window_start"] == utc_ms(2027, 3, 28) and day["spent_micros"] == 300


async def test_fifty_parallel_requests_straddling_midnight(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    midnight = utc_ms(2027, 2, 1)
    clock = Clock(midnight - 1000)
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        # $0.002 a day (20 calls) binds before $0.05 a month.
        key_id, secret = await gw.mint(
            limits=[{"period": "day", "max_spend_usd": 0.002}, {"period": "month", "max_spend_usd": 0.05}]
        )
        slow = {"messages": [{"role": "user", "content": "x #words=10 #delay_ms=300"}]}
        before = [asyncio.create_task(gw.chat(secret, **slow)) for _ in range(25)]
        # Wait until all 25 were decided (20 holding, in flight upstream; 5 refused).
        for _ in range(500):
            refused = sum(1 for t in before if t.done())
            if refused == 5 and gw.gw.ledger.snapshot(key_id)[1] == 2000:
                break
            await asyncio.sleep(0.01)
        clock.set(midnight)  # the 20 in flight settle after midnight: charged to the day they started in
        after = [asyncio.create_task(gw.chat(secret, **slow)) for _ in range(25)]
        statuses = [r.status_code for r in await asyncio.gather(*before, *after)]
        assert statuses[:25].count(200) == 20 and statuses[25:].count(200) == 20 and statuses.count(402) == 10
        await gw.settled()
        key = await gw.key(key_id)
        assert window_of(key, "day")["spent_micros"] == 2000 and window_of(key, "day")["window_start"] == midnight
        assert window_of(key, "month")["spent_micros"] == 2000  # February's only
        with gw.gw.db.engine.connect() as conn:
            e = usage_events.c
            old = conn.execute(select(func.sum(e.cost_micros)).where(e.key_id == key_id, e.started_at < midnight))
            assert old.scalar() == 2000  # never more than the day's limit, though settled after it ended


async def test_lowering_a_limit_while_requests_are_in_flight(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        key_id, secret = await gw.mint(max_spend_usd=0.01, budget_period="day")
        slow = {"messages": [{"role": "user", "content": "x #words=10 #delay_ms=400"}]}
        flying = [asyncio.create_task(gw.chat(secret, **slow)) for _ in range(10)]
        for _ in range(300):
            if gw.gw.ledger.snapshot(key_id)[1] == 1000:
                break
            await asyncio.sleep(0.01)
        r = await gw.request(
            "PATCH", f"/v1/keys/{key_id}", json={"limits": [{"period": "day", "max_spend_usd": 0.0005}]}
        )
        assert r.status_code == 200 and window_of(r.json(), "day")["max_spend_micros"] == 500
        assert (await gw.chat(secret)).status_code == 402  # 1,000 held against a 500 limit
        assert all(r.status_code == 200 for r in await asyncio.gather(*flying))  # admitted before: they finish
        day = window_of(await gw.key(key_id), "day")
        assert day["spent_micros"] == 1000 and day["remaining_micros"] == 0
        assert (await gw.chat(secret)).status_code == 402


async def test_credit_is_recorded_once_and_raises_the_right_limit(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    clock = Clock(utc_ms(2027, 5, 10, 12))
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        key_id, secret = await gw.mint(
            limits=[{"period": "total", "max_spend_usd": 0.0002}, {"period": "day", "max_spend_usd": 0.0001}]
        )
        assert [(await gw.chat(secret)).status_code for _ in range(2)] == [200, 402]  # the day binds
        path = f"/v1/keys/{key_id}/credit"
        r = await gw.request(
            "POST", path, json={"amount_usd": 0.0001, "period": "day"}, headers={"idempotency-key": "d1"}
        )
        assert r.status_code == 201 and r.json()["amount_micros"] == 100 and r.json()["period"] == "day"
        again = await gw.request(
            "POST", path, json={"amount_usd": 0.0001, "period": "day"}, headers={"idempotency-key": "d1"}
        )
        assert again.status_code == 200 and again.json()["id"] == r.json()["id"]  # the retry credits nothing
        clash = await gw.request(
            "POST", path, json={"amount_usd": 0.0002, "period": "day"}, headers={"idempotency-key": "d1"}
        )
        assert clash.status_code == 409
        assert window_of(await gw.key(key_id), "day")["max_spend_micros"] == 200
        assert [(await gw.chat(secret)).status_code for _ in range(2)] == [200, 402]  # now the total binds
        total = window_of(await gw.key(key_id), "total")
        assert total["spent_micros"] == 200 and total["remaining_micros"] == 0
        r = await gw.request("POST", path, json={"amount_usd": "0.0003"}, headers={"idempotency-key": "t1"})
        assert r.status_code == 201 and r.json()["period"] == "total"
        usage = (await gw.request("GET", f"/v1/keys/{key_id}/usage")).json()
        assert usage["max_spend_micros"] == 500 and usage["remaining_micros"] == 300
        clock.set(utc_ms(2027, 5, 11))  # a new day: the day's credit was that day's only
        day = window_of(await gw.key(key_id), "day")
        assert day["max_spend_micros"] == 100 and day["credit_micros"] == 0
        assert [(await gw.chat(secret)).status_code for _ in range(2)] == [200, 402]
        credits = (await gw.request("GET", f"/v1/keys/{key_id}/credits")).json()["data"]
        assert [c["amount_micros"] for c in credits] == [300, 100]
        admin_id = (await gw.request("GET", "/v1/key")).json()["id"]
        assert all(c["granted_by"] == admin_id for c in credits)
        bad = await gw.request("POST", path, json={"amount_usd": 1, "period": "week"})
        assert bad.status_code == 400  # no weekly limit to raise
        assert (await gw.request("POST", path, json={"amount_usd": -1})).status_code == 400
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:  # credit survives a restart
        assert window_of(await gw.key(key_id), "total")["max_spend_micros"] == 500


async def test_rotation_grace_then_refusal(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    clock = Clock()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        key_id, old = await gw.mint(max_spend_usd=1, budget_period="month", tags=["t"])
        assert (await gw.chat(old)).status_code == 200
        r = await gw.request("POST", f"/v1/keys/{key_id}/rotate", json={"grace_seconds": 60})
        assert r.status_code == 200, r.text
        rotated = r.json()
        new = rotated["secret"]
        assert rotated["id"] == key_id and new != old and window_of(rotated, "month")["spent_micros"] == 100
        assert (await gw.chat(old)).status_code == 200 and (await gw.chat(new)).status_code == 200
        clock.advance(60_001)
        r = await gw.chat(old)
        assert r.status_code == 401 and "grace period" in _message(r)
        assert (await gw.chat(new)).status_code == 200
        usage = (await gw.request("GET", f"/v1/keys/{key_id}/usage")).json()
        assert usage["total_cost_micros"] == 400 and len(usage["events"]) == 4  # one history for the key
        r = await gw.request("POST", f"/v1/keys/{key_id}/rotate", json={})  # no grace: the old one stops now
        assert (await gw.chat(new)).status_code == 401 and (await gw.chat(r.json()["secret"])).status_code == 200
        assert (await gw.request("POST", f"/v1/keys/{key_id}/rotate", json={"grace_seconds": -1})).status_code == 400


async def test_expiry_and_disabling(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    clock = Clock()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        key_id, secret = await gw.mint(expires_at=clock() + 5_000)
        assert (await gw.chat(secret)).status_code == 200
        clock.advance(5_001)
        r = await gw.chat(secret)
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
        r = await gw.request("PATCH", f"/v1/keys/{key_id}", json={"expires_at": None, "disabled": True})
        assert r.status_code == 200 and r.json()["disabled"] is True
        r = await gw.request(
            "POST",
            "/v1/messages",
            secret,
            json={"model": "out-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert (await gw.request("PATCH", f"/v1/keys/{key_id}", json={"disabled": False})).status_code == 200
        assert (await gw.chat(secret)).status_code == 200
        assert (await gw.request("PATCH", f"/v1/keys/{key_id}", json={"disabled": "no"})).status_code == 400


async def test_allowed_models_on_every_model_route(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        _id, secret = await gw.mint(max_spend_usd=1, allowed_models=["out-*", "test-embed"])
        msgs = [{"role": "user", "content": "hi"}]
        tool = await gw.request(
            "POST", "/v1/tools",
            json={"name": "lookup", "description": "d", "input_schema": {"type": "object"}, "webhook_url": "http://127.0.0.1:9/x"},
        )  # fmt: skip
        assert tool.status_code == 201, tool.text
        thread = (await gw.request("POST", "/v1/threads", secret, json={})).json()["id"]
        refused: list[tuple[str, dict[str, Any], str]] = [
            ("/v1/chat/completions", {"model": "test-gpt", "messages": msgs}, "openai"),
            ("/v1/chat/completions", {"model": "test-claude", "messages": msgs}, "openai"),  # translated
            ("/v1/messages", {"model": "test-claude", "max_tokens": 5, "messages": msgs}, "anthropic"),
            ("/v1/messages", {"model": "test-gpt", "max_tokens": 5, "messages": msgs}, "anthropic"),  # translated
            ("/v1/responses", {"model": "test-gpt", "input": "hi"}, "openai"),
            ("/v1/responses", {"model": "test-claude", "input": "hi"}, "openai"),
            (f"/v1/threads/{thread}/messages", {"model": "test-claude", "content": "hi"}, "openai"),
            (
                "/v1/chat/completions",
                {"model": "test-gpt", "messages": msgs, "tool_ids": [tool.json()["id"]]},
                "openai",
            ),
            ("/v1/embeddings", {"model": "claude-embed", "input": "hi"}, "openai"),
            ("/v1/messages/count_tokens", {"model": "test-claude", "messages": msgs}, "anthropic"),
        ]
        seen = len(fake_requests(fake))
        for path, body, shape in refused:
            r = await gw.request("POST", path, secret, json=body)
            assert r.status_code == 403, (path, body, r.text)
            if shape == "openai":
                assert r.json()["error"]["code"] == "model_not_allowed", path
            else:
                assert r.json()["type"] == "error" and r.json()["error"]["type"] == "permission_error", path
        assert len(fake_requests(fake)) == seen  # nothing went upstream
        assert (await gw.chat(secret)).status_code == 200
        assert (
            await gw.request("POST", "/v1/embeddings", secret, json={"model": "test-embed", "input": "hi"})
        ).status_code == 200
        listed = {m["id"] for m in (await gw.request("GET", "/v1/models", secret)).json()["data"]}
        assert listed == {"out-gpt", "out-claude", "test-embed"}
        assert (await gw.request("GET", "/v1/models/test-gpt", secret)).status_code == 404
        assert (await gw.request("GET", "/v1/models/out-gpt", secret)).status_code == 200


async def test_self_serve_quota_and_key_fields(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    clock = Clock(utc_ms(2026, 12, 20, 8))
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        key_id, secret = await gw.mint(
            max_spend_usd=5, budget_period="month", rate_limits={"rpm": 100, "tpm": 100000},
            model_limits={"out-*": {"rpm": 10}}, allowed_models=["out-*"], tags=["team-a"], end_user_id="u42",
        )  # fmt: skip
        assert (await gw.chat(secret)).status_code == 200
        me = (await gw.request("GET", "/v1/key", secret)).json()
        assert me["id"] == key_id and me["allowed_models"] == ["out-*"] and "secret" not in me
        assert "secret_hint" not in me and "metadata" not in me
        month = window_of(me, "month")
        assert (month["spent_micros"], month["remaining_micros"]) == (100, 4_999_900)
        assert month["resets_at"] == utc_ms(2027, 1, 1)
        states = {s["model"]: s for s in me["rate_limit_state"]}
        assert set(states) == {None, "out-*"}
        key = await gw.key(key_id)
        assert key["max_spend_micros"] is None and key["tags"] == ["team-a"]
        for bad in (
            {"limits": [{"period": "year", "max_spend_usd": 1}]},
            {"limits": [{"period": "day", "max_spend_usd": 1}, {"period": "day", "max_spend_usd": 2}]},
            {"limits": [{"period": "total", "max_spend_usd": 1}], "max_spend_usd": 2},
            {"budget_period": "month"},
            {"rate_limits": {"rpm": 0}},
            {"rate_limits": {"rpm": 2**63}},
            {"rate_limits": {"burst": 3}},
            {"model_limits": {"m": {"tpm": True}}},
            {"allowed_models": "out-*"},
            {"tags": ["x" * 65]},
            {"expires_at": -1},
            {"expires_at": 2**64},
        ):
            r = await gw.request("POST", "/v1/keys", json={"name": "bad", **bad})
            assert r.status_code == 400, (bad, r.text)
            r = await gw.request("PATCH", f"/v1/keys/{key_id}", json=bad)
            assert r.status_code == 400, (bad, r.text)


async def test_usage_grouped_by_tag_end_user_model_and_day(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    clock = Clock(utc_ms(2026, 12, 20, 23, 30))
    clock.freeze()
    async with local_gateway(fake, tmp_data_dir, fresh_database, clock) as gw:
        _a, a = await gw.mint(max_spend_usd=1, tags=["team-a", "beta"], end_user_id="u1")
        _b, b = await gw.mint(max_spend_usd=1, tags=["team-b"], end_user_id="u2")
        _c, c = await gw.mint(max_spend_usd=1)
        await gw.chat(a)
        await gw.chat(a, model="out-claude")
        await gw.chat(b, words=20, max_tokens=20)
        await gw.chat(c, words=5)

        async def groups(by: str) -> list[dict[str, Any]]:
            r = await gw.request("GET", f"/v1/usage?from_ms=0&group_by={by}")
            assert r.status_code == 200, r.text
            return r.json()["groups"]

        by_tag = {g["tag"]: g["cost_micros"] for g in await groups("tag")}
        assert by_tag == {"team-a": 200, "beta": 200, "team-b": 200, None: 50}
        by_user = {g["end_user_id"]: (g["cost_micros"], g["request_count"]) for g in await groups("end_user")}
        assert by_user == {"u1": (200, 2), "u2": (200, 1), None: (50, 1)}
        by_tag_model = {(g["tag"], g["model"]): g["cost_micros"] for g in await groups("tag,model")}
        assert by_tag_model[("team-a", "out-claude")] == 100 and by_tag_model[("team-b", "out-gpt")] == 200
        # Days bucket the events' own times (the wall clock), in the account's zone.
        with gw.gw.db.engine.connect() as conn:
            times = [r[0] for r in conn.execute(select(usage_events.c.created_at))]
        assert {g["day"] for g in await groups("day")} == {_day(t, "UTC") for t in times}
        await gw.request("PATCH", "/v1/account", json={"timezone": "Pacific/Kiritimati"})  # UTC+14
        assert {g["day"] for g in await groups("day")} == {_day(t, "Pacific/Kiritimati") for t in times}
        assert (await gw.request("GET", "/v1/usage?group_by=team")).status_code == 400
        assert (await gw.request("GET", "/v1/usage?group_by=key,key")).status_code == 400
