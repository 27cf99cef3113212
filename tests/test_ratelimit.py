"""The rate limiter (tollway.policy.ratelimit), pure: no gateway, time passed by hand. Every
test runs on both implementations: the Rust one (``RateLimiter``, tollway._core) and the
pure-Python reference (tollway.policy.ratelimit_ref); tests/test_ratelimit_diff.py drives
both with the same operations and compares every result.

Two property tests: one replays random operations (acquire on one or two buckets, settle
lower or higher, release, changed limits) against a brute-force model of the sliding window
and checks every decision and every retry_after_ms; one checks with constant limits that no
60,000-ms interval ever holds more than rpm requests or tpm tokens.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway.policy.ratelimit import PARALLEL_RETRY_MS, WINDOW_MS, Permit, RateLimiter, RateLimits, Refusal
from tollway.policy.ratelimit_ref import ReferencePermit, ReferenceRateLimiter

W = WINDOW_MS
KEY, MODEL = "key_1", "key_1|gpt-4o"


@dataclass(frozen=True)
class Impl:
    name: str
    limiter: Callable[[], Any]
    permit: type


IMPLS = [Impl("rust", RateLimiter, Permit), Impl("reference", ReferenceRateLimiter, ReferencePermit)]
each_impl = pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])


@pytest.fixture(params=IMPLS, ids=[i.name for i in IMPLS])
def impl(request) -> Impl:
    return request.param


# -- the model: every admitted request, checked by brute force ------------------------------


class Model:
    def __init__(self) -> None:
        self.recs: list[dict] = []  # ts, vals {bucket: tokens} (logged buckets), live, open, buckets

    def window(self, bid: str, t: int) -> tuple[int, int]:
        ins = [r["vals"][bid] for r in self.recs if r["live"] and bid in r["vals"] and r["ts"] > t - W]
        return len(ins), sum(ins)

    def in_flight(self, bid: str) -> int:
        return sum(1 for r in self.recs if r["open"] and bid in r["buckets"])

    def time_fits(self, buckets, tokens: int, t: int) -> bool:
        for bid, lim in buckets:
            count, total = self.window(bid, t)
            if lim.rpm is not None and count >= lim.rpm:
                return False
            if lim.tpm is not None and total + min(tokens, lim.tpm) > lim.tpm:
                return False
        return True

    def parallel_full(self, buckets) -> bool:
        return any(lim.max_parallel is not None and self.in_flight(bid) >= lim.max_parallel for bid, lim in buckets)

    def first_fit(self, buckets, tokens: int, t: int) -> int:
        """The earliest t' > t at which the window constraints hold (they change only when an
        entry leaves: at its ts + W)."""
        times = sorted({r["ts"] + W for r in self.recs if r["ts"] + W > t})
        return next(c for c in times if self.time_fits(buckets, tokens, c))

    def admit(self, buckets, tokens: int, t: int) -> dict:
        vals = {}
        for bid, lim in buckets:
            if lim.rpm is not None or lim.tpm is not None:
                vals[bid] = tokens if lim.tpm is None else min(tokens, lim.tpm)
        rec = {"ts": t, "vals": vals, "live": True, "open": True, "buckets": [b for b, _ in buckets]}
        self.recs.append(rec)
        return rec


limits_st = st.builds(
    RateLimits,
    rpm=st.one_of(st.none(), st.integers(1, 6)),
    tpm=st.one_of(st.none(), st.integers(1, 3000)),
    max_parallel=st.one_of(st.none(), st.integers(1, 4)),
)
dt_st = st.one_of(st.just(0), st.integers(1, 3000), st.integers(W - 3000, W + 3000))
op_st = st.one_of(
    st.tuples(st.just("acquire"), dt_st, st.integers(0, 1500), st.booleans()),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 4000)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("limits"), st.booleans(), limits_st),
)


def run(impl: Impl, ops, start: dict, probe_at=None):
    """Apply ``ops`` to a limiter and the model, checking each acquire against the model, each
    refusal's retry_after_ms against the model's first fit and, on a fresh replay of the ops
    before it, by acquiring 1 ms before that time and at it. With ``probe_at`` = i, stop before
    op i and return the limiter (and its open permits, kept alive)."""
    limits = dict(start)
    rl, model, now, open_ = impl.limiter(), Model(), 0, []
    for i, op in enumerate(ops):
        if probe_at == i:
            return rl, open_
        if op[0] == "acquire":
            _, dt, tokens, both = op
            now += dt
            buckets = [(KEY, limits[KEY])] + ([(MODEL, limits[MODEL])] if both else [])
            got = rl.acquire(buckets, tokens, now)
            fits = model.time_fits(buckets, tokens, now) and not model.parallel_full(buckets)
            assert isinstance(got, impl.permit) == fits, (i, got)
            if fits:
                open_.append((got, model.admit(buckets, tokens, now)))
            elif probe_at is None:
                wait = model.first_fit(buckets, tokens, now) - now if not model.time_fits(buckets, tokens, now) else 0
                if model.parallel_full(buckets):
                    wait = max(wait, PARALLEL_RETRY_MS)
                assert got.retry_after_ms == wait, (i, got, wait)
                if not model.parallel_full(buckets):
                    probe, _held = run(impl, ops, start, probe_at=i)
                    assert isinstance(probe.acquire(buckets, tokens, now + wait - 1), Refusal)
                    assert isinstance(probe.acquire(buckets, tokens, now + wait), impl.permit)
        elif op[0] in ("settle", "release") and open_:
            permit, rec = open_.pop(op[1] % len(open_))
            rec["open"] = False
            if op[0] == "settle":
                permit.settle(op[2], now)
                rec["vals"] = {b: op[2] for b in rec["vals"]}
            else:
                permit.release()
                rec["live"] = False
        elif op[0] == "limits":
            limits[KEY if op[1] else MODEL] = op[2]
    for bid in (KEY, MODEL):
        st_ = rl.state(bid, limits[bid], now)
        assert (st_["requests_in_window"], st_["tokens_in_window"]) == model.window(bid, now)
        assert st_["in_flight"] == model.in_flight(bid)
    return rl, open_


@each_impl
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=limits_st, model=limits_st, ops=st.lists(op_st, min_size=20, max_size=60))
def test_decisions_and_retry_times_match_a_brute_force_window(impl, key, model, ops):
    run(impl, ops, {KEY: key, MODEL: model})


@each_impl
@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(1, 8),
    tpm=st.integers(50, 2000),
    reqs=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(0, 3000), st.floats(0, 1), st.integers(0, 3)),
        min_size=10,
        max_size=60,
    ),
)
def test_no_sixty_second_interval_exceeds_the_limits(impl, rpm, tpm, reqs):
    """Settlements only lower (actual <= reserved): then any interval of W ms holds at most
    rpm requests and tpm tokens, counting settled values. A request is settled at once or at
    the next request's time, or released at once or then (fate 0..3)."""
    rl, lim, now, admitted, later = impl.limiter(), RateLimits(rpm=rpm, tpm=tpm), 0, {}, []
    for i, (dt, tokens, share, fate) in enumerate(reqs):
        now += dt
        for j, p, actual in later:
            if actual is None:
                p.release()
                del admitted[j]
            else:
                p.settle(actual, now)
                admitted[j] = (admitted[j][0], actual)
        later.clear()
        p = rl.acquire([(KEY, lim)], tokens, now)
        if isinstance(p, Refusal):
            continue
        actual = int(min(tokens, tpm) * share)
        admitted[i] = (now, min(tokens, tpm))
        if fate == 0:
            p.release()
            del admitted[i]
        elif fate == 1:
            p.settle(actual, now)
            admitted[i] = (now, actual)
        else:
            later.append((i, p, actual if fate == 2 else None))
    for start, _ in admitted.values():
        inside = [n for t, n in admitted.values() if start <= t < start + W]
        assert len(inside) <= rpm
        assert sum(inside) <= tpm


# -- the pieces one at a time --------------------------------------------------------------


def test_release_gives_everything_back(impl):
    rl, lim = impl.limiter(), RateLimits(rpm=3, tpm=1000, max_parallel=2)
    buckets = [(KEY, lim), (MODEL, lim)]
    rl.acquire(buckets, 200, 0).settle(150, 10)
    before = [rl.state(b, lim, 500) for b in (KEY, MODEL)]
    p = rl.acquire(buckets, 700, 500)
    assert rl.state(KEY, lim, 500)["tokens_in_window"] == 850
    p.release()
    assert [rl.state(b, lim, 500) for b in (KEY, MODEL)] == before
    p.release()
    p.settle(999, 600)  # after release: nothing
    assert [rl.state(b, lim, 500) for b in (KEY, MODEL)] == before


def test_settle_below_and_above_the_reservation(impl):
    rl, lim = impl.limiter(), RateLimits(tpm=1000)
    p = rl.acquire([(KEY, lim)], 600, 0)
    assert isinstance(rl.acquire([(KEY, lim)], 500, 1), Refusal)
    p.settle(100, 2)  # lower: room again
    q = rl.acquire([(KEY, lim)], 500, 3)
    assert rl.state(KEY, lim, 3)["tokens"]["remaining"] == 400
    q.settle(1500, 4)  # higher than reserved (and than tpm): the sum goes over
    s = rl.state(KEY, lim, 4)
    assert (s["tokens_in_window"], s["tokens"]["remaining"]) == (1600, 0)
    r = rl.acquire([(KEY, lim)], 1, 5)
    assert r.limit == "tokens" and r.retry_after_ms == 3 + W - 5  # until q's entry leaves
    p.settle(0, 6)  # a second settle: nothing
    assert rl.state(KEY, lim, 6)["tokens_in_window"] == 1600


def test_settle_after_the_entry_left_the_window_changes_nothing(impl):
    rl, lim = impl.limiter(), RateLimits(tpm=1000)
    p = rl.acquire([(KEY, lim)], 800, 0)
    later = rl.acquire([(KEY, lim)], 100, W - 1)
    p.settle(5000, W + 10)
    assert rl.state(KEY, lim, W + 10)["tokens_in_window"] == 100
    later.release()
    assert rl.state(KEY, lim, W + 10)["tokens_in_window"] == 0


def test_a_request_larger_than_tpm_runs_alone(impl):
    rl, lim = impl.limiter(), RateLimits(tpm=1000)
    p = rl.acquire([(KEY, lim)], 50_000, 0)
    assert isinstance(p, impl.permit)
    assert rl.state(KEY, lim, 0)["tokens_in_window"] == 1000  # min(estimate, tpm)
    r = rl.acquire([(KEY, lim)], 1, 10)
    assert (r.limit, r.remaining, r.retry_after_ms) == ("tokens", 0, W - 10)
    p.settle(40_000, 20)
    assert isinstance(rl.acquire([(KEY, lim)], 50_000, W), impl.permit)


def test_max_parallel_with_settle_release_and_dropped_permits(impl):
    rl, lim = impl.limiter(), RateLimits(max_parallel=2)
    a, b = rl.acquire([(KEY, lim)], 0, 0), rl.acquire([(KEY, lim)], 0, 0)
    r = rl.acquire([(KEY, lim)], 0, 0)
    assert (r.limit, r.limit_value, r.remaining, r.retry_after_ms) == ("parallel", 2, 0, PARALLEL_RETRY_MS)
    a.settle(10, 1)
    c = rl.acquire([(KEY, lim)], 0, 1)
    assert isinstance(c, impl.permit) and isinstance(rl.acquire([(KEY, lim)], 0, 1), Refusal)
    b.release()
    assert isinstance(rl.acquire([(KEY, lim)], 0, 2), impl.permit)  # dropped at once: slot freed
    gc.collect()
    assert rl.state(KEY, lim, 2)["in_flight"] == 1  # c only
    del c
    assert rl.state(KEY, lim, 2)["in_flight"] == 0


def test_all_buckets_or_none(impl):
    rl, key, model = impl.limiter(), RateLimits(rpm=10, tpm=10_000, max_parallel=5), RateLimits(rpm=1)
    rl.acquire([(KEY, key), (MODEL, model)], 100, 0).settle(100, 1)
    before = rl.state(KEY, key, 5)
    r = rl.acquire([(KEY, key), (MODEL, model)], 100, 5)
    assert (r.bucket, r.limit, r.retry_after_ms) == (MODEL, "requests", W - 5)
    assert rl.state(KEY, key, 5) == before  # the first bucket untouched
    assert isinstance(rl.acquire([(KEY, key)], 100, 5), impl.permit)  # the key alone has room


def test_the_refusal_names_the_limit_that_frees_last(impl):
    rl, lim = impl.limiter(), RateLimits(rpm=1)
    rl.acquire([(KEY, lim), (MODEL, RateLimits(rpm=1))], 0, 0).settle(0, 0)
    rl.acquire([(MODEL, RateLimits(rpm=5))], 0, 30_000).settle(0, 30_000)
    r = rl.acquire([(KEY, lim), (MODEL, RateLimits(rpm=1))], 0, 40_000)
    assert (r.bucket, r.retry_after_ms) == (MODEL, 30_000 + W - 40_000)  # both must wait: the later
    assert r.requests.bucket == MODEL  # both at 0 remaining: the later reset


def test_lowered_limits_apply_to_the_existing_log(impl):
    rl, hi = impl.limiter(), RateLimits(rpm=10, max_parallel=10)
    held = [rl.acquire([(KEY, hi)], 0, t * 1000) for t in range(5)]
    lo = RateLimits(rpm=3, max_parallel=5)
    r = rl.acquire([(KEY, lo)], 0, 10_000)
    assert (r.limit, r.remaining, r.retry_after_ms) == ("requests", 0, 2000 + W - 10_000)  # 3 must leave
    assert isinstance(rl.acquire([(KEY, lo)], 0, 2000 + W - 1), Refusal)
    for p in held:
        p.settle(0, 2000 + W - 1)
    assert isinstance(rl.acquire([(KEY, lo)], 0, 2000 + W), impl.permit)
    streams = [rl.acquire([(KEY, hi)], 0, 3 * W) for _ in range(3)]
    assert rl.acquire([(KEY, RateLimits(max_parallel=2))], 0, 3 * W).limit == "parallel"
    streams[0].settle(0, 3 * W)
    assert rl.acquire([(KEY, RateLimits(max_parallel=2))], 0, 3 * W).limit == "parallel"  # 2 still in flight
    streams[1].settle(0, 3 * W)
    assert isinstance(rl.acquire([(KEY, RateLimits(max_parallel=2))], 0, 3 * W), impl.permit)


def test_window_edges_and_a_clock_that_goes_back(impl):
    rl, lim = impl.limiter(), RateLimits(rpm=1)
    rl.acquire([(KEY, lim)], 0, 1000)
    assert rl.acquire([(KEY, lim)], 0, 1000 + W - 1).retry_after_ms == 1
    assert isinstance(rl.acquire([(KEY, lim)], 0, 1000 + W), impl.permit)
    assert isinstance(rl.acquire([(KEY, lim)], 0, 0), Refusal)  # earlier now: taken as the latest seen
    s = rl.state(KEY, lim, 0)
    assert s["requests"] == {"limit": 1, "remaining": 0, "reset_ms": W}


def test_threads_lose_no_update(impl):
    rl, free = impl.limiter(), RateLimits(rpm=10**9, tpm=10**12, max_parallel=10**6)
    threads, n = 8, 1500

    def work():
        for i in range(n):
            rl.acquire([(KEY, free), (MODEL, free)], 10, 0).settle(7, i)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for bid in (KEY, MODEL):
        s = rl.state(bid, free, n)
        assert (s["requests_in_window"], s["tokens_in_window"], s["in_flight"]) == (threads * n, threads * n * 7, 0)

    capped, admitted = RateLimits(rpm=100), []

    def race():
        for _ in range(50):
            p = rl.acquire([("key_2", capped)], 0, 0)
            if isinstance(p, impl.permit):
                admitted.append(p)

    ts = [threading.Thread(target=race) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(admitted) == 100


def test_idle_buckets_are_dropped_and_forget(impl):
    rl, lim = impl.limiter(), RateLimits(rpm=5, max_parallel=3)
    for i in range(1000):
        rl.acquire([(f"key_{i}", lim)], 10, 0).settle(10, 0)
    held = rl.acquire([("busy", lim)], 0, 0)  # in flight: kept however old
    assert len(rl) == 1001
    for i in range(1000):
        rl.acquire([("hot", RateLimits(rpm=100))], 0, W + i * 1000).settle(0, W + i * 1000)
    assert rl.bucket_ids() == ["busy", "hot"]
    held.settle(0, 2 * W)
    rl.forget("hot")
    assert rl.state("hot", lim, 2 * W)["requests_in_window"] == 0
    p = rl.acquire([("hot", lim)], 0, 2 * W)
    rl.forget("hot")
    q = rl.acquire([("hot", lim)], 0, 2 * W)
    p.release()  # on the forgotten bucket: the new one is untouched
    assert rl.state("hot", lim, 2 * W)["in_flight"] == 1
    q.settle(0, 2 * W)


def test_limits_are_checked(impl):
    for bad in ({"rpm": 0}, {"tpm": -1}, {"max_parallel": 1.5}):
        with pytest.raises(ValueError):
            RateLimits(**bad)
    rl = impl.limiter()
    with pytest.raises(ValueError):
        rl.acquire([(KEY, RateLimits())], -1, 0)
    with pytest.raises(ValueError):
        rl.acquire([(KEY, RateLimits())], 1, 0).settle(-5, 0)
