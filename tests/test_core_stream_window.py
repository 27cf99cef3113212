"""The stream's read-ahead window and its client stall timeout (issue 12, item 12)."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_core_client import Done, Upstream, UpstreamClient, openai_events, sse_handler, start_stream

WINDOW = 64 * 1024
PIECE = 4096


def big_stream(pieces: int) -> list[bytes]:
    """An OpenAI stream cut into ``pieces`` chunks of PIECE bytes (plus the rest)."""
    raw = b"".join(openai_events(["word "] * (pieces * PIECE // 120)))
    return [raw[i : i + PIECE] for i in range(0, len(raw), PIECE)]


async def test_a_client_that_takes_nothing_is_cut_after_the_stall_timeout():
    chunks = big_stream(2000)  # ~8 MB
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        client = UpstreamClient(stream_window=WINDOW, client_stall_timeout=0.5)
        s = await start_stream(client, up, on_done=done)
        o = await done.wait(timeout=5)
        assert o.status == "client_stalled"
        # The upstream was read only a window ahead (one chunk may overshoot it).
        assert WINDOW <= o.bytes_forwarded <= WINDOW + 2 * PIECE, o.bytes_forwarded
        assert o.usage.output_tokens > 0 and o.usage.estimated
        with pytest.raises(ConnectionAbortedError):
            await s.__anext__()


async def test_a_client_that_keeps_taking_is_never_cut():
    chunks = big_stream(200)
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        client = UpstreamClient(stream_window=WINDOW, client_stall_timeout=0.5)
        s = await start_stream(client, up, on_done=done)
        got = b""
        async for c in s:
            got += c
            await asyncio.sleep(0.02)  # slower than the upstream, faster than the stall timeout
        assert got == b"".join(chunks)
        o = await done.wait()
        assert o.status == "ok" and o.bytes_forwarded == len(got)


async def test_read_all_is_not_held_back_by_the_window():
    body = b"x" * (4 * WINDOW)
    async with Upstream(sse_handler([body[i : i + PIECE] for i in range(0, len(body), PIECE)], status=500)) as up:
        client = UpstreamClient(stream_window=WINDOW, client_stall_timeout=0.5)
        s = await start_stream(client, up)
        assert s.status == 500
        assert await asyncio.wait_for(s.read_all(), 5) == body


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        UpstreamClient(stream_window=0)
