"""In-process micro benchmark of tollway._core.UpstreamClient against the fake upstream, under uvloop.

Run from the repository root:  PYTHONPATH=. .venv/bin/python benches/client_micro.py [seconds]

Prints: sequential ``await client.send(...)`` (µs per call), 32 concurrent workers
(calls/s), and a sequential streamed request read with ``async for`` (µs per stream).
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop

from tests.fakes.runner import start_fake
from tollway._core import Pricing, UpstreamClient

HEADERS = [("authorization", "Bearer sk-fake-openai"), ("content-type", "application/json")]
BODY = b'{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
STREAM_BODY = b'{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"stream":true}'
PRICING = Pricing(2 * 10**12, 10 * 10**12)


async def main(url: str, secs: float) -> None:
    client = UpstreamClient()
    for _ in range(200):  # warm the pool
        r = await client.send("POST", url, HEADERS, BODY)
        assert r.status == 200, r.body

    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < secs:
        await client.send("POST", url, HEADERS, BODY)
        n += 1
    seq = (time.perf_counter() - t0) / n * 1e6
    print(f"sequential send: {seq:.0f} us/call ({n} calls)")

    count = 0
    stop = time.perf_counter() + secs

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await client.send("POST", url, HEADERS, BODY)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(32)))
    print(f"32 concurrent send: {count / (time.perf_counter() - t0):.0f} calls/s")

    done = []
    n = 0
    chunks = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < secs:
        s = await client.stream(
            "POST",
            url,
            HEADERS,
            STREAM_BODY,
            kind="openai",
            strip_usage_chunk=False,
            pricing=PRICING,
            hold_micros=1 << 62,
            input_estimate=5,
            on_done=done.append,
        )
        async for _ in s:
            chunks += 1
        n += 1
    print(
        f"sequential stream: {(time.perf_counter() - t0) / n * 1e6:.0f} us/stream ({chunks / n:.1f} awaits/stream, {len(done)}/{n} on_done)"
    )


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    f = start_fake()
    try:
        uvloop.run(main(f.openai_base_url + "/chat/completions", secs))
    finally:
        f.stop()
