"""What key policy costs per model call, in CPU: a key with a single cap against a key with
three spend windows, an rpm and a tpm limit (issue 15's target: within 5% CPU per request).

`pytest benches/bench_policy.py --benchmark-enable -p no:cacheprovider` (timer: process CPU
time, so the fake upstream's work in its own process is not counted, the tokio threads' is):

- ``admit``: the decision alone (rate limits, the hold on every budget, settling both);
- ``call``: a whole non-stream call through the call path with no HTTP objects
  (``Gateway.calls.model``) against the fake upstream: auth, policy, the upstream round
  trip, usage extraction, settlement, the usage event.

Side by side in one run; the call test prints, per round, the policy key's median over the
single-cap key's (the figure of the issue) and a second single-cap key's over the first
(the harness's own bias, A/A); TOLLWAY_BENCH_POLICY_ROUNDS sets the rounds (5), and
TOLLWAY_BENCH_POLICY_LIMITER=reference runs the pure-Python rate limiter instead of the Rust one.
benches/policy_cost.py measures the same over HTTP under wrk load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_SECRET, gateway_env
from tests.fakes.runner import start_fake
from tollway.config import load_settings
from tollway.gateway import Gateway
from tollway.keys.secrets import hash_secret
from tollway.policy.ratelimit_ref import ReferenceRateLimiter

SINGLE = {"max_spend_micros": 10**15}
POLICY = {
    "max_spend_micros": 10**15,
    "limits": {"day": 10**14, "week": 10**14, "month": 10**14},
    "rate_limits": {"rpm": 1_000_000, "tpm": 10**12},
}
TRIO = ("single", "single_b", "policy")
ROUNDS = int(os.environ.get("TOLLWAY_BENCH_POLICY_ROUNDS") or 5)  # rounds of the interleaved call test
PER_ROUND = 400  # turns (one call per key) per round
WARMUP = 50
BODY = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}


@pytest.fixture(scope="module")
def running():
    fake = start_fake()
    tmp = Path(tempfile.mkdtemp(prefix="tollway-bench-policy-"))
    loop = asyncio.new_event_loop()
    gw = Gateway(load_settings(gateway_env(fake, tmp, f"sqlite:///{tmp / 'tollway.db'}")))
    loop.run_until_complete(gw.app.startup())
    if os.environ.get("TOLLWAY_BENCH_POLICY_LIMITER") == "reference":
        gw.policy.limiter = ReferenceRateLimiter()  # the pure-Python one, for a before/after
    admin, _ = gw.store.ensure_admin(ADMIN_SECRET)
    account = admin.account_id if admin is not None else gw.store.first_account()
    keys = {}
    for name, values in (("single", SINGLE), ("single_b", SINGLE), ("policy", POLICY)):
        cap = values["max_spend_micros"]
        policy = {k: v for k, v in values.items() if k != "max_spend_micros"}
        key, secret = gw.store.mint(account, name, "standard", cap, None, {}, policy)
        gw.auth.minted(key, hash_secret(secret))
        keys[name] = key
    try:
        yield gw, loop, keys
    finally:
        loop.run_until_complete(gw.app.shutdown())
        loop.close()
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _admit(gw: Gateway, key):
    route = gw.settings.models["out-gpt"]
    policy = gw.policy

    def once():
        got = policy.admit(key, route, 12, 10)
        got.hold.settle(100)
        if got.permit is not None:
            got.permit.settle(22, policy.clock())

    return once


@pytest.mark.benchmark(group="policy-admit", timer=time.process_time)
@pytest.mark.parametrize("name", ["single", "policy"])
def test_admit(benchmark, running, name):
    gw, _loop, keys = running
    benchmark(_admit(gw, keys[name]))


@pytest.mark.benchmark(group="policy-call", timer=time.process_time)
def test_call_interleaved(benchmark, running):
    """Whole calls, three keys taking turns call by call (noise on this shared host hits all
    alike), the order rotating so each key is first, second and third equally often: the CPU
    of each call measured on its own. ``single_b`` is a second single-cap key: its ratio to
    ``single`` is the harness's own bias (A/A). ROUNDS rounds of PER_ROUND turns, medians and
    ratios per round printed and in extra_info."""
    gw, loop, keys = running
    cpu: dict[str, list[float]] = {name: [] for name in TRIO}
    turns = 0

    def turn():
        nonlocal turns
        first = turns % len(TRIO)
        turns += 1
        for name in TRIO[first:] + TRIO[:first]:
            began = time.process_time()
            done = loop.run_until_complete(gw.calls.model(keys[name].id, BODY, "openai"))
            cpu[name].append(time.process_time() - began)
            assert done.status == 200

    benchmark.pedantic(turn, rounds=ROUNDS * PER_ROUND, iterations=1, warmup_rounds=WARMUP)
    timed = len(cpu["single"]) > WARMUP  # (one turn under `make test`, where timing is off)
    rounds = ROUNDS if timed else 1
    per = (len(cpu["single"]) - (WARMUP if timed else 0)) // rounds
    results = []
    for r in range(rounds):
        at = (WARMUP if timed else 0) + r * per
        med = {name: statistics.median(cpu[name][at : at + per]) * 1e6 for name in TRIO}
        results.append(
            {
                "single_us": round(med["single"], 1),
                "single_b_us": round(med["single_b"], 1),
                "policy_us": round(med["policy"], 1),
                "ratio": round(med["policy"] / med["single"], 3),
                "aa": round(med["single_b"] / med["single"], 3),
            }
        )
        print(
            f"\nround {r + 1}: CPU per call, median: single cap {med['single']:.1f} us, second single cap "
            f"{med['single_b']:.1f} us, 3 windows + rpm + tpm {med['policy']:.1f} us; "
            f"ratio {results[-1]['ratio']:.3f}, A/A {results[-1]['aa']:.3f}"
        )
    benchmark.extra_info.update(rounds=results)
    ratios = [x["ratio"] for x in results]
    aas = [x["aa"] for x in results]
    print(
        f"ratios {', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f}); "
        f"A/A {', '.join(f'{x:.3f}' for x in aas)} (median {statistics.median(aas):.3f})"
    )
