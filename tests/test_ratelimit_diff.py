"""The Rust rate limiter (tollway._core via tollway.policy.ratelimit.RateLimiter) against the
pure-Python reference (tollway.policy.ratelimit_ref): the same operations on both, every
result compared (permits, refusals with their windows, snapshots, states, the buckets kept
and their order, which the sweep of idle buckets decides)."""

from __future__ import annotations

import gc
import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway import _core
from tollway.policy.ratelimit import WINDOW_MS, Permit, RateLimiter, RateLimits, RateSnapshot, Refusal, Window
from tollway.policy.ratelimit_ref import ReferencePermit, ReferenceRateLimiter

W = WINDOW_MS
IDS = ["k", "k|m", "k|n", "other"]

limits_st = st.builds(
    RateLimits,
    rpm=st.one_of(st.none(), st.integers(1, 6)),
    tpm=st.one_of(st.none(), st.integers(1, 3000)),
    max_parallel=st.one_of(st.none(), st.integers(1, 4)),
)
dt_st = st.one_of(
    st.just(0), st.integers(1, 3000), st.integers(W - 3000, W + 3000), st.integers(-5000, -1), st.integers(2 * W, 3 * W)
)
ids_st = st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True)
op_st = st.one_of(
    st.tuples(st.just("acquire"), dt_st, ids_st, st.integers(0, 2500)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 4000), dt_st),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("drop"), st.integers(0, 50)),
    st.tuples(st.just("forget"), st.sampled_from(IDS)),
    st.tuples(st.just("state"), st.sampled_from(IDS + ["never"])),
    st.tuples(st.just("snapshot"), st.lists(st.sampled_from(IDS + ["never"]), max_size=3, unique=True)),
    st.tuples(st.just("limits"), st.sampled_from(IDS), limits_st),
)


class Pair:
    """Both limiters, driven alike; every answer compared."""

    def __init__(self) -> None:
        self.rust, self.ref = RateLimiter(), ReferenceRateLimiter()
        self.open: list[tuple[Permit, ReferencePermit]] = []

    def acquire(self, buckets, tokens: int, now: int) -> bool:
        a, b = self.rust.acquire(buckets, tokens, now), self.ref.acquire(buckets, tokens, now)
        if isinstance(b, Refusal):
            assert a == b
            return False
        assert isinstance(a, Permit) and isinstance(b, ReferencePermit)
        assert (a.tokens, a.done) == (b.tokens, b.done) == (tokens, False)
        self.open.append((a, b))
        return True

    def end(self, i: int, how: str, *args) -> None:
        if not self.open:
            return
        a, b = self.open.pop(i % len(self.open))
        if how == "settle":
            a.settle(*args)
            b.settle(*args)
        elif how == "release":
            a.release()
            b.release()
        if how != "drop":
            assert a.done and b.done

    def check(self, limits: dict, now: int) -> None:
        assert len(self.rust) == len(self.ref)
        assert self.rust.bucket_ids() == self.ref.bucket_ids()
        for bid, lim in limits.items():
            assert self.rust.state(bid, lim, now) == self.ref.state(bid, lim, now)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(limits_st, min_size=4, max_size=4), ops=st.lists(op_st, min_size=10, max_size=80))
def test_every_answer_is_the_reference_s(start, ops):
    limits = dict(zip(IDS, start, strict=True))
    both, now = Pair(), 10_000
    for op in ops:
        kind = op[0]
        if kind == "acquire":
            _, dt, ids, tokens = op
            now += dt
            both.acquire([(bid, limits[bid]) for bid in ids], tokens, now)
        elif kind == "settle":
            now += op[3]
            both.end(op[1], "settle", op[2], now)
        elif kind in ("release", "drop"):
            both.end(op[1], kind)
        elif kind == "forget":
            both.rust.forget(op[1])
            both.ref.forget(op[1])
        elif kind == "state":
            lim = limits.get(op[1], RateLimits(rpm=3, tpm=100))
            assert both.rust.state(op[1], lim, now) == both.ref.state(op[1], lim, now)
        elif kind == "snapshot":
            buckets = [(bid, limits.get(bid, RateLimits(rpm=2))) for bid in op[1]]
            assert both.rust.snapshot(buckets, now) == both.ref.snapshot(buckets, now)
        else:
            limits[op[1]] = op[2]
        assert len(both.rust) == len(both.ref) and both.rust.bucket_ids() == both.ref.bucket_ids()
    both.check(limits, now)


def test_many_buckets_swept_alike():
    """Hundreds of buckets (more than one sweep step of 128), some busy, some forgotten and
    made again, the clock jumping: the same buckets kept, in the same order, at every step."""
    rnd, both, now = random.Random(15), Pair(), 0
    lims = [RateLimits(rpm=3), RateLimits(tpm=500, max_parallel=2), RateLimits(max_parallel=1), RateLimits()]
    limits = {}
    for step in range(6000):
        now += rnd.choice([0, 1, 7, 250, 2000, W // 3])
        r = rnd.random()
        if r < 0.6:
            bid = f"key_{rnd.randrange(400)}"
            lim = limits.setdefault(bid, rnd.choice(lims))
            if both.acquire([(bid, lim)], rnd.randrange(0, 700), now) and rnd.random() < 0.8:
                both.end(-1, rnd.choice(["settle", "settle", "release", "drop"]), rnd.randrange(0, 900), now)
        elif r < 0.8 and both.open:
            both.end(rnd.randrange(len(both.open)), "settle", rnd.randrange(0, 900), now)
        elif r < 0.85:
            bid = f"key_{rnd.randrange(400)}"
            both.rust.forget(bid)
            both.ref.forget(bid)
        assert both.rust.bucket_ids() == both.ref.bucket_ids(), step
    both.check(limits, now)
    assert len(both.rust) < 400  # the sweep did drop idle buckets


def test_beyond_sixty_four_bits():
    """Python ints have no bound: a huge estimate reserves the tpm in both, a huge actual
    fills the window in both. Rust counts values beyond 2**62 as 2**62 (a limit shown as
    such, a time that far on as that time), with no error."""
    both = Pair()
    lim = RateLimits(tpm=1000, rpm=5)
    assert both.acquire([("k", lim)], 10**30, 0)
    assert not both.acquire([("k", lim)], 1, 5)
    both.end(0, "settle", 10**25, 6)
    assert not both.acquire([("k", lim)], 0, 7)
    assert both.rust.state("k", lim, 7)["tokens"] == both.ref.state("k", lim, 7)["tokens"]
    assert both.acquire([("k", lim)], 0, W + 1)
    rl, huge = RateLimiter(), RateLimits(rpm=10**30, tpm=10**30, max_parallel=10**30)
    assert isinstance(rl.acquire([("h", huge)], 10**40, 10**20), Permit)
    assert rl.state("h", huge, 10**20)["requests"] == {"limit": 1 << 62, "remaining": (1 << 62) - 1, "reset_ms": W}


def test_permits_freed_by_the_cycle_collector():
    """Permits in reference cycles, collected at whatever allocation the collector picks
    (here: constantly, inside the limiter's own calls): slots freed, nothing stuck."""
    rl, lim = RateLimiter(), RateLimits(rpm=10**6, max_parallel=10**6)
    threshold = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        for i in range(3000):
            p = rl.acquire([("k", lim), ("k|m", lim)], 1, i)
            cycle: list = [p]
            cycle.append(cycle)
            if i % 3 == 0:
                assert isinstance(rl.acquire([("k", RateLimits(rpm=1))], 0, i), Refusal)
            del p, cycle
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    assert rl.state("k", lim, 3000)["in_flight"] == rl.state("k|m", lim, 3000)["in_flight"] == 0


def test_reentrant_calls_from_the_objects_it_makes():
    """The Rust limiter makes its Refusal and Windows after letting go of its lock: a factory
    that drops a permit, settles one and calls the limiter again does not deadlock."""
    held: list = []

    def refusal(*args):
        held.pop().release()  # a permit ended from inside the refusal being made
        del held[:1]  # and one dropped
        assert isinstance(rl.acquire([("other", RateLimits(rpm=5))], 0, 1), Permit)
        return Refusal(*args)

    rl = _core.RateLimiter(Window, RateSnapshot, refusal)
    lim = RateLimits(max_parallel=2)
    held += [rl.acquire([("k", lim)], 0, 0), rl.acquire([("k", lim)], 0, 0)]
    r = rl.acquire([("k", lim)], 0, 0)
    assert isinstance(r, Refusal) and r.limit == "parallel" and not held
    assert rl.state("k", lim, 0)["in_flight"] == 0
    assert rl.state("other", RateLimits(rpm=5), 1)["requests_in_window"] == 1


def test_threads_dropping_permits_while_others_acquire():
    """Permits dropped (not settled) on several threads at once, others refused meanwhile:
    every parallel slot comes back."""
    rl, lim = RateLimiter(), RateLimits(rpm=10**9, tpm=10**12, max_parallel=4)

    def work(t):
        for i in range(3000):
            p = rl.acquire([("k", lim), (f"k|{t}", lim)], 3, i)
            if isinstance(p, Permit) and i % 2:
                p.settle(1, i)
            del p

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rl.state("k", lim, 3000)["in_flight"] == 0
    assert all(rl.state(f"k|{t}", lim, 3000)["in_flight"] == 0 for t in range(6))


def test_more_buckets_than_kept_inline():
    """Up to four buckets are parsed without allocating, more on the heap: the same answers."""
    both = Pair()
    buckets = [(f"b{i}", RateLimits(rpm=i + 1, tpm=1000 * (6 - i))) for i in range(6)]
    for t in range(8):
        both.acquire(buckets, 400, t * 10)
        both.acquire(tuple(buckets[::-1]), 10, t * 10 + 5)  # any sequence, not only a list
    assert both.rust.snapshot(buckets, 100) == both.ref.snapshot(buckets, 100)
    both.check(dict(buckets), 100)
