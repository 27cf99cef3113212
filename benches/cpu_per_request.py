"""CPU per request of the pass-through and of Tollway under the same wrk load (steadier than req/s on a busy machine).

Usage: .venv/bin/python benches/cpu_per_request.py [rounds] [seconds]

Starts the fake upstream once; each round starts the aiohttp pass-through and then
`tollway serve` (as load.py does), warms up with wrk -c32 for 2 s, then measures the
CPU time (user + system) of the server's process tree over `seconds` of wrk -t2 -c32,
divided by the requests served; and the added p50 at one client against the fake.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
sys.path.insert(0, str(ROOT))

import load as L  # noqa: E402
from tests.fakes.runner import start_fake  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> set[int]:
    out = {pid}
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for kid in kids:
        out |= tree(int(kid))
    return out


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICKS


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 6
    tmp = Path(tempfile.mkdtemp())
    (tmp / "logs").mkdir()
    fake = start_fake(L.HOST, port=0, workers=1)
    ctx = L.Context(fake=fake, logdir=tmp / "logs", tmpdir=tmp)
    try:
        for _ in range(rounds):
            for target in (L.PassthroughTarget, L.TollwayTarget):
                t = target()
                ep = t.start(ctx)
                try:
                    pids = tree(t.server.proc.pid)
                    L.run_wrk(ep, 2, 32, 2)
                    before = cpu_seconds(pids)
                    load = L.run_wrk(ep, 2, 32, seconds)
                    used = cpu_seconds(pids) - before
                    base = L.run_wrk(ctx.baseline, 1, 1, 2)
                    one = L.run_wrk(ep, 1, 1, 3)
                    print(
                        f"{target.key:12s} req/s={load['rps']:7.0f} cpu/req={used / load['requests'] * 1e6:6.1f} us "
                        f"added p50 @1 client={one['p50_ms'] - base['p50_ms']:+.3f} ms load={os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                finally:
                    t.stop()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
