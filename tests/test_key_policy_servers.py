"""Key policy against `tollway serve`, on both servers and both databases: each control once
more over real sockets (the clock-moving cases are in test_key_policy.py, in process)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import DATABASES, SERVERS, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database
from tests.fakes.runner import FakeServer

MSGS = [{"role": "user", "content": "x #words=10"}]


def _chat(gw: Gateway, secret: str, model: str = "out-gpt", **extra) -> httpx.Response:
    body = {"model": model, "max_tokens": 10, "messages": MSGS, **extra}
    return gw.request("POST", "/v1/chat/completions", secret, json=body)


def _window(key: dict, period: str) -> dict:
    return next(w for w in key["limits"] if w["period"] == period)


def test_monthly_cap_from_the_quickstart(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=0.0003, budget_period="month", end_user_id="user_42")
    assert [_chat(gateway, secret).status_code for _ in range(4)] == [200, 200, 200, 402]
    r = _chat(gateway, secret)
    assert "monthly spending limit, which resets at" in r.json()["error"]["message"]
    month = _window(gateway.key(key_id), "month")
    now = dt.datetime.now(dt.timezone.utc)
    first_next = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert month["resets_at"] == int(first_next.timestamp() * 1000) and month["spent_micros"] == 300
    me = gateway.request("GET", "/v1/key", secret).json()
    assert _window(me, "month")["remaining_micros"] == 0 and me["id"] == key_id


def test_allowed_models_and_models_listing(gateway: Gateway) -> None:
    _id, secret = gateway.mint(max_spend_usd=1, allowed_models=["out-gpt", "*-claude"])
    assert _chat(gateway, secret, model="test-gpt").status_code == 403
    r = gateway.request("POST", "/v1/messages", secret, json={"model": "test-gpt", "max_tokens": 5, "messages": MSGS})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert _chat(gateway, secret, model="out-claude").status_code == 200  # translated, and allowed
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    assert {m.id for m in client.models.list()} == {"out-gpt", "out-claude", "test-claude", "tiny-claude"}
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="test-embed", input="hi")


def test_rate_limit_429_for_each_sdk(gateway: Gateway) -> None:
    _id, secret = gateway.mint(max_spend_usd=1, rate_limits={"rpm": 1})
    assert _chat(gateway, secret).status_code == 200
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="out-gpt", max_tokens=5, messages=MSGS)
    headers = exc.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "1" and int(headers["retry-after"]) >= 59
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as exc2:
        claude.messages.create(model="out-claude", max_tokens=5, messages=MSGS)
    assert exc2.value.response.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert exc2.value.body["error"]["type"] == "rate_limit_error"


def test_tpm_model_limits_and_usage_by_tag(gateway: Gateway) -> None:
    tag = "team-" + secrets.token_hex(4)
    key_id, secret = gateway.mint(
        max_spend_usd=1, rate_limits={"tpm": 700}, model_limits={"out-claude": {"rpm": 1}}, tags=[tag]
    )
    heavy = {"model": "out-gpt", "max_tokens": 300, "messages": [{"role": "user", "content": "x #words=300"}]}
    for _ in range(2):
        assert gateway.request("POST", "/v1/chat/completions", secret, json=heavy).status_code == 200
    r = gateway.request("POST", "/v1/chat/completions", secret, json=heavy)
    assert r.status_code == 429 and r.headers["x-ratelimit-limit-tokens"] == "700"
    assert "x-ratelimit-limit-requests" not in r.headers  # no rpm on this key: no requests set
    claude = {"model": "out-claude", "max_tokens": 5, "messages": MSGS}
    assert gateway.request("POST", "/v1/messages", secret, json=claude).status_code == 200
    r = gateway.request("POST", "/v1/messages", secret, json=claude)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["anthropic-ratelimit-requests-limit"] == "1"
    gateway.wait_settled(key_id)
    groups = gateway.request("GET", "/v1/usage?from_ms=0&group_by=tag,model", gateway.admin).json()["groups"]
    mine = {g["model"]: g for g in groups if g["tag"] == tag}
    assert mine["out-gpt"]["request_count"] == 2 and mine["out-claude"]["request_count"] == 1
    assert mine["out-gpt"]["cost_micros"] == 6000  # 2 x 300 output tokens at $10/Mtok


def test_a_stream_holds_its_parallel_slot_until_it_settles(gateway: Gateway) -> None:
    _id, secret = gateway.mint(max_spend_usd=1, rate_limits={"max_parallel": 1})
    body = {
        "model": "out-gpt", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "x #words=10 #chunk_delay_ms=80"}],
    }  # fmt: skip
    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST", gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}
        ) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_bytes()
            next(chunks)
            r = _chat(gateway, secret)
            assert r.status_code == 429 and "in flight" in r.json()["error"]["message"]
            for _ in chunks:
                pass
    for _ in range(100):
        if _chat(gateway, secret).status_code == 200:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the stream's slot was not given back")


def test_rotation_expiry_disabling_and_credit(gateway: Gateway) -> None:
    key_id, old = gateway.mint(max_spend_usd=0.0001)
    r = gateway.request("POST", f"/v1/keys/{key_id}/rotate", gateway.admin, json={"grace_seconds": 1.5})
    assert r.status_code == 200 and r.json()["id"] == key_id
    new = r.json()["secret"]
    assert _chat(gateway, old).status_code == 200  # during the grace period
    assert _chat(gateway, new).status_code == 402  # the same key: its cap is spent
    time.sleep(1.6)
    assert _chat(gateway, old).status_code == 401
    credit = {"amount_usd": 0.0001}
    headers = {"Idempotency-Key": "retry-" + key_id}
    first = gateway.request("POST", f"/v1/keys/{key_id}/credit", gateway.admin, json=credit, headers=dict(headers))
    again = gateway.request("POST", f"/v1/keys/{key_id}/credit", gateway.admin, json=credit, headers=dict(headers))
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    assert [_chat(gateway, new).status_code for _ in range(2)] == [200, 402]  # credited once
    assert len(gateway.request("GET", f"/v1/keys/{key_id}/credits", gateway.admin).json()["data"]) == 1

    key_id, secret = gateway.mint(max_spend_usd=1, expires_at=int(time.time() * 1000) + 1500)
    assert _chat(gateway, secret).status_code == 200
    time.sleep(1.6)
    assert _chat(gateway, secret).json()["error"]["code"] == "key_expired"
    gateway.request("PATCH", f"/v1/keys/{key_id}", gateway.admin, json={"expires_at": None, "disabled": True})
    assert _chat(gateway, secret).status_code == 403
    gateway.request("PATCH", f"/v1/keys/{key_id}", gateway.admin, json={"disabled": False})
    assert _chat(gateway, secret).status_code == 200


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("kind", [d if isinstance(d, str) else d.values[0] for d in DATABASES])
def test_fifty_parallel_requests_across_midnight(fake: FakeServer, server: str, kind: str) -> None:
    """The gateway's clock set just before midnight UTC (TOLLWAY_CLOCK_OFFSET_MS): 25 slow
    requests before it, 25 after, on a key whose $0.002 daily window binds before its monthly one."""
    if kind == "postgresql" and not os.environ.get("TOLLWAY_TEST_DATABASE_URL"):
        pytest.skip("TOLLWAY_TEST_DATABASE_URL is not set")
    now = time.time_ns() // 1_000_000
    midnight = (now // 86_400_000 + 1) * 86_400_000
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-policy-"))
    with throwaway_database(kind) as url:
        env = gateway_env(fake, data_dir, url, TOLLWAY_CLOCK_OFFSET_MS=str(midnight - 8_000 - now))
        gw = start_gateway(env, server=server)
        try:
            key_id, secret = gw.mint(
                limits=[{"period": "day", "max_spend_usd": 0.002}, {"period": "month", "max_spend_usd": 0.05}]
            )
            day = _window(gw.key(key_id), "day")
            assert day["resets_at"] == midnight, "the gateway took more than 7 s to start"
            offset = int(env["TOLLWAY_CLOCK_OFFSET_MS"])

            def until_midnight() -> float:
                return (midnight - (time.time_ns() // 1_000_000 + offset)) / 1000

            async def fan_out() -> list[int]:
                slow = {
                    "model": "out-gpt",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "x #words=10 #delay_ms=1500"}],
                }
                async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=60)) as http:
                    post = lambda: http.post(  # noqa: E731
                        gw.url + "/v1/chat/completions", json=slow, headers={"authorization": f"Bearer {secret}"}
                    )
                    await asyncio.sleep(max(0.0, until_midnight() - 0.7))
                    before = [asyncio.create_task(post()) for _ in range(25)]
                    await asyncio.sleep(max(0.0, until_midnight()) + 0.3)
                    after = [asyncio.create_task(post()) for _ in range(25)]
                    return [r.status_code for r in await asyncio.gather(*before, *after)]

            statuses = asyncio.run(fan_out())
            assert statuses[:25].count(200) == 20 and statuses[25:].count(200) == 20, statuses
            gw.wait_settled(key_id)
            key = gw.key(key_id)
            assert _window(key, "day")["window_start"] == midnight and _window(key, "day")["spent_micros"] == 2000
            assert key["spent_micros"] == 4000  # 2,000 on each side of midnight, though all settled after it
        finally:
            stop_gateway(gw)
            shutil.rmtree(data_dir, ignore_errors=True)
