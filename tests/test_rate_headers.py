"""Rate-limit headers (tollway.policy.rate_headers): formats, which sets appear, and what the
installed openai and anthropic SDKs make of them (their own retry code, no network)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from anthropic._models import FinalRequestOptions as AnthropicOptions
from openai._models import FinalRequestOptions as OpenAIOptions

from tollway.policy.rate_headers import go_duration, headers_for, retry_after_headers, rfc3339
from tollway.policy.ratelimit import WINDOW_MS, Permit, RateLimiter, RateLimits, Refusal
from tollway.policy.ratelimit_ref import ReferencePermit, ReferenceRateLimiter

W = WINDOW_MS
WALL = 1_700_000_000_000  # 2023-11-14T22:13:20Z

# The Rust limiter and the pure-Python reference: the same headers from both.
IMPLS = {"rust": (RateLimiter, Permit), "reference": (ReferenceRateLimiter, ReferencePermit)}


@pytest.fixture(params=list(IMPLS))
def impl(request) -> tuple:
    return IMPLS[request.param]


@pytest.mark.parametrize(
    "ms, text",
    [(0, "0s"), (1, "1ms"), (20, "20ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"), (1020, "1.02s")]
    + [(59_999, "59.999s"), (60_000, "1m0s"), (90_500, "1m30.5s"), (360_000, "6m0s"), (3_723_000, "1h2m3s")],
)
def test_openai_durations_are_go_durations(ms, text):
    assert go_duration(ms) == text


def test_timestamps_and_retry_after_round_up():
    assert rfc3339(WALL) == "2023-11-14T22:13:20Z"
    assert rfc3339(WALL + 1) == "2023-11-14T22:13:21Z"
    assert retry_after_headers(1) == [("retry-after", "1"), ("retry-after-ms", "1")]
    assert retry_after_headers(1000) == [("retry-after", "1"), ("retry-after-ms", "1000")]
    assert retry_after_headers(59_001) == [("retry-after", "60"), ("retry-after-ms", "59001")]


def refused(impl) -> tuple[Refusal, list]:
    rl = impl[0]()
    buckets = [("key_1", RateLimits(rpm=2, tpm=10_000)), ("key_1|m", RateLimits(tpm=1000))]
    rl.acquire(buckets, 300, 0).settle(250, 10)
    rl.acquire(buckets, 300, 1500).settle(300, 1600)
    r = rl.acquire(buckets, 800, 30_000)
    assert isinstance(r, Refusal)
    return r, buckets


def test_openai_refusal_headers(impl):
    r, _ = refused(impl)
    # key: 2 of 2 requests (frees at 60 s); model: 550 of 1000 tokens, needs 800 (frees at 61.5 s)
    assert (r.bucket, r.limit, r.retry_after_ms) == ("key_1|m", "tokens", 1500 + W - 30_000)
    assert headers_for("openai", r, WALL) == [
        ("retry-after", "32"),
        ("retry-after-ms", "31500"),
        ("x-ratelimit-limit-requests", "2"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "31.5s"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-remaining-tokens", "450"),
        ("x-ratelimit-reset-tokens", "31.5s"),
    ]


def test_anthropic_refusal_headers(impl):
    r, _ = refused(impl)
    assert headers_for("anthropic", r, WALL) == [
        ("retry-after", "32"),
        ("retry-after-ms", "31500"),
        ("anthropic-ratelimit-requests-limit", "2"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:52Z"),  # WALL + 31.5 s, up
        ("anthropic-ratelimit-tokens-limit", "1000"),
        ("anthropic-ratelimit-tokens-remaining", "450"),
        ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:13:52Z"),
    ]


def test_only_the_sets_whose_limits_apply(impl):
    rl = impl[0]()
    only_rpm = [("k", RateLimits(rpm=1))]
    ok = rl.acquire(only_rpm, 5, 0)
    assert isinstance(ok, impl[1])
    success = headers_for("openai", rl.snapshot(only_rpm, 0), WALL)
    assert success == [
        ("x-ratelimit-limit-requests", "1"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1m0s"),
    ]  # a success: no retry-after
    names = [n for n, _ in headers_for("anthropic", rl.acquire(only_rpm, 5, 10), WALL)]
    assert names == ["retry-after", "retry-after-ms"] + [
        f"anthropic-ratelimit-requests-{x}" for x in ("limit", "remaining", "reset")
    ]
    parallel = [("p", RateLimits(max_parallel=1))]
    held = rl.acquire(parallel, 0, 0)
    assert headers_for("openai", rl.acquire(parallel, 0, 0), WALL) == [("retry-after", "1"), ("retry-after-ms", "1000")]
    held.release()
    assert headers_for("openai", rl.snapshot([("none", RateLimits())], 0), WALL) == []
    with pytest.raises(ValueError):
        headers_for("gemini", rl.snapshot(parallel, 0), WALL)


@pytest.mark.parametrize("wait_ms", [1, 1500, 31_500, W])
def test_the_sdks_sleep_exactly_retry_after_ms(wait_ms):
    """Both SDKs, on a 429 with our headers, retry and sleep retry-after-ms to the ms."""
    r = Refusal("k", "requests", 1, 0, wait_ms)
    headers = httpx.Headers(headers_for("openai", r, WALL))
    response = httpx.Response(429, headers=headers)
    oa = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    an = anthropic.Anthropic(api_key="sk-ant-test", base_url="http://127.0.0.1:9")
    assert oa._should_retry(response) and an._should_retry(response)
    assert oa._calculate_retry_timeout(2, OpenAIOptions.construct(method="post", url="/x"), headers) == wait_ms / 1000
    assert (
        an._calculate_retry_timeout(2, AnthropicOptions.construct(method="post", url="/x"), headers) == wait_ms / 1000
    )
