"""Micro-benchmarks of tollway._core (pytest-benchmark).

Run: .venv/bin/python -m pytest benches/bench_core.py --benchmark-enable -p no:cacheprovider
(pyproject's addopts disable timing by default, so under `make test` each runs once as a smoke test).
The upstream client (sequential and concurrent ``await client.send``, streams) is measured
against the fake upstream by benches/client_micro.py.
"""

from __future__ import annotations

import json

from tollway._core import Ledger, Pricing, StreamScanner, extract_usage


def _dumps(o) -> str:
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def openai_stream(target: int = 20_000, include_usage: bool = True) -> bytes:
    out, i = [], 0
    base = {
        "id": "chatcmpl-AbCdEf123",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0123456789",
    }
    while sum(map(len, out)) < target:
        d = dict(
            base, choices=[{"index": 0, "delta": {"content": f" token{i} é"}, "logprobs": None, "finish_reason": None}]
        )
        if include_usage:
            d["usage"] = None
        out.append(f"data: {_dumps(d)}\n\n".encode())
        i += 1
    d = dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if include_usage:
        d["usage"] = None
    out.append(f"data: {_dumps(d)}\n\n".encode())
    if include_usage:
        u = dict(
            base,
            choices=[],
            usage={
                "prompt_tokens": 1200,
                "completion_tokens": i,
                "total_tokens": 1200 + i,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        )
        out.append(f"data: {_dumps(u)}\n\n".encode())
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def anthropic_stream(target: int = 20_000) -> bytes:
    ev = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 1200, "cache_read_input_tokens": 0, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    i = 0
    while sum(len(_dumps(d)) + len(n) + 16 for n, d in ev) < target:
        ev.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" token{i} é"}},
            )
        )
        i += 1
    ev += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": i},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {n}\ndata: {_dumps(d)}\n\n" for n, d in ev).encode()


def chunked(data: bytes, size: int = 512) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


OPENAI = openai_stream()
ANTHROPIC = anthropic_stream()
OPENAI_CHUNKS = chunked(OPENAI)
ANTHROPIC_CHUNKS = chunked(ANTHROPIC)

BODY = _dumps(
    {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there! " * 80, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1234,
            "completion_tokens": 321,
            "total_tokens": 1555,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_44709d6fcb",
    }
).encode()


def _scan(kind: str, chunks: list[bytes], strip: bool = False) -> StreamScanner:
    sc = StreamScanner(kind, strip)
    for c in chunks:
        sc.feed(c)
    sc.finish()
    return sc


def test_scanner_openai_20kb(benchmark):
    sc = benchmark(_scan, "openai", OPENAI_CHUNKS)
    assert sc.completed and sc.usage.cache_read_tokens == 1024


def test_scanner_openai_20kb_strip(benchmark):
    sc = benchmark(_scan, "openai", OPENAI_CHUNKS, True)
    assert sc.completed and sc.usage is not None


def test_scanner_anthropic_20kb(benchmark):
    sc = benchmark(_scan, "anthropic", ANTHROPIC_CHUNKS)
    assert sc.completed and sc.usage.output_tokens > 100


def test_extract_usage_openai(benchmark):
    u = benchmark(extract_usage, "openai", BODY)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (210, 321, 1024)


def test_ledger_reserve_settle(benchmark):
    led = Ledger()
    led.load("key_1", 0, 10**15)
    p = Pricing(2_500_000_000_000, 10_000_000_000_000)

    def once():
        h = led.reserve("key_1", 100, 5000)
        h.settle(p.cost_micros(1000, 200))

    benchmark(once)
    assert led.snapshot("key_1")[1] == 0
