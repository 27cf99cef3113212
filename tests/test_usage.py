"""/v1/usage roll-ups by key and model over time windows."""

from __future__ import annotations

import time

from tests.conftest import Gateway
from tests.test_caps import TEST_CLAUDE, TEST_GPT, expected_micros, fake_input_tokens


def test_usage_rolls_up_by_key_and_model(gateway: Gateway) -> None:
    start = int(time.time() * 1000)
    a_id, a = gateway.mint(name="alice", max_spend_usd=1)
    b_id, b = gateway.mint(name="bob", max_spend_usd=1)
    gpt_text, claude_text = "question one #words=4", "question two #words=6"
    for secret in (a, a, b):
        r = gateway.request(
            "POST",
            "/v1/chat/completions",
            secret,
            json={"model": "test-gpt", "messages": [{"role": "user", "content": gpt_text}]},
        )
        assert r.status_code == 200
    r = gateway.request(
        "POST",
        "/v1/messages",
        a,
        json={"model": "test-claude", "max_tokens": 50, "messages": [{"role": "user", "content": claude_text}]},
    )
    assert r.status_code == 200
    gpt_cost = expected_micros(TEST_GPT, input=fake_input_tokens(gpt_text), output=4)
    claude_cost = expected_micros(TEST_CLAUDE, input=fake_input_tokens(claude_text), output=6)

    usage = gateway.request("GET", "/v1/usage", gateway.admin, params={"from_ms": start}).json()
    assert set(usage) >= {"from_ms", "to_ms", "total_cost_micros", "request_count", "by_key"}
    by_key = {k["key_id"]: k for k in usage["by_key"]}
    alice, bob = by_key[a_id], by_key[b_id]
    assert alice["name"] == "alice" and bob["name"] == "bob"
    assert alice["cost_micros"] == 2 * gpt_cost + claude_cost and alice["request_count"] == 3
    assert bob["cost_micros"] == gpt_cost and bob["request_count"] == 1
    models = {m["model"]: m for m in alice["by_model"]}
    assert models["test-gpt"] == {
        "model": "test-gpt",
        "cost_micros": 2 * gpt_cost,
        "request_count": 2,
        "input_tokens": 2 * fake_input_tokens(gpt_text),
        "output_tokens": 8,
        "avg_latency_ms": models["test-gpt"]["avg_latency_ms"],
    }
    assert models["test-gpt"]["avg_latency_ms"] >= 0
    assert models["test-claude"]["output_tokens"] == 6
    assert usage["total_cost_micros"] >= 3 * gpt_cost + claude_cost

    # A window that ends before the requests is empty for these keys.
    empty = gateway.request("GET", "/v1/usage", gateway.admin, params={"from_ms": 0, "to_ms": start}).json()
    assert a_id not in {k["key_id"] for k in empty["by_key"]}


def test_usage_defaults_to_this_month(gateway: Gateway) -> None:
    import datetime as dt

    usage = gateway.request("GET", "/v1/usage", gateway.admin).json()
    start = dt.datetime.fromtimestamp(usage["from_ms"] / 1000, tz=dt.timezone.utc)
    now = dt.datetime.now(dt.timezone.utc)
    assert (start.year, start.month, start.day, start.hour, start.minute) == (now.year, now.month, 1, 0, 0)
    assert usage["to_ms"] >= int(now.timestamp() * 1000) - 5000


def test_usage_rejects_bad_windows(gateway: Gateway) -> None:
    assert gateway.request("GET", "/v1/usage", gateway.admin, params={"from_ms": "yesterday"}).status_code == 400
    assert gateway.request("GET", "/v1/usage", gateway.admin, params={"from_ms": 10, "to_ms": 5}).status_code == 400


def test_key_usage_reports_remaining_and_last_events(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd="0.01")
    for i in range(3):
        gateway.request(
            "POST",
            "/v1/chat/completions",
            secret,
            json={"model": "test-gpt", "messages": [{"role": "user", "content": f"n{i} #words=2"}]},
        )
    info = gateway.key_usage(key_id)
    assert info["max_spend_micros"] == 10_000
    assert info["remaining_micros"] == 10_000 - info["total_cost_micros"]
    assert len(info["events"]) == 3
    for event in info["events"]:
        assert {"model", "status", "latency_ms", "cost_micros", "input_tokens", "output_tokens", "created_at"} <= set(
            event
        )
    assert info["events"][0]["created_at"] >= info["events"][-1]["created_at"]
