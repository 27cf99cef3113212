"""What key policy costs per model call, in CPU: a key with a single cap against a key with
three spend windows, an rpm and a tpm limit (issue 15's target: within 5% CPU per request).

`pytest benches/bench_policy.py --benchmark-enable -p no:cacheprovider` (timer: process CPU
time, so the fake upstream's work in its own process is not counted, the tokio threads' is):

- ``admit``: the decision alone (rate limits, the hold on every budget, settling both);
- ``call``: a whole non-stream call through the call path with no HTTP objects
  (``Gateway.calls.model``) against the fake upstream: auth, policy, the upstream round
  trip, usage extraction, settlement, the usage event.

Side by side in one run; compare the pairs' means (the ratio is the figure of the issue).
benches/policy_cost.py measures the same over HTTP under wrk load.
"""

from __future__ import annotations

import asyncio
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

SINGLE = {"max_spend_micros": 10**15}
POLICY = {
    "max_spend_micros": 10**15,
    "limits": {"day": 10**14, "week": 10**14, "month": 10**14},
    "rate_limits": {"rpm": 1_000_000, "tpm": 10**12},
}
BODY = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}


@pytest.fixture(scope="module")
def running():
    fake = start_fake()
    tmp = Path(tempfile.mkdtemp(prefix="tollway-bench-policy-"))
    loop = asyncio.new_event_loop()
    gw = Gateway(load_settings(gateway_env(fake, tmp, f"sqlite:///{tmp / 'tollway.db'}")))
    loop.run_until_complete(gw.app.startup())
    admin, _ = gw.store.ensure_admin(ADMIN_SECRET)
    account = admin.account_id if admin is not None else gw.store.first_account()
    keys = {}
    for name, values in (("single", SINGLE), ("policy", POLICY)):
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
    """Whole calls, the two keys alternating call by call (noise on this shared host hits both
    alike): the CPU of each call measured on its own; medians and their ratio in extra_info."""
    gw, loop, keys = running
    cpu: dict[str, list[float]] = {"single": [], "policy": []}

    def pair():
        for name in ("single", "policy") if len(cpu["single"]) % 2 == 0 else ("policy", "single"):
            began = time.process_time()
            done = loop.run_until_complete(gw.calls.model(keys[name].id, BODY, "openai"))
            cpu[name].append(time.process_time() - began)
            assert done.status == 200

    benchmark.pedantic(pair, rounds=600, iterations=1, warmup_rounds=50)
    skip = 50 if len(cpu["single"]) > 100 else 0  # (one round under `make test`, where timing is off)
    single = statistics.median(cpu["single"][skip:]) * 1e6
    policy = statistics.median(cpu["policy"][skip:]) * 1e6
    benchmark.extra_info.update(single_us=round(single, 1), policy_us=round(policy, 1), ratio=round(policy / single, 3))
    print(
        f"\nCPU per call, median: single cap {single:.1f} us, 3 windows + rpm + tpm {policy:.1f} us, ratio {policy / single:.3f}"
    )
