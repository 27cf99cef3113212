"""The chat proxy route's throughput with and without a search indexing backlog draining in the same gateway.

``python benches/search_load.py [--rounds 2] [--duration 10] [--backlog 4000]``

Starts the fake upstream and ``tollway serve`` (granian, 1 worker, search on with its defaults), then alternates,
``--rounds`` times: ``wrk -t2 -c32`` on ``POST /v1/chat/completions`` with nothing queued for search; then
``--backlog`` support-chat messages written straight into the gateway's SQLite database (thread_messages +
search_queue rows, as the threads API stores them; the indexer polls the queue every 0.25 s) and wrk again while
the indexer drains them. After each loaded run ``/v1/search/status`` must still show a backlog (else the run did
not overlap indexing, and is flagged); the rest of the queue is then deleted so the next quiet run is quiet.

Prints req/s, p50/p99, the gateway's CPU per request (its process tree, user + system), messages indexed during
the run, the share of the CPU used by processes outside the benchmark, and the loaded / quiet ratio.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benches.bench_search import fill_backlog  # noqa: E402
from benches.load import (  # noqa: E402
    _TICK,
    BACKLOG,
    BACKPRESSURE,
    FAKE_ANTHROPIC_KEY,
    FAKE_KEY,
    HOST,
    CpuMeter,
    Endpoint,
    ServerProcess,
    chat_ok,
    free_port,
    http_post,
    run_wrk,
)


def _tree_ticks(root: int) -> int:
    """CPU ticks (user + system, reaped children included) of ``root`` and its descendants."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2 :].split()
            stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    total = 0
    for pid, (_ppid, ticks) in stats.items():
        p, hops = pid, 0
        while p and p != root and hops < 64:
            p = stats.get(p, (0, 0))[0]
            hops += 1
        total += ticks if p == root else 0
    return total


def _get(base: str, path: str, secret: str) -> dict:
    import http.client

    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {secret}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {path} -> {resp.status}: {body[:300]!r}")
    return orjson.loads(body)


class Gateway:
    def __init__(self, fake, workdir: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.admin = "tw-admin-" + secrets.token_hex(16)
        self.data_dir = workdir / "tollway-data"
        self.data_dir.mkdir()
        env = dict(os.environ, TOLLWAY_DATA_DIR=str(self.data_dir), TOLLWAY_ADMIN_KEY=self.admin,
                   OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=fake.openai_base_url,
                   ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY, ANTHROPIC_BASE_URL=fake.anthropic_base_url, **extra_env)  # fmt: skip
        cmd = [sys.executable, "-m", "tollway", "serve", "--host", HOST, "--port", str(self.port),
               "--backpressure", str(BACKPRESSURE), "--backlog", str(BACKLOG)]  # fmt: skip
        self.server = ServerProcess("tollway", cmd, env, workdir)
        self.base = f"http://{HOST}:{self.port}"
        secret: list[str] = []

        def make_key() -> bool:
            status, body = http_post(
                self.base, "/v1/keys", orjson.dumps({"name": "b", "max_spend_usd": 1e6}), self.admin
            )
            if status != 201:
                raise OSError(f"POST /v1/keys -> {status}: {body[:300]!r}")
            secret.append(orjson.loads(body)["secret"])
            return True

        self.server.wait_ready(make_key, timeout=60)
        self.ep = Endpoint(self.base, secret[0])
        self.server.wait_ready(lambda: chat_ok(self.ep), timeout=60)

    def status(self) -> dict:
        return _get(self.base, "/v1/search/status", self.admin)

    def wait_backlog(self, at_most: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (left := self.status()["backlog"]) > at_most and time.monotonic() < deadline:
            time.sleep(0.25)
        return left


def measure(gw: Gateway, seconds: float) -> dict:
    meter, ticks, before = CpuMeter(), _tree_ticks(gw.server.proc.pid), gw.status()["indexed_messages"]
    wrk = run_wrk(gw.ep, 2, 32, seconds)
    cpu_s = (_tree_ticks(gw.server.proc.pid) - ticks) / _TICK
    status = gw.status()
    return {"rps": round(wrk["rps"]), "p50_ms": round(wrk["p50_ms"], 2), "p99_ms": round(wrk["p99_ms"], 2),
            "errors": wrk["errors"], "cpu_us_per_req": round(cpu_s / max(1, wrk["requests"]) * 1e6),
            "indexed": status["indexed_messages"] - before, "backlog_after": status["backlog"],
            "others_cpu_pct": round(meter.foreign_pct(), 1)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--backlog", type=int, default=4000)
    ap.add_argument("--threads", default="1", help="TOLLWAY_SEARCH_THREADS of the gateway")
    ap.add_argument("--batch", default="32", help="TOLLWAY_SEARCH_BATCH of the gateway")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not on the PATH")
    from tests.fakes.runner import start_fake
    from tollway.store import Database

    workdir = Path(tempfile.mkdtemp(prefix="tollway-search-load-"))
    fake = gw = None
    rng = np.random.default_rng(7)
    rows: list[tuple[str, dict]] = []
    try:
        fake = start_fake(HOST, port=0, workers=1)
        gw = Gateway(fake, workdir, {"TOLLWAY_SEARCH_THREADS": args.threads, "TOLLWAY_SEARCH_BATCH": args.batch})
        db = Database(f"sqlite:///{gw.data_dir / 'tollway.db'}")
        with db.engine.connect() as conn:  # /v1/search/status counts the admin's account
            account = conn.exec_driver_sql("SELECT account_id FROM api_keys LIMIT 1").scalar_one()
        fill_backlog(db, 64, rng, account=account)  # loads the model and warms the indexer
        if gw.wait_backlog(0, 120) != 0:
            raise RuntimeError("the warm-up backlog did not drain in 120 s")
        run_wrk(gw.ep, 2, 32, 2)  # warm-up
        for r in range(args.rounds):
            rows.append(("quiet", measure(gw, args.duration)))
            print(f"round {r + 1} quiet:  {rows[-1][1]}", flush=True)
            fill_backlog(db, args.backlog, rng, account=account)
            time.sleep(0.5)  # the indexer's next poll
            rows.append(("loaded", measure(gw, args.duration)))
            print(f"round {r + 1} loaded: {rows[-1][1]}", flush=True)
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM search_queue")
            gw.wait_backlog(0, 30)
            time.sleep(1.0)  # the batch in flight
        db.dispose()
    finally:
        if gw is not None:
            gw.server.stop()
        if fake is not None:
            fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    quiet = [m for kind, m in rows if kind == "quiet"]
    loaded = [m for kind, m in rows if kind == "loaded"]
    overlapped = all(m["backlog_after"] > 0 for m in loaded)
    ratio = sum(m["rps"] for m in loaded) / sum(m["rps"] for m in quiet)
    cpu_q = sum(m["cpu_us_per_req"] for m in quiet) / len(quiet)
    cpu_l = sum(m["cpu_us_per_req"] for m in loaded) / len(loaded)
    print(f"\nloaded / quiet req/s: {ratio:.3f} (target >= 0.90){'' if overlapped else ' — a backlog ran dry'}")
    print(f"gateway CPU per request: quiet {cpu_q:.0f} us, loaded {cpu_l:.0f} us (includes the indexer's work)")
    print(f"indexed during loaded runs: {[m['indexed'] for m in loaded]} messages in {args.duration:g} s each")
    return 0 if ratio >= 0.9 and overlapped else 1


if __name__ == "__main__":
    sys.exit(main())
