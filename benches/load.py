#!/usr/bin/env python
"""Load benchmark: the fake upstream direct vs a bare aiohttp pass-through vs Tollway.

One run, one machine, every server a subprocess of this script (always stopped at
the end). For each target:

* non-stream req/s, p50/p99 .......... wrk -t2 -c32 -d10s --latency (benches/wrk/post.lua)
* added p50 at one client ............ wrk -t1 -c1, target p50 minus the p50 of the same run
                                       against the fake made just before it
* streams/s, TTFT p50/p99 ............ 64 keep-alive asyncio clients, 20-token SSE streams,
                                       time from request write to the first content delta
* hold ............................... 5,000 concurrent slow streams (4 chunks 3 s apart),
                                       opened at 1,000/s: completed count and time to first
                                       byte (response head) p50/p99, reported as added vs direct

Usage::

    .venv/bin/python benches/load.py                 # full run (~3-4 min), writes benches/RESULTS.md
    .venv/bin/python benches/load.py --quick         # short smoke run (does not write RESULTS.md)
    .venv/bin/python benches/load.py --targets passthrough --duration 5 --no-hold

Targets live in the ``TARGETS`` registry below; add a row by subclassing ``Target``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import gc
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - the venv has it
    uvloop = None

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
WRK_SCRIPT = BENCHES / "wrk" / "post.lua"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
BACKPRESSURE = 16384
BACKLOG = 4096
CHAT_PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
FAKE_KEY = "sk-fake-openai"
FAKE_ANTHROPIC_KEY = "sk-ant-fake"

# A phase during which processes outside the benchmark used more than this share of the CPU is flagged.
NOISY_PCT = 10.0

# Issue targets.
TARGET_RATIO = 1.2  # Tollway req/s >= 1.2 x pass-through req/s
TARGET_ADDED_P50_MS = 0.5  # at one client
TARGET_ADDED_TTFB_P99_MS = 10.0  # hold test, all streams completed


def _body(content: str, max_tokens: int, stream: bool) -> bytes:
    req = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    if stream:
        req["stream"] = True
    return orjson.dumps(req)


NONSTREAM_BODY = _body("hello there", 16, False)
RESPONSES_PATH = "/v1/responses"
RESPONSES_BODY = orjson.dumps({"model": MODEL, "input": "hello there", "max_output_tokens": 16})


def bin_path(name: str) -> str | None:
    """A console script next to this interpreter (the venv), else on PATH."""
    p = Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (any order)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass
class Endpoint:
    base: str  # http://127.0.0.1:PORT
    auth: str | None  # bearer secret sent by every client, or None

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


def http_post(base: str, path: str, body: bytes, auth: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    host, port = base.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Bearer " + auth
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class ServerProcess:
    """A server subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path, cwd: Path | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        # Its own process group (so killpg stops all of it) but NOT its own session: with
        # the kernel's autogroup scheduling (sched_autogroup_enabled=1 here) every session is
        # a CPU group of its own, which would cap a multi-threaded server near one core while
        # wrk and the fake share another group; measured: Tollway 5.7k req/s in its own
        # session vs 7.5k in the shared one, the single-threaded pass-through ~6.2k in both.
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(cwd or ROOT),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        else:
            # the leader is gone; make sure no worker of its group lingers
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()

    def wait_ready(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if check():
                    return
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s (last error: {last!r}):\n{self.log_tail()}")


@dataclasses.dataclass
class Context:
    fake: object  # tests.fakes.runner.FakeServer
    logdir: Path
    tmpdir: Path

    @property
    def baseline(self) -> Endpoint:
        """The fake upstream hit directly."""
        return Endpoint(self.fake.url.rstrip("/"), FAKE_KEY)


def granian_cmd(target: str, port: int, working_dir: Path) -> list[str]:
    granian = bin_path("granian")
    if granian is None:
        raise RuntimeError("granian not found")
    return [
        granian,
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--backpressure",
        str(BACKPRESSURE),
        "--backlog",
        str(BACKLOG),
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--working-dir",
        str(working_dir),
        target,
    ]


def chat_ok(ep: Endpoint) -> bool:
    status, body = http_post(ep.base, CHAT_PATH, NONSTREAM_BODY, ep.auth)
    if status != 200:
        raise OSError(f"HTTP {status}: {body[:200]!r}")
    return bool(orjson.loads(body).get("choices"))


class Target:
    """One row of the table. ``start`` returns where clients send requests."""

    key = ""
    label = ""
    note = ""
    path = CHAT_PATH  # the route wrk posts to, with ``body``
    body = NONSTREAM_BODY
    non_stream_only = False  # only the wrk rows (no stream and hold tests)

    def unavailable(self) -> str | None:
        """A reason this target cannot run here, or None."""
        return None

    def start(self, ctx: Context) -> Endpoint:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class DirectTarget(Target):
    key = "direct"
    label = "fake upstream, direct"
    note = "the fake upstream (granian, 1 worker) with no proxy in front: the baseline"

    def start(self, ctx: Context) -> Endpoint:
        return ctx.baseline


class ProcessTarget(Target):
    """A target run as a server subprocess."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class PassthroughTarget(ProcessTarget):
    key = "passthrough"
    label = "aiohttp pass-through"
    note = "benches/passthrough.py: one shared aiohttp.ClientSession, no auth/caps/metering, granian 1 worker"

    def start(self, ctx: Context) -> Endpoint:
        port = free_port()
        env = dict(os.environ)
        env["PASSTHROUGH_UPSTREAM"] = ctx.fake.url.rstrip("/")
        env["PASSTHROUGH_UPSTREAM_KEY"] = FAKE_KEY
        self.server = ServerProcess("passthrough", granian_cmd("passthrough:app", port, BENCHES), env, ctx.logdir)
        ep = Endpoint(f"http://{HOST}:{port}", None)
        self.server.wait_ready(lambda: chat_ok(ep))
        return ep


class TollwayTarget(ProcessTarget):
    key = "tollway"
    label = "Tollway"
    note = "tollway serve (granian, 1 worker), per-key auth + spend cap + metering on every request"
    extra_args: tuple[str, ...] = ()  # e.g. ("--server", "robyn") in a subclass for another row

    def _cmd(self) -> list[str] | None:
        script = bin_path("tollway")
        if script:
            return [script]
        return None

    def unavailable(self) -> str | None:
        probe = subprocess.run(
            [sys.executable, "-c", "import tollway.cli, tollway.gateway"],
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            err = (probe.stderr.strip().splitlines() or ["?"])[-1]
            return f"tollway not importable ({err})"
        return None

    def start(self, ctx: Context) -> Endpoint:
        port = free_port()
        admin = self.admin = "tw-admin-" + secrets.token_hex(16)
        data_dir = ctx.tmpdir / "tollway-data"
        data_dir.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            TOLLWAY_DATA_DIR=str(data_dir),
            TOLLWAY_ADMIN_KEY=admin,
            OPENAI_API_KEY=FAKE_KEY,
            OPENAI_BASE_URL=ctx.fake.openai_base_url,
            ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY,
            ANTHROPIC_BASE_URL=ctx.fake.anthropic_base_url,
        )
        base = self._cmd() or [sys.executable, "-m", "tollway"]
        cmd = base + [
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--backpressure",
            str(BACKPRESSURE),
            "--backlog",
            str(BACKLOG),
            *self.extra_args,
        ]
        # --workers is optional in the CLI (one worker is its default): pass it only if known
        usage = subprocess.run(base + ["serve", "--help"], env=env, capture_output=True, text=True, timeout=60)
        if "--workers" in usage.stdout:
            cmd += ["--workers", "1"]
        self.server = ServerProcess("tollway", cmd, env, ctx.logdir)
        base_url = f"http://{HOST}:{port}"
        secret: list[str] = []

        def make_key() -> bool:
            status, body = http_post(
                base_url, "/v1/keys", orjson.dumps({"name": "bench", "max_spend_usd": 1000000}), admin
            )
            if status != 201:
                raise OSError(f"POST /v1/keys -> {status}: {body[:300]!r}")
            secret.append(orjson.loads(body)["secret"])
            return True

        self.server.wait_ready(make_key, timeout=60)
        ep = Endpoint(base_url, secret[0])
        self.server.wait_ready(lambda: chat_ok(ep), timeout=60)
        return ep


class TollwayRobynTarget(TollwayTarget):
    key = "tollway-robyn"
    label = "Tollway (Robyn)"
    note = "tollway serve --server robyn (Robyn 0.88, 1 process), the same gateway on the second adapter"
    extra_args = ("--server", "robyn")


class TollwayResponsesTarget(TollwayTarget):
    key = "tollway-responses"
    label = "Tollway, Responses API"
    note = (
        "tollway serve (granian, 1 worker), POST /v1/responses passed through natively (capped, metered); "
        "non-stream only, its c1 baseline the fake's own /v1/responses"
    )
    path = RESPONSES_PATH
    body = RESPONSES_BODY
    non_stream_only = True


# Rows of the table, in order. A new row = a Target subclass + an entry here.
TARGETS: dict[str, type[Target]] = {
    t.key: t for t in (DirectTarget, PassthroughTarget, TollwayTarget, TollwayRobynTarget, TollwayResponsesTarget)
}
BASELINE = "direct"


# --------------------------------------------------------------------------- wrk


def run_wrk(
    ep: Endpoint, threads: int, conns: int, seconds: float, path: str = CHAT_PATH, body: bytes = NONSTREAM_BODY
) -> dict:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    env = dict(os.environ)
    env["BENCH_BODY"] = body.decode()
    env["BENCH_AUTH"] = ep.auth or ""
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{max(1, int(round(seconds)))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        ep.base + path,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-400:]}")
    d = json.loads(m.group(1))
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", out.stdout, re.M)
    dur_s = d["duration_us"] / 1e6
    errors = d["errors_connect"] + d["errors_read"] + d["errors_write"] + d["errors_status"] + d["errors_timeout"]
    return {
        "rps": float(rps.group(1)) if rps else d["requests"] / dur_s,
        "ok_rps": (d["requests"] - d["errors_status"]) / dur_s,
        "requests": d["requests"],
        "errors": errors,
        "non2xx": d["errors_status"],
        "p50_ms": d["p50_us"] / 1000.0,
        "p90_ms": d["p90_us"] / 1000.0,
        "p99_ms": d["p99_us"] / 1000.0,
        "mean_ms": d["mean_us"] / 1000.0,
        "cmd": " ".join(shlex.quote(c) for c in cmd),
    }


# --------------------------------------------------------------------------- raw asyncio HTTP/1.1 client


def build_request(ep: Endpoint, body: bytes, close: bool = False) -> bytes:
    lines = [
        f"POST {CHAT_PATH} HTTP/1.1",
        f"Host: {HOST}:{ep.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if ep.auth:
        lines.append(f"Authorization: Bearer {ep.auth}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, bool, int | None, bool]:
    """Status, chunked?, content-length, connection-close?"""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    m = _CL.search(head)
    return status, b"transfer-encoding: chunked" in lower, int(m.group(1)) if m else None, b"connection: close" in lower


async def read_body(
    reader: asyncio.StreamReader, chunked: bool, length: int | None, feed: Callable[[bytes], None]
) -> None:
    if chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                # optional trailers, then the empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size + 2)
            feed(data[:-2])
    elif length is not None:
        if length:
            feed(await reader.readexactly(length))
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            feed(data)


class SSEWatch:
    """Finds the first content delta (TTFT) and the final ``data: [DONE]``."""

    __slots__ = ("t0", "ttft", "done", "buf", "tail", "events")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.ttft: float | None = None
        self.done = False
        self.buf = b""
        self.tail = b""
        self.events = 0

    def feed(self, data: bytes) -> None:
        self.events += data.count(b"data:")
        if self.ttft is not None:
            if b"[DONE]" in self.tail + data:
                self.done = True
            self.tail = data[-16:]
            return
        self.buf += data
        while self.ttft is None:
            i = self.buf.find(b"\n\n")
            if i < 0:
                return
            event, self.buf = self.buf[:i], self.buf[i + 2 :]
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    continue
                try:
                    obj = orjson.loads(payload)
                    delta = obj["choices"][0].get("delta") or {}
                except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                if delta.get("content"):
                    self.ttft = time.perf_counter() - self.t0
        rest, self.buf = self.buf, b""
        if b"[DONE]" in rest:
            self.done = True
        self.tail = rest[-16:]


class DoneWatch:
    __slots__ = ("done", "tail", "events")

    def __init__(self) -> None:
        self.done = False
        self.tail = b""
        self.events = 0

    def feed(self, data: bytes) -> None:
        self.events += data.count(b"data:")
        if b"[DONE]" in self.tail + data:
            self.done = True
        self.tail = data[-16:]


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    try:
        await writer.wait_closed()
    except Exception:
        pass


async def stream_test(ep: Endpoint, workers: int, seconds: float, words: int) -> dict:
    """``workers`` keep-alive clients each running streams back to back for ``seconds``."""
    req = build_request(ep, _body(f"hello there #words={words}", max(64, words * 2), True))
    ttfts: list[float] = []
    events: list[int] = []
    errors: collections.Counter[str] = collections.Counter()
    t_start = time.perf_counter()
    deadline = t_start + seconds

    async def worker() -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, ep.port)
                t0 = time.perf_counter()
                writer.write(req)
                status, chunked, length, close = await read_head(reader)
                w = SSEWatch(t0)
                await read_body(reader, chunked, length, w.feed)
                if status == 200 and w.done and w.ttft is not None:
                    ttfts.append(w.ttft)
                    events.append(w.events)
                else:
                    errors[f"HTTP {status}" if status != 200 else "incomplete stream"] += 1
                if close or (length is None and not chunked):
                    await _close(writer)
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                errors[type(exc).__name__] += 1
                await _close(writer)
                writer = None
                await asyncio.sleep(0.01)
        await _close(writer)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + 30)
    for t in pending:
        t.cancel()
    if pending:
        errors["timeout"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - t_start
    return {
        "streams": len(ttfts),
        "streams_per_s": len(ttfts) / elapsed,
        "ttft_p50_ms": (pct(ttfts, 50) or 0) * 1000 if ttfts else None,
        "ttft_p99_ms": (pct(ttfts, 99) or 0) * 1000 if ttfts else None,
        "events_per_stream": sum(events) / len(events) if events else 0,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "elapsed_s": elapsed,
    }


async def hold_test(ep: Endpoint, n: int, rate: float, words: int, chunk_delay_ms: int) -> dict:
    """Open ``n`` slow streams at ``rate``/s (new connection each) and hold them all."""
    req = build_request(ep, _body(f"hello there #words={words} #chunk_delay_ms={chunk_delay_ms}", 16, True), close=True)
    ttfbs: list[float] = []
    durations: list[float] = []  # open to last byte, completed streams only
    errors: collections.Counter[str] = collections.Counter()
    state = {"completed": 0, "open": 0, "peak": 0}

    async def one() -> None:
        writer = None
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(HOST, ep.port)
            state["open"] += 1
            if state["open"] > state["peak"]:
                state["peak"] = state["open"]
            writer.write(req)
            status, chunked, length, _ = await read_head(reader)
            ttfbs.append(time.perf_counter() - t0)
            w = DoneWatch()
            await read_body(reader, chunked, length, w.feed)
            if status == 200 and w.done:
                state["completed"] += 1
                durations.append(time.perf_counter() - t0)
            else:
                errors[f"HTTP {status}" if status != 200 else "incomplete stream"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            errors[type(exc).__name__] += 1
        finally:
            if writer is not None:
                state["open"] -= 1
                writer.close()

    # the fake paces every SSE event: role head, `words` deltas, finish, [DONE] (+ usage)
    stream_s = (words + 4) * chunk_delay_ms / 1000.0
    t_start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    open_s = time.perf_counter() - t_start
    done, pending = await asyncio.wait(tasks, timeout=stream_s * 2 + 30)
    for t in pending:
        t.cancel()
    if pending:
        errors["timeout"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0.2)  # let the closes go out
    return {
        "n": n,
        "completed": state["completed"],
        "peak_open": state["peak"],
        "open_rate": n / open_s if open_s > 0 else float("inf"),
        "ttfb_p50_ms": pct(ttfbs, 50) * 1000 if ttfbs else None,
        "ttfb_p99_ms": pct(ttfbs, 99) * 1000 if ttfbs else None,
        "ttfb_max_ms": max(ttfbs) * 1000 if ttfbs else None,
        "stream_s": stream_s,
        "duration_p50_s": pct(durations, 50) if durations else None,
        "duration_p99_s": pct(durations, 99) if durations else None,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "elapsed_s": time.perf_counter() - t_start,
    }


async def stream_sanity(ep: Endpoint) -> None:
    reader, writer = await asyncio.open_connection(HOST, ep.port)
    try:
        t0 = time.perf_counter()
        writer.write(build_request(ep, _body("hello there #words=5", 64, True), close=True))
        status, chunked, length, _ = await asyncio.wait_for(read_head(reader), 10)
        w = SSEWatch(t0)
        await asyncio.wait_for(read_body(reader, chunked, length, w.feed), 10)
        if status != 200 or not w.done or w.ttft is None:
            raise RuntimeError(
                f"stream sanity check failed: HTTP {status}, done={w.done}, content={w.ttft is not None}"
            )
    finally:
        await _close(writer)


# --------------------------------------------------------------------------- CPU used by others

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (user + nice + system + steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)


def _our_ticks() -> int:
    """CPU ticks of this process and everything it started (servers, wrk), dead children included."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # fields[1] = ppid; [11..14] = utime stime cutime cstime
        stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    me = os.getpid()
    total = 0
    for pid, (_ppid, ticks) in stats.items():
        p, seen = pid, 0
        while p and p != me and seen < 64:
            p = stats.get(p, (0, 0))[0]
            seen += 1
        if p == me:
            total += ticks
    return total


class CpuMeter:
    """Share of the machine's CPU used by processes outside this benchmark between start and stop.

    Anything above a few % (a compiler, a test run) skews every number of the row."""

    def __init__(self) -> None:
        self.t = time.monotonic()
        self.busy = _busy_ticks()
        self.ours = _our_ticks()

    def foreign_pct(self) -> float:
        wall = time.monotonic() - self.t
        if wall <= 0:
            return 0.0
        foreign = (_busy_ticks() - self.busy) - (_our_ticks() - self.ours)
        return max(0.0, foreign / _TICK / (wall * (os.cpu_count() or 1)) * 100)


# --------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class Settings:
    duration: float = 10.0
    c1_duration: float = 5.0
    warmup: float = 2.0
    conns: int = 32
    threads: int = 2
    stream_workers: int = 64
    stream_duration: float = 10.0
    stream_words: int = 20
    hold: bool = True
    hold_streams: int = 5000
    hold_rate: float = 1000.0
    hold_words: int = 4
    hold_delay_ms: int = 3000
    pause: float = 2.0


def run_no_gc(runner: asyncio.Runner, coro):
    """Run a client phase with the cyclic GC off: its pauses would show up as latency."""
    gc.collect()
    gc.disable()
    try:
        return runner.run(coro)
    finally:
        gc.enable()


def measure_target(target: Target, ctx: Context, st: Settings, runner: asyncio.Runner, log) -> dict:
    row: dict = {"key": target.key, "label": target.label, "errors": []}
    reason = target.unavailable()
    if reason:
        row["skipped"] = reason
        log(f"[{target.key}] skipped: {reason}")
        return row
    log(f"[{target.key}] starting")
    try:
        ep = target.start(ctx)
        if not target.non_stream_only:
            runner.run(stream_sanity(ep))
        on = {"path": target.path, "body": target.body}

        row["foreign_cpu"] = {}

        def step(name: str, fn):
            meter = CpuMeter()
            try:
                return fn()
            except Exception as exc:  # keep going: one broken measurement must not lose the row
                row["errors"].append(f"{name}: {exc}")
                log(f"[{target.key}] {name} FAILED: {exc}")
                return None
            finally:
                busy = row["foreign_cpu"][name] = round(meter.foreign_pct(), 1)
                if busy > NOISY_PCT:
                    log(f"[{target.key}]   warning: other processes used {busy:.0f}% of the CPU during {name}")

        if st.warmup > 0:
            step("warmup", lambda: run_wrk(ep, st.threads, st.conns, st.warmup, **on))
        log(f"[{target.key}] wrk -t{st.threads} -c{st.conns} -d{st.duration:g}s")
        row["wrk"] = step("wrk", lambda: run_wrk(ep, st.threads, st.conns, st.duration, **on))
        log(f"[{target.key}]   {_brief(row['wrk'], ('rps', 'p50_ms', 'p99_ms', 'errors'))}")
        if target.key != BASELINE:
            # the same one-client run against the fake right before: "added p50" compares the two
            # under the same machine conditions (an idle vs a busy CPU alone moves p50 by ~0.2 ms)
            log(f"[{target.key}] wrk -t1 -c1 -d{st.c1_duration:g}s against the fake (paired baseline)")
            row["c1_base"] = step("wrk c1 baseline", lambda: run_wrk(ctx.baseline, 1, 1, st.c1_duration, **on))
            log(f"[{target.key}]   {_brief(row['c1_base'], ('rps', 'p50_ms', 'p99_ms', 'errors'))}")
        log(f"[{target.key}] wrk -t1 -c1 -d{st.c1_duration:g}s")
        row["c1"] = step("wrk c1", lambda: run_wrk(ep, 1, 1, st.c1_duration, **on))
        log(f"[{target.key}]   {_brief(row['c1'], ('rps', 'p50_ms', 'p99_ms', 'errors'))}")
        if target.non_stream_only:
            return row
        time.sleep(0.5)
        log(f"[{target.key}] streams: {st.stream_workers} clients x {st.stream_duration:g}s, {st.stream_words} tokens")
        row["streams"] = step(
            "streams",
            lambda: run_no_gc(runner, stream_test(ep, st.stream_workers, st.stream_duration, st.stream_words)),
        )
        log(
            f"[{target.key}]   {_brief(row['streams'], ('streams_per_s', 'ttft_p50_ms', 'ttft_p99_ms', 'events_per_stream', 'errors'))}"
        )
        if st.hold:
            time.sleep(st.pause)
            log(
                f"[{target.key}] hold: {st.hold_streams} streams at {st.hold_rate:g}/s, "
                f"{st.hold_words} chunks {st.hold_delay_ms} ms apart"
            )
            row["hold"] = step(
                "hold",
                lambda: run_no_gc(
                    runner, hold_test(ep, st.hold_streams, st.hold_rate, st.hold_words, st.hold_delay_ms)
                ),
            )
            log(
                f"[{target.key}]   {_brief(row['hold'], ('completed', 'peak_open', 'open_rate', 'ttfb_p50_ms', 'ttfb_p99_ms', 'duration_p50_s', 'duration_p99_s', 'errors'))}"
            )
            if row["hold"] and row["hold"]["error_kinds"]:
                log(f"[{target.key}]   hold errors: {row['hold']['error_kinds']}")
    except Exception as exc:
        row["errors"].append(f"start: {exc}")
        log(f"[{target.key}] FAILED: {exc}")
    finally:
        server = getattr(target, "server", None)
        if server is not None and not server.alive():
            row["errors"].append(f"server died (exit {server.proc.returncode}): {server.log_tail(5)}")
        target.stop()
    return row


def _brief(d: dict | None, keys: tuple[str, ...]) -> str:
    if not d:
        return "-"
    out = []
    for k in keys:
        v = d.get(k)
        out.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(out)


# --------------------------------------------------------------------------- report


def _g(row: dict, section: str, key: str):
    sec = row.get(section)
    return None if not sec else sec.get(key)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} ms"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _signed_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f} ms"


def added_p50_c1(row: dict, base: dict | None) -> float | None:
    """One-client p50 minus the paired run against the fake (else the direct row's)."""
    ref = _g(row, "c1_base", "p50_ms")
    if ref is None and base is not None:
        ref = _g(base, "c1", "p50_ms")
    return _diff(_g(row, "c1", "p50_ms"), ref)


def build_report(rows: list[dict], st: Settings) -> tuple[str, list[tuple[str, str, str]]]:
    base = next((r for r in rows if r["key"] == BASELINE and "skipped" not in r), None)
    by_key = {r["key"]: r for r in rows}
    lines = [
        f"| target | req/s | p50 | p99 | added p50 @1 client | streams/s | TTFT p50 / p99 "
        f"| hold: completed/{st.hold_streams} | added TTFB p50 / p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            reason = r["skipped"] if len(r["skipped"]) <= 100 else r["skipped"][:97] + "..."
            lines.append(f"| {r['label']} | skipped: {reason} | | | | | | | |")
            continue
        rps = _g(r, "wrk", "rps")
        errs = _g(r, "wrk", "errors")
        rps_s = "–" if rps is None else f"{rps:,.0f}" + (f" ({errs} err)" if errs else "")
        is_base = r is base
        added_c1 = added_p50_c1(r, base)
        sps = _g(r, "streams", "streams_per_s")
        serr = _g(r, "streams", "errors")
        sps_s = "–" if sps is None else f"{sps:,.0f}" + (f" ({serr} err)" if serr else "")
        ttft = f"{_ms(_g(r, 'streams', 'ttft_p50_ms'))} / {_ms(_g(r, 'streams', 'ttft_p99_ms'))}"
        if r.get("hold"):
            hold_s = f"{r['hold']['completed']:,}/{r['hold']['n']:,}"
        else:
            hold_s = "–"
        if is_base:
            added_c1_s = f"(p50 {_ms(_g(r, 'c1', 'p50_ms'))})"
            added_ttfb = f"(TTFB {_ms(_g(r, 'hold', 'ttfb_p50_ms'))} / {_ms(_g(r, 'hold', 'ttfb_p99_ms'))})"
        else:
            added_c1_s = _signed_ms(added_c1)
            a50 = _diff(_g(r, "hold", "ttfb_p50_ms"), _g(base, "hold", "ttfb_p50_ms")) if base else None
            a99 = _diff(_g(r, "hold", "ttfb_p99_ms"), _g(base, "hold", "ttfb_p99_ms")) if base else None
            added_ttfb = f"{_signed_ms(a50)} / {_signed_ms(a99)}"
        lines.append(
            f"| {r['label']} | {rps_s} | {_ms(_g(r, 'wrk', 'p50_ms'))} | {_ms(_g(r, 'wrk', 'p99_ms'))} "
            f"| {added_c1_s} | {sps_s} | {ttft} | {hold_s} | {added_ttfb} |"
        )

    # Targets of the issue.
    checks: list[tuple[str, str, str]] = []
    tw, pt = by_key.get("tollway"), by_key.get("passthrough")
    tw_ok = tw is not None and "skipped" not in tw
    ratio = None
    if tw_ok and pt and _g(tw, "wrk", "rps") and _g(pt, "wrk", "rps"):
        ratio = _g(tw, "wrk", "rps") / _g(pt, "wrk", "rps")
        clean = not _g(tw, "wrk", "errors")
        checks.append(
            (
                f"Tollway req/s ≥ {TARGET_RATIO}× pass-through",
                f"{ratio:.2f}× ({_g(tw, 'wrk', 'rps'):,.0f} / {_g(pt, 'wrk', 'rps'):,.0f})"
                + ("" if clean else f", {_g(tw, 'wrk', 'errors')} wrk errors"),
                "PASS" if ratio >= TARGET_RATIO and clean else "FAIL",
            )
        )
    else:
        checks.append((f"Tollway req/s ≥ {TARGET_RATIO}× pass-through", "not measured", "n/a"))
    added = added_p50_c1(tw, base) if tw_ok else None
    if added is not None:
        checks.append(
            (
                f"added p50 @1 client ≤ {TARGET_ADDED_P50_MS} ms",
                f"{added:+.3f} ms",
                "PASS" if added <= TARGET_ADDED_P50_MS and not _g(tw, "c1", "errors") else "FAIL",
            )
        )
    else:
        checks.append((f"added p50 @1 client ≤ {TARGET_ADDED_P50_MS} ms", "not measured", "n/a"))
    if (
        tw_ok
        and base
        and tw.get("hold")
        and base.get("hold")
        and _g(tw, "hold", "ttfb_p99_ms") is not None
        and _g(base, "hold", "ttfb_p99_ms") is not None
    ):
        h = tw["hold"]
        added99 = h["ttfb_p99_ms"] - base["hold"]["ttfb_p99_ms"]
        ok = h["completed"] == h["n"] and added99 <= TARGET_ADDED_TTFB_P99_MS
        checks.append(
            (
                f"all {h['n']:,} streams held, added TTFB p99 ≤ {TARGET_ADDED_TTFB_P99_MS:g} ms",
                f"{h['completed']:,}/{h['n']:,} completed, {added99:+.2f} ms"
                + (" (negative: the direct run was the noisier one)" if added99 < 0 else ""),
                "PASS" if ok else "FAIL",
            )
        )
    else:
        checks.append(
            (
                f"all {st.hold_streams:,} streams held, added TTFB p99 ≤ {TARGET_ADDED_TTFB_P99_MS:g} ms",
                "not measured",
                "n/a",
            )
        )

    out = ["\n".join(lines), ""]
    noisy = noisy_phases(rows)
    if noisy:
        out.append(
            f"**Warning: other processes used more than {NOISY_PCT:g}% of the CPU during: "
            + ", ".join(noisy)
            + ". Those numbers are skewed; rerun on an idle machine.**\n"
        )
    if ratio is not None:
        out.append(f"**Tollway req/s ÷ pass-through req/s = {ratio:.2f}×**\n")
    out.append("| target of the issue | measured | result |\n|---|---|---|")
    out.extend(f"| {a} | {b} | **{c}** |" for a, b, c in checks)
    return "\n".join(out), checks


def _worst(row: dict) -> str:
    fc = {k: v for k, v in (row.get("foreign_cpu") or {}).items() if k != "warmup"}
    if not fc:
        return "–"
    name = max(fc, key=fc.get)
    return f"{fc[name]:.0f}% ({name})"


def noisy_phases(rows: list[dict]) -> list[str]:
    return [
        f"{r['label']} {name} {pct:.0f}%"
        for r in rows
        for name, pct in (r.get("foreign_cpu") or {}).items()
        if pct > NOISY_PCT and name != "warmup"
    ]


def _s(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.1f} s"


def details_table(rows: list[dict]) -> str:
    lines = [
        "| target | wrk p90 | wrk non-2xx | 1-client req/s | 1-client p50 / p99 | paired fake 1-client p50 "
        "| streams done | events/stream | stream errors | hold TTFB p50 / p99 / max | hold peak open "
        "| hold stream duration p50 / p99 (nominal) | hold open rate | hold errors | CPU used by others (worst phase) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            continue
        h = r.get("hold") or {}
        rate = f"{h['open_rate']:,.0f}/s" if h else "–"
        lines.append(
            f"| {r['label']} | {_ms(_g(r, 'wrk', 'p90_ms'))} | {_g(r, 'wrk', 'non2xx') if r.get('wrk') else '–'} "
            f"| {(_g(r, 'c1', 'rps') or 0):,.0f} | {_ms(_g(r, 'c1', 'p50_ms'))} / {_ms(_g(r, 'c1', 'p99_ms'))} "
            f"| {_ms(_g(r, 'c1_base', 'p50_ms'))} "
            f"| {_g(r, 'streams', 'streams') or '–'} | {(_g(r, 'streams', 'events_per_stream') or 0):.1f} "
            f"| {_g(r, 'streams', 'error_kinds') or 0} "
            f"| {_ms(h.get('ttfb_p50_ms'))} / {_ms(h.get('ttfb_p99_ms'))} / {_ms(h.get('ttfb_max_ms'))} "
            f"| {h.get('peak_open', '–')} | {_s(h.get('duration_p50_s'))} / {_s(h.get('duration_p99_s'))} ({_s(h.get('stream_s'))}) "
            f"| {rate} | {h.get('error_kinds') or 0} | {_worst(r)} |"
        )
    return "\n".join(lines)


def machine_facts(loadavg: str = "") -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        wrk_v = wrk_v.split(" Copyright")[0].removeprefix("wrk ")
    except OSError:
        wrk_v = "?"
    try:
        somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    except OSError:
        somaxconn = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": ver("granian"),
        "aiohttp": ver("aiohttp"),
        "uvloop": ver("uvloop"),
        "wrk": wrk_v,
        "somaxconn": somaxconn,
        "client RLIMIT_NOFILE": str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        "load average before the run": loadavg or "?",
    }


def write_results(
    path: Path,
    report: str,
    rows: list[dict],
    st: Settings,
    command: str,
    started: datetime.datetime,
    elapsed: float,
    loadavg: str,
) -> None:
    facts = machine_facts(loadavg)
    notes = [r for r in rows if r.get("errors")]
    text = [
        "# Tollway load benchmark — results",
        "",
        f"Generated by `benches/load.py` on {started.strftime('%Y-%m-%d %H:%M UTC')} ({elapsed:.0f} s run). "
        "Overwritten by every run; see `benches/README.md` for what the numbers mean.",
        "",
        f"Command: `{command}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + ".",
        "Client (wrk or the asyncio client of load.py), the server under test and the fake upstream all run on "
        "this machine and share its cores; the numbers compare the rows of this one run, nothing more.",
        "",
        f"Settings: wrk -t{st.threads} -c{st.conns} -d{st.duration:g}s (after a {st.warmup:g}s warm-up), "
        f"1 client: wrk -t1 -c1 -d{st.c1_duration:g}s, each row paired with the same run against the fake just before; streams: {st.stream_workers} keep-alive clients for "
        f"{st.stream_duration:g}s, {st.stream_words}-token streams; hold: "
        + (
            f"{st.hold_streams:,} streams opened at {st.hold_rate:g}/s, {st.hold_words} chunks "
            f"{st.hold_delay_ms} ms apart, new connection each."
            if st.hold
            else "skipped."
        ),
        f"Servers: granian 1 worker, uvloop, --backpressure {BACKPRESSURE} --backlog {BACKLOG}.",
        "",
        "## Results",
        "",
        report,
        "",
        "## Rows",
        "",
    ]
    text += [f"- **{TARGETS[r['key']].label}** — {TARGETS[r['key']].note}" for r in rows if r["key"] in TARGETS]
    text += ["", "## Details", "", details_table(rows), ""]
    if notes:
        text += ["## Problems during the run", ""]
        for r in notes:
            text += [f"- {r['label']}: {e}" for e in r["errors"]]
        text.append("")
    path.write_text("\n".join(text))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated rows to run, from: {', '.join(TARGETS)} (default: all). "
        f"'{BASELINE}' is always run: the added columns are relative to it",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short smoke run: 3 s wrk, 1,000 held streams 1 s apart; does not write RESULTS.md",
    )
    p.add_argument("--duration", type=float, help="wrk duration in s (default 10)")
    p.add_argument("--c1-duration", type=float, help="one-client wrk duration in s (default 5)")
    p.add_argument("--connections", type=int, help="wrk connections (default 32)")
    p.add_argument("--stream-duration", type=float, help="stream test duration in s (default 10)")
    p.add_argument("--stream-workers", type=int, help="concurrent stream clients (default 64)")
    p.add_argument("--hold-streams", type=int, help="streams in the hold test (default 5000)")
    p.add_argument("--hold-rate", type=float, help="hold-test open rate per s (default 1000)")
    p.add_argument("--hold-delay-ms", type=int, help="delay between the hold test's chunks (default 3000)")
    p.add_argument("--no-hold", action="store_true", help="skip the hold test")
    p.add_argument("--out", type=Path, default=BENCHES / "RESULTS.md", help="results file (default benches/RESULTS.md)")
    p.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    p.add_argument("--json", type=Path, help="also dump the raw measurements as JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target of the issue FAILs")
    p.add_argument("--keep-logs", action="store_true", help="keep the server logs (path printed)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    st = Settings()
    if args.quick:
        st = Settings(
            duration=3, c1_duration=2, warmup=1, stream_duration=3, hold_streams=1000, hold_delay_ms=1000, pause=1
        )
    for arg, field in (
        ("duration", "duration"),
        ("c1_duration", "c1_duration"),
        ("connections", "conns"),
        ("stream_duration", "stream_duration"),
        ("stream_workers", "stream_workers"),
        ("hold_streams", "hold_streams"),
        ("hold_rate", "hold_rate"),
        ("hold_delay_ms", "hold_delay_ms"),
    ):
        v = getattr(args, arg)
        if v is not None:
            setattr(st, field, v)
    if args.no_hold:
        st.hold = False
    return st


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    st = settings_from(args)
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in TARGETS]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if BASELINE not in keys:
        keys.insert(0, BASELINE)
    keys = [k for k in TARGETS if k in keys]  # registry order
    write = not args.no_write and (not args.quick or "--out" in " ".join(sys.argv))

    soft, _ = raise_nofile()
    need = st.hold_streams + 200 if st.hold else 500
    if soft < need:
        print(f"warning: open-file limit {soft} < {need} needed by the hold test", file=sys.stderr)

    started = datetime.datetime.now(datetime.timezone.utc)
    load1, load5, _ = os.getloadavg()
    loadavg = f"{load1:.2f}/{load5:.2f}"
    if load1 > 0.5:
        print(
            f"warning: load average {loadavg} before the run: other work on this machine skews the numbers",
            file=sys.stderr,
        )
    t_run = time.monotonic()
    tmpdir = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    logdir = tmpdir / "logs"
    logdir.mkdir()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - t_run:6.1f}s {msg}", flush=True)

    # SIGTERM -> KeyboardInterrupt, so the finally below stops every server.
    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)

    from tests.fakes.fdtable import reserve_fd_table
    from tests.fakes.runner import start_fake

    reserve_fd_table()  # no fd-table growth stalls in this client while the hold test opens sockets
    fake = None
    rows: list[dict] = []
    targets = [TARGETS[k]() for k in keys]
    loop_factory = uvloop.new_event_loop if uvloop else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            log("starting the fake upstream")
            fake = start_fake(HOST, port=0, workers=1)
            log(f"fake upstream at {fake.url}")
            ctx = Context(fake=fake, logdir=logdir, tmpdir=tmpdir)
            for i, target in enumerate(targets):
                if i:
                    time.sleep(st.pause)
                rows.append(measure_target(target, ctx, st, runner, log))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for target in targets:
            try:
                target.stop()
            except Exception as exc:
                print(f"stopping {target.key}: {exc}", file=sys.stderr)
        if fake is not None:
            fake.stop()
        if args.keep_logs:
            print(f"server logs kept in {logdir}")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)

    elapsed = time.monotonic() - t_run
    report, checks = build_report(rows, st)
    print()
    print(report)
    print()
    print(details_table(rows))
    for r in rows:
        for e in r.get("errors", []):
            print(f"problem: {r['label']}: {e}")
    command = shlex.join(
        [
            os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable,
            "benches/load.py",
            *sys.argv[1:],
        ]
    )
    if write:
        write_results(args.out, report, rows, st, command, started, elapsed, loadavg)
        print(f"\nwrote {args.out}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": dataclasses.asdict(st),
                    "rows": rows,
                    "checks": checks,
                    "command": command,
                    "started": started.isoformat(),
                },
                indent=2,
            )
        )
    print(f"total {elapsed:.0f} s")
    if args.strict and any(c[2] == "FAIL" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
