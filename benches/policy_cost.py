"""What key policy adds per request: a key with three spend windows, an rpm and a tpm limit
against a key with a single cap, on one `tollway serve`, side by side.

Usage: .venv/bin/python benches/policy_cost.py [rounds] [seconds]

Starts the fake upstream and one gateway (granian, 1 worker), mints both keys (limits high
enough never to refuse), then each round runs wrk -t2 -c32 for `seconds` with the plain key
and then with the policy key (order alternating), measuring the CPU time (user + system) of
the server's process tree per request served. Prints both and their ratio per round, and
the median ratio. Issue 15's target: within 5% CPU per request.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
sys.path.insert(0, str(ROOT))

import load as L  # noqa: E402
from cpu_per_request import cpu_seconds, tree  # noqa: E402
from tests.fakes.runner import start_fake  # noqa: E402

PLAIN = {"name": "plain", "max_spend_usd": 1_000_000}
POLICY = {
    "name": "policy",
    "limits": [
        {"period": "total", "max_spend_usd": 1_000_000},
        {"period": "day", "max_spend_usd": 100_000},
        {"period": "week", "max_spend_usd": 200_000},
        {"period": "month", "max_spend_usd": 500_000},
    ],
    "rate_limits": {"rpm": 1_000_000, "tpm": 10**12},
}


def mint(ep: L.Endpoint, admin: str, body: dict) -> str:
    status, out = L.http_post(ep.base, "/v1/keys", orjson.dumps(body), admin)
    if status != 201:
        raise OSError(f"POST /v1/keys -> {status}: {out[:300]!r}")
    return orjson.loads(out)["secret"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 6
    tmp = Path(tempfile.mkdtemp())
    (tmp / "logs").mkdir()
    fake = start_fake(L.HOST, port=0, workers=1)
    ctx = L.Context(fake=fake, logdir=tmp / "logs", tmpdir=tmp)
    target = L.TollwayTarget()
    ep = target.start(ctx)
    try:
        admin = target.admin
        keys = {"single cap": mint(ep, admin, PLAIN), "3 windows + rpm + tpm": mint(ep, admin, POLICY)}
        pids = tree(target.server.proc.pid)
        ratios = []
        for n in range(rounds):
            per_req: dict[str, float] = {}
            for name in list(keys) if n % 2 == 0 else list(keys)[::-1]:
                key_ep = L.Endpoint(ep.base, keys[name])
                L.run_wrk(key_ep, 2, 32, 2)  # warm up
                before = cpu_seconds(pids)
                done = L.run_wrk(key_ep, 2, 32, seconds)
                used = cpu_seconds(pids) - before
                if done["ok_rps"] < done["rps"] * 0.99:
                    raise RuntimeError(f"{name}: requests failed under load: {done}")
                per_req[name] = used / done["requests"] * 1e6
                print(f"round {n + 1} {name:22s} req/s={done['rps']:7.0f} cpu/req={per_req[name]:6.1f} us", flush=True)
            ratio = per_req["3 windows + rpm + tpm"] / per_req["single cap"]
            ratios.append(ratio)
            print(f"round {n + 1} ratio policy/single = {ratio:.3f}", flush=True)
        print(f"median ratio over {rounds} rounds: {statistics.median(ratios):.3f}")
    finally:
        target.stop()
        fake.stop()


if __name__ == "__main__":
    main()
