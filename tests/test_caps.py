"""Caps: enforced before the upstream, exact under concurrency, clamping instead of refusing,
aborted streams billed and their holds released. Costs checked to the micro-dollar."""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_HALF_UP, Decimal

import httpx
import pytest

from tests.conftest import Gateway, fake_requests, fake_stats


def fake_input_tokens(*texts: str, messages: int = 1) -> int:
    """The fake upstream's tokenizer: ceil(utf-8 bytes / 4) per text, + 3 per message."""
    return sum(-(-len(t.encode()) // 4) for t in texts) + 3 * messages


def expected_micros(prices: dict[str, str], markup: str = "0", **tokens: int) -> int:
    total = Decimal(0)
    for kind, count in tokens.items():
        total += Decimal(count) * Decimal(prices[kind])  # USD per Mtok == micro-USD per token
    total *= 1 + Decimal(markup) / 100
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


TEST_GPT = {"input": "1.0", "output": "10.0", "cache_read": "0.1"}
TEST_CLAUDE = {"input": "3.0", "output": "15.0", "cache_read": "0.3", "cache_write": "3.75"}


def chat(model: str, text: str, **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def claude(model: str, text: str, **extra):
    return {
        "model": model,
        "max_tokens": extra.pop("max_tokens", 100),
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_exact_cost_openai_with_cached_tokens(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    text = "hello world #words=7 #cache_read=100"
    r = gateway.request("POST", "/v1/chat/completions", secret, json=chat("test-gpt", text))
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 7
    assert usage["prompt_tokens"] == fake_input_tokens(text) + 100
    want = expected_micros(TEST_GPT, input=fake_input_tokens(text), output=7, cache_read=100)
    info = gateway.key_usage(key_id)
    assert info["total_cost_micros"] == want
    event = info["events"][0]
    assert (event["input_tokens"], event["output_tokens"], event["cost_micros"], event["status"]) == (
        fake_input_tokens(text),
        7,
        want,
        200,
    )
    assert event["estimated"] is False
    assert gateway.key(key_id)["spent_micros"] == want


def test_exact_cost_anthropic_with_cache_write_rounds_half_up(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    # 10 input x 3 + 4 output x 15 + 2 cache writes x 3.75 = 97.5 micros: rounds half-up to 98.
    text = "hi #words=4 #cache_write=2"
    r = gateway.request(
        "POST", "/v1/messages", secret, json=claude("test-claude", text), headers={"anthropic-version": "2023-06-01"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["cache_creation_input_tokens"] == 2
    want = expected_micros(TEST_CLAUDE, input=fake_input_tokens(text), output=4, cache_write=2)
    assert fake_input_tokens(text) == 10 and want == 98
    assert gateway.key_usage(key_id)["total_cost_micros"] == want


@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_fifty_parallel_requests_on_a_cap_worth_five(gateway: Gateway, route: str, stream: bool) -> None:
    """Output-only prices: each request costs exactly 10 tokens x 10 micros = 100 micros."""
    key_id, secret = gateway.mint(max_spend_usd="0.0005")  # 500 micros: worth exactly 5 requests
    if route == "openai":
        path, body = "/v1/chat/completions", chat("out-gpt", "go #words=30", max_tokens=10, stream=stream)
    else:
        path, body = "/v1/messages", claude("out-claude", "go #words=30", max_tokens=10, stream=stream)

    async def one(client: httpx.AsyncClient) -> int:
        r = await client.post(gateway.url + path, json=body, headers={"authorization": f"Bearer {secret}"})
        await r.aread()
        return r.status_code

    async def fan_out() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(one(client) for _ in range(50)))

    statuses = asyncio.run(fan_out())
    assert statuses.count(200) == 5, statuses
    assert statuses.count(402) == 45, statuses
    info = gateway.wait_settled(key_id)
    assert info["spent_micros"] == 500 and info["reserved_micros"] == 0
    assert gateway.key_usage(key_id)["total_cost_micros"] == 500


def test_402_before_the_upstream_in_each_route_shape(gateway: Gateway, fake) -> None:
    key_id, secret = gateway.mint(max_spend_usd=0)
    httpx.post(fake.url + "/_fake/reset")
    r = gateway.request("POST", "/v1/chat/completions", secret, json=chat("test-gpt", "hi"))
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["message"].startswith("this API key has reached its spending cap")
    assert err["code"] == "spend_cap_reached"
    r = gateway.request("POST", "/v1/messages", secret, json=claude("test-claude", "hi"))
    assert r.status_code == 402
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "billing_error"
    assert r.json()["error"]["message"].startswith("this API key has reached its spending cap")
    assert [q for q in fake_requests(fake) if q["path"] in ("/v1/chat/completions", "/v1/messages")] == []


def test_request_without_max_tokens_near_the_end_is_clamped_not_refused(gateway: Gateway, fake) -> None:
    # out-gpt: 10 micros per output token, max_output_tokens 1000. 35 micros buy 3 tokens.
    key_id, secret = gateway.mint(max_spend_usd="0.000035")
    httpx.post(fake.url + "/_fake/reset")
    r = gateway.request("POST", "/v1/chat/completions", secret, json=chat("out-gpt", "tell me #words=20"))
    assert r.status_code == 200, r.text
    assert r.headers["x-tollway-max-tokens-clamped"] == "3"
    assert r.json()["usage"]["completion_tokens"] == 3
    sent = [q for q in fake_requests(fake) if q["path"] == "/v1/chat/completions"][-1]["body"]
    assert sent["max_completion_tokens"] == 3
    assert gateway.wait_settled(key_id)["spent_micros"] == 30
    # 5 micros left: not even one output token -> refused.
    r = gateway.request("POST", "/v1/chat/completions", secret, json=chat("out-gpt", "again"))
    assert r.status_code == 402


def test_client_max_tokens_above_budget_is_clamped_on_anthropic(gateway: Gateway, fake) -> None:
    key_id, secret = gateway.mint(max_spend_usd="0.000055")
    r = gateway.request("POST", "/v1/messages", secret, json=claude("out-claude", "x #words=20", max_tokens=500))
    assert r.status_code == 200, r.text
    assert r.headers["x-tollway-max-tokens-clamped"] == "5"
    assert r.json()["usage"]["output_tokens"] == 5
    assert r.json()["stop_reason"] == "max_tokens"


def test_spend_never_passes_the_cap(gateway: Gateway) -> None:
    """With input prices, requests go on until the cap: total spend stays within it."""
    cap = 3000
    key_id, secret = gateway.mint(max_spend_usd=str(Decimal(cap) / 1_000_000))
    statuses = []
    for i in range(60):
        r = gateway.request(
            "POST",
            "/v1/chat/completions",
            secret,
            json=chat("test-gpt", f"request number {i} with some words #words=25"),
        )
        statuses.append(r.status_code)
        if r.status_code == 402:
            break
    assert 402 in statuses and statuses.count(200) >= 5
    info = gateway.wait_settled(key_id)
    assert 0 < info["spent_micros"] <= cap
    assert gateway.key_usage(key_id)["total_cost_micros"] == info["spent_micros"]


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_client_disconnect_mid_stream_stops_upstream_bills_and_releases(gateway: Gateway, fake, route: str) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    words = 40  # 40 events, 50 ms apart: the upstream would take 2 s to finish
    text = f"long story #words={words} #chunk_delay_ms=50"
    if route == "openai":
        path, body = "/v1/chat/completions", chat("test-gpt", text, stream=True)
    else:
        path, body = "/v1/messages", claude("test-claude", text, max_tokens=1000, stream=True)
    stats_before = fake_stats(fake)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gateway.url + path, json=body, headers={"authorization": f"Bearer {secret}"}) as r:
            assert r.status_code == 200
            received = b""
            for chunk in r.iter_bytes():
                received += chunk
                if received.count(b"\n\n") >= 10:
                    break
        closed_at = time.monotonic()
    if gateway.server == "robyn":
        # Robyn 0.88 lets the app see that a client left only when a later request arrives
        # (README, "Servers"), so the upstream runs on until then or until it ends. Billing
        # does not depend on it: the stream settles either way, for what was generated.
        info = gateway.wait_settled(key_id, timeout=10)  # these requests are the "later" ones
        assert info["reserved_micros"] == 0
        event = gateway.key_usage(key_id)["events"][0]
        assert event["outcome"] in ("client_closed", "ok")
        assert 10 <= event["output_tokens"] <= words
        assert event["cost_micros"] == info["spent_micros"] > 0
        return
    # The upstream request is stopped within a second of the client leaving.
    while fake_stats(fake)["aborted_streams"] <= stats_before["aborted_streams"]:
        assert time.monotonic() - closed_at < 1.0, "upstream stream still running 1 s after the client left"
        time.sleep(0.02)
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0
    event = gateway.key_usage(key_id)["events"][0]
    assert event["outcome"] == "client_closed"
    assert 5 <= event["output_tokens"] < words
    assert event["cost_micros"] > 0 and info["spent_micros"] == event["cost_micros"]
    if route == "openai":
        assert event["estimated"] is True  # the usage chunk comes only at the end
    else:
        assert event["input_tokens"] == fake_input_tokens(body["messages"][0]["content"])


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_upstream_cut_mid_stream_is_billed_for_what_was_generated(gateway: Gateway, route: str) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    if route == "openai":
        path, body = "/v1/chat/completions", chat("out-gpt", "x #words=50 #cut_after=6", stream=True)
    else:
        path, body = "/v1/messages", claude("out-claude", "x #words=50 #cut_after=6", stream=True)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gateway.url + path, json=body, headers={"authorization": f"Bearer {secret}"}) as r:
            try:
                for _ in r.iter_bytes():
                    pass
            except httpx.HTTPError:
                pass
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0
    event = gateway.key_usage(key_id)["events"][0]
    assert event["outcome"] == "upstream_error"
    assert event["output_tokens"] == 6 and event["estimated"] is True
    assert event["cost_micros"] == 60 == info["spent_micros"]


def test_markup_is_applied_to_every_figure(fake, tmp_data_dir, fresh_database, server) -> None:
    from tests.conftest import gateway_env, start_gateway, stop_gateway

    gw = start_gateway(gateway_env(fake, tmp_data_dir, fresh_database, markup="12.5"), server=server)
    try:
        key_id, secret = gw.mint(max_spend_usd=1)
        text = "markup #words=3"
        r = gw.request("POST", "/v1/chat/completions", secret, json=chat("test-gpt", text))
        assert r.status_code == 200
        want = expected_micros(TEST_GPT, "12.5", input=fake_input_tokens(text), output=3)
        assert gw.key_usage(key_id)["total_cost_micros"] == want
        usage = gw.request("GET", "/v1/usage", gw.admin).json()
        assert usage["total_cost_micros"] == want
    finally:
        stop_gateway(gw)


def test_client_leaving_a_quiet_stream_is_noticed_between_chunks(gateway: Gateway, fake) -> None:
    """The client goes away while the upstream is silent (3 s between events): the
    gateway learns it from the server's http.disconnect, not from a failed write, and
    still stops the upstream within a second."""
    if gateway.server == "robyn":
        pytest.skip("Robyn 0.88 reports a departed client only when a later request arrives (README, Servers)")
    key_id, secret = gateway.mint(max_spend_usd=1)
    body = chat("test-gpt", "quiet story #words=5 #chunk_delay_ms=3000", stream=True)
    stats_before = fake_stats(fake)
    with httpx.Client(timeout=30) as client:
        with client.stream(
            "POST", gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}
        ) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the first event (the role head) arrives at once
        closed_at = time.monotonic()
    while fake_stats(fake)["aborted_streams"] <= stats_before["aborted_streams"]:
        assert time.monotonic() - closed_at < 1.0, "upstream stream still running 1 s after the client left"
        time.sleep(0.02)
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0
    assert gateway.key_usage(key_id)["events"][0]["outcome"] == "client_closed"
