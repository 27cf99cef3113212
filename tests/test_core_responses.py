"""The Rust core on OpenAI Responses streams and bodies: usage, and the final response object."""

from __future__ import annotations

import json

from tests.test_core_client import Done, Upstream, collect, sse_handler, start_stream
from tollway._core import UpstreamClient, extract_usage

START = {"id": "resp_1", "object": "response", "model": "gpt-5", "status": "in_progress", "output": [], "usage": None}
FINAL = {
    **START,
    "status": "completed",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "hi there", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 20},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 80,
    },
}


def events(final: dict | None) -> list[bytes]:
    evs = [
        {"type": "response.created", "sequence_number": 0, "response": START},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "hi",
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 2,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": " there",
        },
    ]
    if final is not None:
        evs.append({"type": "response.completed", "sequence_number": 3, "response": final})
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in evs]


async def test_stream_usage_and_final_response():
    chunks = events(FINAL)
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, kind="openai_responses", on_done=done)
        assert await collect(s) == b"".join(chunks)
        o = await done.wait()
    u = o.usage
    assert (o.status, u.input_tokens, u.cache_read_tokens, u.output_tokens, u.estimated) == ("ok", 30, 20, 30, False)
    assert o.finish_reason == "completed" and o.text == "hi there"
    assert json.loads(o.final_response) == FINAL


async def test_cut_stream_is_estimated_without_final_response():
    async with Upstream(sse_handler(events(None))) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, kind="openai_responses", input_estimate=321, on_done=done)
        await collect(s)
        o = await done.wait()
    assert o.final_response is None
    assert (o.usage.input_tokens, o.usage.output_tokens, o.usage.estimated) == (321, 2, True)


async def test_other_kinds_have_no_final_response():
    chunks = [b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n', b"data: [DONE]\n\n"]
    async with Upstream(sse_handler(chunks)) as up:
        done = Done()
        s = await start_stream(UpstreamClient(), up, on_done=done)
        await collect(s)
        assert (await done.wait()).final_response is None


def test_extract_usage_of_a_response_body():
    u = extract_usage("openai_responses", json.dumps(FINAL).encode())
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.model, u.finish_reason) == (
        30,
        20,
        30,
        "gpt-5",
        "completed",
    )
    assert extract_usage("openai_responses", json.dumps(START).encode()) is None
