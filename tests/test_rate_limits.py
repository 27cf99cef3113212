"""Rate limits of keys through an in-process gateway: 429 before any upstream call, the
headers each SDK reads, and the official SDKs' own retry waiting the right time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.conftest import DATABASES, fake_requests
from tests.fakes.runner import FakeServer
from tests.policy_helpers import Local, local_gateway

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)


def _recording_client(gw: Local, seen: list[tuple[float, httpx.Response]]) -> httpx.AsyncClient:
    async def record(response: httpx.Response) -> None:
        seen.append((time.monotonic(), response))

    return httpx.AsyncClient(transport=gw.transport, event_hooks={"response": [record]}, timeout=30)


async def test_rpm_429_headers_and_the_openai_sdk_waits_then_succeeds(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        _id, secret = await gw.mint(max_spend_usd=1, rate_limits={"rpm": 2})
        assert [(await gw.chat(secret)).status_code for _ in range(2)] == [200, 200]
        seen_upstream = len(fake_requests(fake))
        r = await gw.chat(secret)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and len(fake_requests(fake)) == seen_upstream
        h = r.headers
        assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
        assert 58_000 <= int(h["retry-after-ms"]) <= 60_000 and h["retry-after"] == "60"
        assert h["x-ratelimit-reset-requests"].endswith("s")
        assert "anthropic-ratelimit-requests-limit" not in h

        # A minute later but one second: the SDK is told to wait about a second, waits, and gets through.
        gw.clock.advance(59_000)
        seen: list[tuple[float, httpx.Response]] = []
        async with _recording_client(gw, seen) as http:
            client = openai.AsyncOpenAI(base_url="http://tollway.test/v1", api_key=secret, http_client=http)
            began = time.monotonic()
            done = await client.chat.completions.create(
                model="out-gpt", max_tokens=10, messages=[{"role": "user", "content": "x #words=3"}]
            )
        assert done.choices[0].message.content
        statuses = [resp.status_code for _, resp in seen]
        assert statuses == [429, 200], statuses
        told = int(seen[0][1].headers["retry-after-ms"]) / 1000
        assert 0.3 < told <= 1.0
        assert seen[1][0] - began >= told - 0.05  # the SDK slept what it was told (it adds no jitter to it)


async def test_tpm_on_the_anthropic_route_and_the_anthropic_sdk(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        _id, secret = await gw.mint(max_spend_usd=1, rate_limits={"tpm": 700})
        body = {"model": "out-claude", "max_tokens": 300, "messages": [{"role": "user", "content": "x #words=300"}]}
        for _ in range(2):  # ~305 tokens each (reserved from the estimate and max_tokens, settled to the usage)
            assert (await gw.request("POST", "/v1/messages", secret, json=body)).status_code == 200
        r = await gw.request("POST", "/v1/messages", secret, json=body)
        assert r.status_code == 429 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "rate_limit_error"
        h = r.headers
        assert h["anthropic-ratelimit-tokens-limit"] == "700"
        assert int(h["anthropic-ratelimit-tokens-remaining"]) < 305
        assert h["anthropic-ratelimit-tokens-reset"].endswith("Z") and "x-ratelimit-limit-tokens" not in h
        assert int(h["retry-after"]) == 60

        gw.clock.advance(59_300)
        seen: list[tuple[float, httpx.Response]] = []

        async def record(response) -> None:  # the anthropic SDK runs on httpx2, httpx's successor
            seen.append((time.monotonic(), response))

        transport = httpx2.ASGITransport(app=gw.transport.app)
        async with httpx2.AsyncClient(transport=transport, event_hooks={"response": [record]}, timeout=30) as http:
            client = anthropic.AsyncAnthropic(base_url="http://tollway.test", api_key=secret, http_client=http)
            message = await client.messages.create(**body)
        assert message.content[0].text
        assert [resp.status_code for _, resp in seen] == [429, 200]
        assert seen[1][0] - seen[0][0] >= int(seen[0][1].headers["retry-after-ms"]) / 1000 - 0.05


async def test_max_parallel(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        _id, secret = await gw.mint(max_spend_usd=1, rate_limits={"max_parallel": 2})
        slow = {"messages": [{"role": "user", "content": "x #words=10 #delay_ms=400"}]}
        flying = [asyncio.create_task(gw.chat(secret, **slow)) for _ in range(2)]
        await asyncio.sleep(0.15)
        r = await gw.chat(secret)
        assert r.status_code == 429 and "in flight" in r.json()["error"]["message"]
        assert all(r.status_code == 200 for r in await asyncio.gather(*flying))
        assert (await gw.chat(secret)).status_code == 200  # the slots were given back
        # (streams hold their slot until they settle: tests/test_key_policy_servers.py, on real servers)


async def test_model_limits_and_refused_calls_do_not_count(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        key_id, secret = await gw.mint(max_spend_usd=1, rate_limits={"rpm": 4}, model_limits={"out-c*": {"rpm": 1}})
        assert (await gw.chat(secret, model="out-claude")).status_code == 200
        r = await gw.chat(secret, model="out-claude")
        assert r.status_code == 429 and "for this model" in r.json()["error"]["message"]
        assert (await gw.chat(secret)).status_code == 200  # out-gpt: only the key's rpm applies (2 of 4 used)
        # A call refused by the spend cap takes no rate slot: 10 refusals, then the 2 left still pass.
        await gw.request("PATCH", f"/v1/keys/{key_id}", json={"max_spend_usd": 0.0002})
        assert [(await gw.chat(secret)).status_code for _ in range(10)] == [402] * 10
        await gw.request("PATCH", f"/v1/keys/{key_id}", json={"max_spend_usd": 1})
        assert [(await gw.chat(secret)).status_code for _ in range(3)] == [200, 200, 429]
        state = (await gw.request("GET", "/v1/key", secret)).json()["rate_limit_state"]
        own = next(s for s in state if s["model"] is None)
        assert own["requests"]["limit"] == 4 and own["requests"]["remaining"] == 0
        # Lowering the limit applies to the next request; raising it too.
        await gw.request("PATCH", f"/v1/keys/{key_id}", json={"rate_limits": {"rpm": 10}})
        assert (await gw.chat(secret)).status_code == 200
        await gw.request("PATCH", f"/v1/keys/{key_id}", json={"rate_limits": None})
        assert [(await gw.chat(secret)).status_code for _ in range(5)] == [200] * 5
