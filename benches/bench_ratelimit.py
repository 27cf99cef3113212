"""The rate limiter on the hot path: one acquire + settle per model call.

`pytest benches/bench_ratelimit.py --benchmark-enable`. Two buckets (a key and a model on
it) with rpm and tpm set, the clock advancing 1 ms a call so each log holds a full minute
(60,000 entries) and every call prunes one: the steady state of a busy key. Also one
bucket, acquire + release, and a refused acquire (the 429 path, with its retry time).
Each on both implementations, side by side in one group: the Rust one (``RateLimiter``,
what the gateway uses) and the pure-Python reference (``ReferenceRateLimiter``).
"""

from __future__ import annotations

import itertools

import pytest

from tollway.policy.ratelimit import WINDOW_MS, RateLimiter, RateLimits, Refusal
from tollway.policy.ratelimit_ref import ReferenceRateLimiter

IMPLS = {"rust": RateLimiter, "reference": ReferenceRateLimiter}
each_impl = pytest.mark.parametrize("impl", list(IMPLS))

KEY = ("key_1", RateLimits(rpm=1_000_000, tpm=10**12, max_parallel=1000))
MODEL = ("key_1|gpt-4o", RateLimits(rpm=1_000_000, tpm=10**12))


def _warm(rl, buckets, clock) -> None:
    for _ in range(WINDOW_MS):
        rl.acquire(buckets, 1200, next(clock)).settle(800, 0)


def _cycle(impl: str, buckets, end: str):
    rl, clock = IMPLS[impl](), itertools.count()
    _warm(rl, buckets, clock)

    def once():
        now = next(clock)
        p = rl.acquire(buckets, 1200, now)
        if end == "settle":
            p.settle(800, now)
        else:
            p.release()

    return rl, once


@pytest.mark.benchmark(group="ratelimit-acquire-settle-two-buckets")
@each_impl
def test_acquire_settle_two_buckets(benchmark, impl):
    rl, once = _cycle(impl, [KEY, MODEL], "settle")
    benchmark(once)
    assert rl.state(KEY[0], KEY[1], 10**9)["in_flight"] == 0


@pytest.mark.benchmark(group="ratelimit-acquire-settle-one-bucket")
@each_impl
def test_acquire_settle_one_bucket(benchmark, impl):
    rl, once = _cycle(impl, [KEY], "settle")
    benchmark(once)
    assert rl.state(KEY[0], KEY[1], 10**9)["in_flight"] == 0


@pytest.mark.benchmark(group="ratelimit-acquire-release-two-buckets")
@each_impl
def test_acquire_release_two_buckets(benchmark, impl):
    rl, once = _cycle(impl, [KEY, MODEL], "release")
    benchmark(once)
    assert rl.state(KEY[0], KEY[1], 10**9)["in_flight"] == 0


@pytest.mark.benchmark(group="ratelimit-refused-two-buckets")
@each_impl
def test_refused_two_buckets(benchmark, impl):
    rl, clock = IMPLS[impl](), itertools.count()
    full = [KEY, ("key_1|gpt-4o", RateLimits(rpm=1000, tpm=10**6))]
    while not isinstance(p := rl.acquire(full, 900, next(clock) * 30), Refusal):
        p.settle(900, 0)
    now = next(clock) * 30
    refusal = benchmark(lambda: rl.acquire(full, 900, now))
    assert isinstance(refusal, Refusal)
