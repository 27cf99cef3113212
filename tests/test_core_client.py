"""tollway._core.UpstreamClient against a tiny raw HTTP/1.1 upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

import pytest

from tollway._core import (
    Ledger,
    Pricing,
    StreamOutcome,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStream,
    UpstreamTimeout,
)

USD_PER_M = 10**12
PRICING = Pricing(2 * USD_PER_M, 10 * USD_PER_M)  # $2 / $10 per million tokens


# ------------------------------------------------------------------ upstream


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed_at: Optional[float] = None

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        await self.write(b"0\r\n\r\n")

    async def wait_client_close(self, timeout: float = 5.0) -> Optional[float]:
        """Time at which the client closed the connection (reader EOF or reset), None on timeout."""
        try:
            while True:
                got = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not got:
                    break
        except asyncio.TimeoutError:
            return None
        except ConnectionError:
            pass
        self.closed_at = time.monotonic()
        return self.closed_at


Handler = Callable[[Request, Conn], Awaitable[bool]]  # returns False to close the connection


@dataclass
class Upstream:
    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    server: Optional[asyncio.base_events.Server] = None
    conns: list[Conn] = field(default_factory=list)

    async def __aenter__(self) -> "Upstream":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for c in self.conns:
            c.writer.close()

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = Conn(reader, writer)
        self.conns.append(conn)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    if line:
                        k, v = line.split(":", 1)
                        headers.append((k.strip().lower(), v.strip()))
                n = int(dict(headers).get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                req = Request(method, path, headers, body)
                self.requests.append(req)
                if not await self.handler(req, conn):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


def response_head(
    status: int = 200, headers: list[tuple[str, str]] = (), chunked: bool = False, length: Optional[int] = None
) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "X")
    out = [f"HTTP/1.1 {status} {reason}"]
    out += [f"{k}: {v}" for k, v in headers]
    if chunked:
        out.append("transfer-encoding: chunked")
    if length is not None:
        out.append(f"content-length: {length}")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def json_handler(status: int = 200, body: bytes = b'{"ok":true}') -> Handler:
    async def h(req: Request, conn: Conn) -> bool:
        await conn.write(
            response_head(
                status, [("content-type", "application/json"), ("x-multi", "a"), ("x-multi", "b")], length=len(body)
            )
            + body
        )
        return True

    return h


def openai_events(texts: list[str], usage: Optional[tuple[int, int]] = None) -> list[bytes]:
    evs = []
    for t in texts:
        d = {
            "id": "c",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
        }
        if usage:
            d["usage"] = None
        evs.append(d)
    last = {"id": "c", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if usage:
        last["usage"] = None
    evs.append(last)
    if usage:
        evs.append(
            {
                "id": "c",
                "model": "gpt-4o-mini",
                "choices": [],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
            }
        )
    out = [b"data: " + json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n" for e in evs]
    out.append(b"data: [DONE]\n\n")
    return out


def sse_handler(
    chunks: list[bytes],
    delay: float = 0.0,
    stall_after: Optional[int] = None,
    status: int = 200,
    stall_for: float = 10.0,
) -> Handler:
    async def h(req: Request, conn: Conn) -> bool:
        await conn.write(response_head(status, [("content-type", "text/event-stream")], chunked=True))
        for i, c in enumerate(chunks):
            if stall_after is not None and i == stall_after:
                await conn.wait_client_close(stall_for)
                return False
            await conn.chunk(c)
            if delay:
                await asyncio.sleep(delay)
        await conn.end_chunks()
        return True

    return h


class Done:
    """on_done collector usable from the runtime thread."""

    def __init__(self) -> None:
        self.calls: list[StreamOutcome] = []
        self.lock = threading.Lock()

    def __call__(self, outcome: StreamOutcome) -> None:
        with self.lock:
            self.calls.append(outcome)

    async def wait(self, timeout: float = 3.0) -> StreamOutcome:
        deadline = time.monotonic() + timeout
        while not self.calls:
            assert time.monotonic() < deadline, "on_done was not called"
            await asyncio.sleep(0.01)
        return self.calls[0]


def settling(hold, on_done):
    """``on_done`` after settling ``hold`` to the outcome's cost, as the call path does (the
    stream reports its cost by the settlement rule; the caller settles its hold)."""

    def done(outcome):
        if hold is not None:
            hold.settle(outcome.cost_micros)
        on_done(outcome)

    return done


NO_HOLD = 1 << 62  # a stream with no hold: nothing caps an estimate


async def start_stream(
    client: UpstreamClient,
    up: Upstream,
    *,
    kind="openai",
    strip=False,
    hold=None,
    input_estimate=10,
    on_done=None,
    headers=None,
) -> UpstreamStream:
    return await client.stream(
        "POST",
        up.url(),
        headers if headers is not None else [("content-type", "application/json"), ("accept-encoding", "identity")],
        b'{"stream":true}',
        kind=kind,
        strip_usage_chunk=strip,
        pricing=PRICING,
        hold_micros=hold.micros if hold is not None else NO_HOLD,
        input_estimate=input_estimate,
        on_done=settling(hold, on_done or Done()),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ send


async def test_send_roundtrip_and_keepalive():
    async with Upstream(json_handler(body=b'{"hello":"w\xc3\xb6rld"}')) as up:
        client = UpstreamClient()
        hdrs = [("content-type", "application/json"), ("x-dup", "1"), ("x-dup", "2"), ("accept-encoding", "identity")]
        r = await client.send("POST", up.url(), hdrs, b'{"q":1}')
        assert r.status == 200
        assert r.body == b'{"hello":"w\xc3\xb6rld"}'
        assert ("x-multi", "a") in r.headers and ("x-multi", "b") in r.headers
        assert all(k == k.lower() for k, _ in r.headers)
        assert r.latency_ms >= 0
        req = up.requests[0]
        assert req.method == "POST" and req.path == "/v1/chat/completions" and req.body == b'{"q":1}'
        assert [v for k, v in req.headers if k == "x-dup"] == ["1", "2"]
        assert [v for k, v in req.headers if k == "accept-encoding"] == ["identity"]
        # only what we sent, plus host / content-length (and reqwest's `accept: */*` when none is given)
        assert sorted(k for k, _ in req.headers) == [
            "accept",
            "accept-encoding",
            "content-length",
            "content-type",
            "host",
            "x-dup",
            "x-dup",
        ]
        for _ in range(3):
            assert (await client.send("GET", up.url("/x"), [], b"")).status == 200
        assert up.connections == 1  # keep-alive pool


async def test_send_non_2xx_is_a_response():
    async with Upstream(json_handler(429, b'{"error":"slow down"}')) as up:
        r = await UpstreamClient().send("POST", up.url(), [], b"{}")
        assert r.status == 429 and r.body == b'{"error":"slow down"}'


async def test_send_connect_refused():
    client = UpstreamClient(connect_timeout=2.0)
    with pytest.raises(UpstreamConnectError):
        await client.send("GET", f"http://127.0.0.1:{free_port()}/", [], b"")
    with pytest.raises(UpstreamError):
        await client.send("GET", f"http://127.0.0.1:{free_port()}/", [], b"")


async def test_send_and_stream_first_byte_timeout():
    async def silent(req: Request, conn: Conn) -> bool:
        await conn.wait_client_close(10)
        return False

    async with Upstream(silent) as up:
        client = UpstreamClient(first_byte_timeout=0.3)
        t = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await client.send("POST", up.url(), [], b"{}")
        assert time.monotonic() - t < 2
        done = Done()
        with pytest.raises(UpstreamTimeout):
            await start_stream(client, up, on_done=done)
        await asyncio.sleep(0.1)
        assert not done.calls


async def test_send_body_stall_is_timeout():
    async def stall(req: Request, conn: Conn) -> bool:
        await conn.write(response_head(200, chunked=True))
        await conn.chunk(b"partial")
        await conn.wait_client_close(10)
        return False

    async with Upstream(stall) as up:
        with pytest.raises(UpstreamTimeout):
            await UpstreamClient(read_timeout=0.3).send("GET", up.url(), [], b"")


async def test_invalid_arguments():
    client = UpstreamClient()
    with pytest.raises(ValueError):
        client.send("GET", "not a url", [], b"")
    with pytest.raises(ValueError):
        client.send("GET", "http://127.0.0.1/", [("bad header", "x")], b"")


# ------------------------------------------------------------------ stream


async def collect(s: UpstreamStream) -> bytes:
    out = b""
    async for c in s:
        assert isinstance(c, bytes) and c
        out += c
    return out


async def test_stream_ok_settles_and_forwards_exact_bytes():
    texts = ["Hel", "lo ", "héllo 世界 🙂"]
    chunks = openai_events(texts, usage=(120, 30))
    raw = b"".join(chunks)
    # split the bytes awkwardly, including inside multi-byte characters
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    async with Upstream(sse_handler(pieces, delay=0.001)) as up:
        led = Ledger()
        led.load("k", 0, 1_000_000)
        hold = led.reserve("k", 100, 5_000)
        done = Done()
        s = await start_stream(UpstreamClient(), up, hold=hold, on_done=done)
        assert s.status == 200 and ("content-type", "text/event-stream") in s.headers
        assert await collect(s) == raw
        assert s.finished
        assert len(done.calls) == 1  # called before the iteration ends
        o = done.calls[0]
        assert o.status == "ok"
        u = o.usage
        assert (u.input_tokens, u.output_tokens, u.estimated, u.model, u.finish_reason) == (
            120,
            30,
            False,
            "gpt-4o-mini",
            "stop",
        )
        assert o.cost_micros == PRICING.cost_micros(120, 30) == 540
        assert o.text == "".join(texts) and o.finish_reason == "stop" and o.error_json is None
        assert json.loads(o.tool_calls_json) == []
        assert o.bytes_forwarded == len(raw)
        assert o.latency_ms >= o.first_byte_ms >= 0
        assert hold.done
        assert led.snapshot("k") == (540, 0, 1_000_000)
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()
        await asyncio.sleep(0.1)
        assert len(done.calls) == 1


async def test_stream_strip_usage_chunk():
    with_usage = b"".join(openai_events(["a", "b"], usage=(5, 2)))
    without = b"".join(openai_events(["a", "b"]))
    async with Upstream(sse_handler([with_usage[:50], with_usage[50:]])) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, strip=True, on_done=done)
        assert await collect(s) == without
        o = await done.wait()
        assert (o.usage.input_tokens, o.usage.output_tokens, o.usage.estimated) == (5, 2, False)
        assert o.bytes_forwarded == len(without)


async def test_stream_non_2xx_reads_body_and_never_settles():
    body = b'{"error":{"message":"bad request"}}'
    async with Upstream(sse_handler([body], status=400)) as up:
        led = Ledger()
        led.load("k", 0, 1000)
        hold = led.reserve("k", 10, 100)
        done = Done()
        s = await start_stream(UpstreamClient(), up, hold=hold, on_done=done)
        assert s.status == 400
        assert await s.read_all() == body
        await asyncio.sleep(0.2)
        assert not done.calls
        assert not hold.done
        assert led.snapshot("k") == (0, 100, 1000)
        hold.release()


async def test_stream_read_timeout_estimates_usage():
    texts = ["abcd", "efghijkl", "mn"]
    chunks = openai_events(texts)  # no usage reported
    async with Upstream(sse_handler(chunks, stall_after=3)) as up:
        led = Ledger()
        hold = led.reserve("k", 0, 10_000)
        done = Done()
        s = await start_stream(UpstreamClient(read_timeout=0.3), up, hold=hold, input_estimate=1000, on_done=done)
        got = await collect(s)
        assert got == b"".join(chunks[:3])
        o = await done.wait()
        assert o.status == "timeout"
        u = o.usage
        assert u.estimated and u.input_tokens == 1000
        assert u.output_tokens == max(3, math.ceil(len("".join(texts).encode()) / 4))
        assert o.cost_micros == PRICING.cost_micros(1000, u.output_tokens)
        assert led.snapshot("k") == (o.cost_micros, 0, None)
        # the gateway closed the stalled connection
        await asyncio.sleep(0.3)
        assert up.conns[0].closed_at is not None


async def test_an_estimated_stream_is_billed_no_more_than_its_hold():
    """The settlement rule on a stream: an estimate (no usage reported, cut by the read
    timeout) never bills past the hold; reported usage does (test_stream_settles...)."""
    chunks = openai_events(["abcd", "efghijkl", "mn"])
    async with Upstream(sse_handler(chunks, stall_after=3)) as up:
        led = Ledger()
        hold = led.reserve("k", 0, 700)  # less than 1,000 estimated input tokens cost
        done = Done()
        s = await start_stream(UpstreamClient(read_timeout=0.3), up, hold=hold, input_estimate=1000, on_done=done)
        await collect(s)
        o = await done.wait()
        assert o.usage.estimated and PRICING.cost_micros(1000, o.usage.output_tokens) > 700
        assert o.cost_micros == 700 and led.snapshot("k") == (700, 0, None)


async def _close_midstream(use_drop: bool):
    chunks = openai_events([f"tok{i} " for i in range(200)])
    async with Upstream(sse_handler(chunks, delay=0.02)) as up:
        led = Ledger()
        led.load("k", 0, 1_000_000)
        hold = led.reserve("k", 10, 50_000)
        done = Done()
        s = await start_stream(UpstreamClient(), up, hold=hold, input_estimate=50, on_done=done)
        got = b""
        while got.count(b"\n\n") < 3:
            got += await s.__anext__()
        conn = up.conns[0]
        watcher = asyncio.ensure_future(conn.wait_client_close(5))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        if use_drop:
            del s
            gc.collect()
        else:
            s.close()
            assert s.finished or True
            with pytest.raises(StopAsyncIteration):
                await s.__anext__()
        closed_at = await watcher
        assert closed_at is not None and closed_at - t0 < 1.0, "upstream did not see the close within 1 s"
        o = await done.wait()
        assert o.status == "client_closed"
        assert o.usage.estimated and o.usage.input_tokens == 50 and o.usage.output_tokens >= 3
        assert hold.done
        assert led.snapshot("k") == (o.cost_micros, 0, 1_000_000)
        await asyncio.sleep(0.2)
        assert len(done.calls) == 1
        if not use_drop:
            assert s.finished
            s.close()  # idempotent
            await asyncio.sleep(0.05)
            assert len(done.calls) == 1


async def test_stream_close_midstream():
    await _close_midstream(use_drop=False)


async def test_stream_drop_midstream_settles():
    await _close_midstream(use_drop=True)


async def test_stream_anthropic_truncated_is_estimated():
    evs = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "model": "claude-x",
                    "usage": {"input_tokens": 40, "cache_read_input_tokens": 8, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ] + [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word " * 4}},
        )
    ] * 5
    chunks = [f"event: {n}\r\ndata: {json.dumps(d)}\r\n\r\n".encode() for n, d in evs]
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, kind="anthropic", input_estimate=999, on_done=done)
        assert await collect(s) == b"".join(chunks)
        o = await done.wait()
        assert o.status == "ok"  # the upstream ended cleanly, without message_stop
        u = o.usage
        assert (u.input_tokens, u.cache_read_tokens, u.estimated, u.model) == (40, 8, True, "claude-x")
        assert u.output_tokens == max(5, math.ceil(100 / 4))
        assert o.text == "word " * 20


async def test_stream_anthropic_complete():
    evs = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"model": "claude-x", "usage": {"input_tokens": 40, "output_tokens": 1}},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    chunks = [f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in evs]
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, kind="anthropic", on_done=done)
        await collect(s)
        o = await done.wait()
        assert (o.status, o.usage.input_tokens, o.usage.output_tokens, o.usage.estimated, o.finish_reason) == (
            "ok",
            40,
            12,
            False,
            "end_turn",
        )


async def test_on_done_exception_is_ignored(capsys):
    async with Upstream(sse_handler(openai_events(["x"], usage=(1, 1)))) as up:
        led = Ledger()
        hold = led.reserve("k", 0, 100)

        def boom(outcome):
            raise RuntimeError("on_done failed")

        s = await start_stream(UpstreamClient(), up, hold=hold, on_done=boom)
        await collect(s)
        assert hold.done
        assert led.snapshot("k")[1] == 0
    assert "on_done failed" in capsys.readouterr().err


async def test_upstream_body_error_mid_stream():
    async def broken(req: Request, conn: Conn) -> bool:
        await conn.write(response_head(200, chunked=True))
        await conn.chunk(openai_events(["abc"])[0])
        await asyncio.sleep(0.05)
        conn.writer.transport.abort()  # reset mid-body
        return False

    async with Upstream(broken) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, on_done=done)
        await collect(s)
        o = await done.wait()
        assert o.status == "upstream_error"
        assert o.usage.estimated


async def test_many_concurrent_streams():
    chunks = openai_events([f"t{i}" for i in range(20)], usage=(10, 20))
    async with Upstream(sse_handler(chunks, delay=0.002)) as up:
        client = UpstreamClient()
        led = Ledger()
        led.load("k", 0, 10**9)
        dones = [Done() for _ in range(30)]

        async def one(d: Done) -> bytes:
            s = await start_stream(client, up, hold=led.reserve("k", 1, 1000), on_done=d)
            return await collect(s)

        outs = await asyncio.gather(*(one(d) for d in dones))
        assert all(o == b"".join(chunks) for o in outs)
        assert all(len(d.calls) == 1 and d.calls[0].status == "ok" for d in dones)
        assert led.snapshot("k") == (30 * PRICING.cost_micros(10, 20), 0, 10**9)


def test_stream_under_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        async with Upstream(sse_handler(openai_events(["a", "b"], usage=(3, 2)), delay=0.01)) as up:
            done = Done()
            s = await start_stream(UpstreamClient(), up, on_done=done)
            out = await collect(s)
            o = await done.wait()
            r = await UpstreamClient().send("GET", up.url(), [], b"")
            return out, o.status, o.usage.output_tokens, r.status

    out, status, output_tokens, sstatus = uvloop.run(main())
    assert out.endswith(b"data: [DONE]\n\n") and status == "ok" and output_tokens == 2 and sstatus == 200


# ------------------------------------------------------------------ completion hub (loop binding, cancellation)


class ThreadUpstream:
    """One-connection raw HTTP/1.1 upstream on its own thread (answers while the loop is blocked)."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.sent = threading.Event()
        self.closed_at: Optional[float] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            n = int(
                dict(
                    (k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
                ).get(b"content-length", b"0")
            )
            while len(rest) < n:
                rest += conn.recv(65536)
            conn.sendall(self.response)
            self.sent.set()
            conn.settimeout(5)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            self.closed_at = time.monotonic()
        self.sock.close()


async def test_cancelled_send_does_not_break_later_calls():
    async def maybe_silent(req: Request, conn: Conn) -> bool:
        if req.path == "/slow":
            await conn.wait_client_close(10)
            return False
        return await json_handler()(req, conn)

    async with Upstream(maybe_silent) as up:
        client = UpstreamClient()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.send("POST", up.url("/slow"), [], b"{}"), 0.1)
        # the cancellation aborted the requests: the upstream saw the connections close
        deadline = time.monotonic() + 1.0
        while sum(c.closed_at is not None for c in up.conns) < 3:
            assert time.monotonic() < deadline, "cancelled requests were not aborted"
            await asyncio.sleep(0.01)
        assert client._pending == 0
        for _ in range(3):
            r = await client.send("POST", up.url(), [], b"{}")
            assert r.status == 200 and r.body == b'{"ok":true}'
        assert client._pending == 0


async def test_sends_cancelled_at_once_are_aborted_or_never_sent():
    """Calls reach the runtime through a queue: a call cancelled while queued is never
    sent, one cancelled after it was spawned is aborted; either way the upstream is left."""

    slow: list[Conn] = []

    async def maybe_silent(req: Request, conn: Conn) -> bool:
        if req.path == "/slow":
            slow.append(conn)
            await conn.wait_client_close(10)
            return False
        return await json_handler()(req, conn)

    async with Upstream(maybe_silent) as up:
        client = UpstreamClient()
        futs = [client.send("POST", up.url("/slow"), [], b"{}") for _ in range(20)]
        for f in futs:
            f.cancel()
        r = await client.send("POST", up.url(), [], b"{}")
        assert r.status == 200
        await asyncio.sleep(0.1)
        deadline = time.monotonic() + 2.0
        while not all(c.closed_at is not None for c in slow):
            assert time.monotonic() < deadline, "cancelled requests were not aborted"
            await asyncio.sleep(0.01)
        assert all(f.cancelled() for f in futs)
        assert client._pending == 0
        assert (await client.send("POST", up.url(), [], b"{}")).status == 200


async def test_many_concurrent_sends():
    async def echo(req: Request, conn: Conn) -> bool:
        await conn.write(response_head(200, length=len(req.body)) + req.body)
        return True

    async with Upstream(echo) as up:
        client = UpstreamClient()
        rs = await asyncio.gather(*(client.send("POST", up.url(), [], b'{"i":%d}' % i) for i in range(500)))
        assert [r.body for r in rs] == [b'{"i":%d}' % i for i in range(500)]
        assert client._pending == 0


async def test_cancelled_stream_before_headers_leaves_hold_untouched():
    async def silent(req: Request, conn: Conn) -> bool:
        await conn.wait_client_close(10)
        return False

    async with Upstream(silent) as up:
        client = UpstreamClient()
        led = Ledger()
        led.load("k", 0, 1000)
        hold = led.reserve("k", 10, 100)
        done = Done()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(start_stream(client, up, hold=hold, on_done=done), 0.1)
        deadline = time.monotonic() + 1.0
        while not (up.conns and up.conns[0].closed_at is not None):
            assert time.monotonic() < deadline, "the cancelled stream request was not aborted"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not done.calls and not hold.done
        assert led.snapshot("k") == (0, 100, 1000)
        assert client._pending == 0
        hold.release()


async def test_cancelled_stream_after_headers_settles_client_closed():
    chunk = openai_events(["abc"])[0]
    up = ThreadUpstream(
        response_head(200, [("content-type", "text/event-stream")], chunked=True)
        + b"%x\r\n%s\r\n" % (len(chunk), chunk)
    )
    client = UpstreamClient()
    led = Ledger()
    led.load("k", 0, 1_000_000)
    hold = led.reserve("k", 10, 50_000)
    done = Done()
    task = asyncio.ensure_future(
        client.stream(
            "POST",
            up.url(),
            [],
            b"{}",
            kind="openai",
            strip_usage_chunk=False,
            pricing=PRICING,
            hold_micros=hold.micros,
            input_estimate=7,
            on_done=settling(hold, done),
        )
    )
    await asyncio.sleep(0)  # the task now awaits the headers
    assert up.sent.wait(3)
    time.sleep(0.2)  # block the loop: the stream is ready in Rust, its completion queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    o = await done.wait()
    assert o.status == "client_closed" and o.usage.input_tokens == 7
    assert hold.done and led.snapshot("k") == (o.cost_micros, 0, 1_000_000)
    deadline = time.monotonic() + 1.0
    while up.closed_at is None:
        assert time.monotonic() < deadline, "the dropped stream did not close the upstream"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert len(done.calls) == 1 and client._pending == 0


async def test_cancelled_anext_keeps_the_data():
    chunks = openai_events([f"t{i}" for i in range(5)], usage=(1, 5))
    async with Upstream(sse_handler(chunks, delay=0.05)) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, on_done=done)
        got = b""
        timeouts = 0
        while True:
            try:
                got += await asyncio.wait_for(s.__anext__(), 0.01)
            except asyncio.TimeoutError:
                timeouts += 1
            except StopAsyncIteration:
                break
        assert got == b"".join(chunks) and timeouts > 0
        assert (await done.wait()).status == "ok"


async def test_concurrent_anext_is_refused():
    async with Upstream(sse_handler(openai_events(["a", "b", "c"]), delay=0.05)) as up:
        s = await start_stream(UpstreamClient(), up)
        while True:  # until __anext__ has to wait
            first = s.__anext__()
            if isinstance(first, asyncio.Future):
                break
            await first
        with pytest.raises(RuntimeError, match="already waiting"):
            s.__anext__()
        with pytest.raises(RuntimeError, match="already waiting"):
            s.read_all()
        assert await first
        s.close()


def epoll_watches(fd: int) -> Optional[bool]:
    """Whether an epoll instance of this process watches ``fd`` (None where /proc can't tell)."""
    import os

    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as f:
                if any(line.startswith("tfd:") and int(line.split()[1]) == fd for line in f):
                    return True
        except OSError:
            continue
    return False


async def test_close_unregisters_the_reader():
    async with Upstream(json_handler()) as up:
        loop = asyncio.get_running_loop()
        client = UpstreamClient()
        fd = client._wakeup_fd
        assert (await client.send("GET", up.url(), [], b"")).status == 200
        assert epoll_watches(fd) in (True, None)
        client.close()
        client.close()  # idempotent
        assert client.closed
        assert epoll_watches(fd) in (False, None)
        assert loop.remove_reader(fd) is False
        with pytest.raises(RuntimeError, match="closed"):
            client.send("GET", up.url(), [], b"")


async def test_close_with_a_pending_call_and_a_live_stream():
    chunks = openai_events(["x", "y"], usage=(2, 2))
    async with Upstream(sse_handler(chunks, delay=0.05)) as up:
        loop = asyncio.get_running_loop()
        client = UpstreamClient()
        done = Done()
        s = await start_stream(client, up, on_done=done)
        pending = client.send("GET", up.url(), [], b"")
        client.close()
        # the pending call still resolves, the stream still streams
        r = await pending
        assert r.status == 200
        assert await collect(s) == b"".join(chunks)
        assert (await done.wait()).status == "ok"
        await asyncio.sleep(0)
        assert epoll_watches(client._wakeup_fd) in (False, None)
        assert loop.remove_reader(client._wakeup_fd) is False


def test_one_client_two_loops():
    async def use(client: UpstreamClient, up_url: str) -> int:
        return (await client.send("GET", up_url, [], b"")).status

    up = ThreadUpstream(response_head(200, length=2) + b"{}")
    client = UpstreamClient()
    a = asyncio.new_event_loop()
    try:
        assert a.run_until_complete(use(client, up.url())) == 200
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(use(client, up.url()))
    finally:
        a.close()
    # once its loop is closed, the client may serve a new one
    up2 = ThreadUpstream(response_head(200, length=2) + b"{}")
    assert asyncio.run(use(client, up2.url())) == 200
    client.close()


def test_hub_under_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def silent(req: Request, conn: Conn) -> bool:
        await conn.wait_client_close(10)
        return False

    async def main():
        chunks = openai_events([f"t{i}" for i in range(10)], usage=(3, 10))
        async with Upstream(sse_handler(chunks, delay=0.005)) as up:
            client = UpstreamClient()
            rs = await asyncio.gather(*(client.send("GET", up.url(), [], b"") for _ in range(200)))
            async with Upstream(silent) as never:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.send("GET", never.url(), [], b""), 0.05)
            done = Done()
            s = await start_stream(client, up, on_done=done)
            out = await collect(s)
            o = await done.wait()
            fd = client._wakeup_fd
            watched = epoll_watches(fd)
            client.close()
            return [r.status for r in rs], out == b"".join(chunks), o.status, watched, epoll_watches(fd)

    statuses, same, status, before, after = uvloop.run(main())
    assert statuses == [200] * 200 and same and status == "ok"
    assert before in (True, None) and after in (False, None)
