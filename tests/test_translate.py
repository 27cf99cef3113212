"""OpenAI Chat Completions <-> Anthropic Messages through the canonical model, checked with both official SDKs."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from tollway.errors import HTTPError, http_error_body
from tollway.providers.anthropic import convert as anthropic_convert
from tollway.providers.anthropic import stream as anthropic_stream
from tollway.providers.formats import StreamTranslator
from tollway.providers.openai_chat import convert as openai_chat_convert
from tollway.providers.openai_chat import request as openai_chat_request
from tollway.providers.openai_chat import stream as openai_chat_stream
from tollway.translate import TranslationError


# ------------------------------------------------------------------ both directions, source -> canonical -> target
def openai_request_to_anthropic(payload: Any, upstream_model: str, default_max_tokens: int) -> dict:
    return anthropic_convert.from_canonical(
        openai_chat_request.to_canonical(payload), upstream_model, default_max_tokens
    )


def anthropic_request_to_openai(payload: Any, upstream_model: str) -> dict:
    return openai_chat_convert.from_canonical(anthropic_convert.to_canonical(payload), upstream_model)


def openai_response_to_anthropic(body: Any, model: str) -> dict:
    return anthropic_convert.response_from_canonical(openai_chat_convert.response_to_canonical(body), model)


def anthropic_response_to_openai(body: Any, model: str) -> dict:
    return openai_chat_convert.response_from_canonical(anthropic_convert.response_to_canonical(body), model)


def openai_error_to_anthropic(status: int, body: bytes) -> bytes:
    return anthropic_convert.error_body(status, openai_chat_convert.error_to_canonical(status, body))


def anthropic_error_to_openai(status: int, body: bytes) -> bytes:
    return openai_chat_convert.error_body(status, anthropic_convert.error_to_canonical(status, body))


def OpenAIToAnthropicStream(model: str, input_tokens_hint: int = 0) -> StreamTranslator:
    return StreamTranslator(openai_chat_stream.StreamDecoder(input_tokens_hint), anthropic_stream.StreamEncoder(model))


def AnthropicToOpenAIStream(model: str, include_usage: bool) -> StreamTranslator:
    return StreamTranslator(anthropic_stream.StreamDecoder(), openai_chat_stream.StreamEncoder(model, include_usage))


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# ------------------------------------------------------------------ SDK plumbing
def _transport(status: int, body: bytes, content_type: str, seen: Optional[list] = None) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(orjson.loads(request.content))
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    return httpx2.MockTransport(handler)


def openai_client(body: bytes, status: int = 200, content_type: str = "text/event-stream", seen=None) -> openai.OpenAI:
    http = httpx2.Client(transport=_transport(status, body, content_type, seen))
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


def anthropic_client(
    body: bytes, status: int = 200, content_type: str = "text/event-stream", seen=None
) -> anthropic.Anthropic:
    http = httpx2.Client(transport=_transport(status, body, content_type, seen))
    return anthropic.Anthropic(api_key="sk-ant-test", base_url="http://gateway.test", http_client=http, max_retries=0)


def sent_by_openai_sdk(**kwargs: Any) -> dict:
    """The JSON body the openai SDK sends for ``chat.completions.create(**kwargs)``."""
    seen: list = []
    reply = orjson.dumps(OPENAI_TEXT_RESPONSE)
    openai_client(reply, content_type="application/json", seen=seen).chat.completions.create(**kwargs)
    return seen[0]


def sent_by_anthropic_sdk(**kwargs: Any) -> dict:
    """The JSON body the anthropic SDK sends for ``messages.create(**kwargs)``."""
    seen: list = []
    reply = orjson.dumps(ANTHROPIC_TOOL_RESPONSE)
    anthropic_client(reply, content_type="application/json", seen=seen).messages.create(**kwargs)
    return seen[0]


# ------------------------------------------------------------------ upstream fixtures
OPENAI_TEXT_RESPONSE = {
    "id": "chatcmpl-Abc123",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 7,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}

OPENAI_TOOL_RESPONSE = {
    "id": "chatcmpl-Tool9",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
}

ANTHROPIC_TOOL_RESPONSE = {
    "id": "msg_01XYZ",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 30,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 200,
        "output_tokens": 40,
    },
}


def oa_chunk(delta: Optional[dict] = None, finish: Optional[str] = None, usage: Optional[dict] = None) -> str:
    """One OpenAI chunk, as the data of an SSE event (include_usage on: usage null until the last)."""
    chunk = {
        "id": "chatcmpl-S1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return orjson.dumps(chunk).decode()


OA_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 12,
    "total_tokens": 52,
    "prompt_tokens_details": {"cached_tokens": 16},
}

OPENAI_TEXT_STREAM = [
    oa_chunk({"role": "assistant", "content": "", "refusal": None}),
    oa_chunk({"content": "Hel"}),
    oa_chunk({"content": "lo, "}),
    oa_chunk({"content": "world."}),
    oa_chunk({}, "stop"),
    oa_chunk(None, usage=OA_USAGE),
    "[DONE]",
]


def _tool_delta(index: int, call_id: Optional[str] = None, name: Optional[str] = None, args: str = "") -> dict:
    call: dict = {"index": index, "function": {"arguments": args}}
    if call_id:
        call["id"] = call_id
        call["type"] = "function"
        call["function"]["name"] = name
    return {"tool_calls": [call]}


OPENAI_PARALLEL_TOOLS_STREAM = [
    oa_chunk({"role": "assistant", "content": None}),
    oa_chunk({"content": "Checking both."}),
    oa_chunk(_tool_delta(0, "call_a", "weather")),
    oa_chunk(_tool_delta(0, args='{"ci')),
    oa_chunk(_tool_delta(0, args='ty": "Paris"}')),
    oa_chunk(_tool_delta(1, "call_b", "weather")),
    oa_chunk(_tool_delta(1, args='{"city": ')),
    oa_chunk(_tool_delta(1, args='"Rome"}')),
    oa_chunk({}, "tool_calls"),
    oa_chunk(None, usage={"prompt_tokens": 80, "completion_tokens": 30, "total_tokens": 110}),
    "[DONE]",
]


def an_event(data: dict) -> tuple[str, str]:
    return data["type"], orjson.dumps(data).decode()


ANTHROPIC_TEXT_STREAM = [
    an_event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_S1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 25,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        }
    ),
    an_event(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        }
    ),
    an_event({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "secret"}}),
    an_event({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
    an_event({"type": "content_block_stop", "index": 0}),
    an_event({"type": "ping"}),
    an_event({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
    an_event({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Bonjour"}}),
    an_event({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " le monde"}}),
    an_event({"type": "content_block_stop", "index": 1}),
    an_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        }
    ),
    an_event({"type": "message_stop"}),
]

ANTHROPIC_PARALLEL_TOOLS_STREAM = [
    ANTHROPIC_TEXT_STREAM[0],
    an_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    an_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "On it."}}),
    an_event({"type": "content_block_stop", "index": 0}),
    an_event(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}},
        }
    ),
    an_event({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
    an_event(
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
        }
    ),
    an_event(
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}
    ),
    an_event({"type": "content_block_stop", "index": 1}),
    an_event(
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}},
        }
    ),
    an_event(
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"tz": "CET"}'},
        }
    ),
    an_event({"type": "content_block_stop", "index": 2}),
    an_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 33},
        }
    ),
    an_event({"type": "message_stop"}),
]


def to_anthropic_sse(chunks: Iterable[str], hint: int = 0, finish: bool = True) -> bytes:
    stream = OpenAIToAnthropicStream("gpt-4o", input_tokens_hint=hint)
    out = b"".join(stream.feed(None, data) for data in chunks)
    return out + (stream.finish() if finish else b"")


def to_openai_sse(events: Iterable[tuple[str, str]], include_usage: bool = True) -> bytes:
    stream = AnthropicToOpenAIStream("claude-sonnet-4-5", include_usage=include_usage)
    return b"".join(stream.feed(event, data) for event, data in events) + stream.finish()


def parse_sse(raw: bytes) -> list[tuple[Optional[str], Any]]:
    """(event, data) pairs; data decoded as JSON except [DONE]."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event, data = None, None
        for line in frame.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data = value if value == "[DONE]" else orjson.loads(value)
        out.append((event, data))
    return out


def anthropic_final(raw: bytes) -> Message:
    client = anthropic_client(raw)
    with client.messages.stream(model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message()


def openai_accumulate(raw: bytes) -> dict:
    """Text, tool calls, finish reason and usage, as an openai SDK user accumulates them."""
    client = openai_client(raw)
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, calls, finish, usage, ids = "", {}, None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"text": text, "calls": calls, "finish": finish, "usage": usage, "ids": ids}


# ================================================================== requests: Anthropic -> OpenAI
def test_anthropic_request_full_conversation_to_openai() -> None:
    payload = sent_by_anthropic_sdk(
        model="gpt-4o",
        max_tokens=512,
        system=[
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "plan", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also, thanks!"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "Sunny"}, {"type": "text", "text": "21C"}],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "city not found", "is_error": True},
                ],
            },
        ],
        tools=[{"name": "weather", "description": "Get weather", "input_schema": SCHEMA}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "high"},
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 40},  # sampling fields this SDK no longer types
    )
    out = anthropic_request_to_openai(payload, "gpt-4o-2024-08-06")
    assert out["model"] == "gpt-4o-2024-08-06"
    assert out["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny\n\n21C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: city not found"},
        {"role": "user", "content": "Also, thanks!"},
    ]
    assert out["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": SCHEMA}}
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["max_completion_tokens"] == 512
    assert out["stop"] == ["END"]
    assert (out["temperature"], out["top_p"], out["user"]) == (0.3, 0.9, "user-42")
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}
    assert "top_k" not in out and "max_tokens" not in out and "stream" not in out and "metadata" not in out


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_anthropic_tool_choice_to_openai(choice: dict, expected: Any) -> None:
    payload = {
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "weather", "input_schema": SCHEMA}],
        "tool_choice": choice,
    }
    out = anthropic_request_to_openai(payload, "gpt-4o")
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out
    assert "description" not in out["tools"][0]["function"]


def test_anthropic_stream_request_asks_openai_for_usage() -> None:
    out = anthropic_request_to_openai(
        {"max_tokens": 5, "stream": True, "system": "S", "messages": [{"role": "user", "content": "hi"}]}, "gpt-4o"
    )
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]


def test_anthropic_tool_result_images_follow_tool_messages() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
    payload = {
        "max_tokens": 5,
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]},
        ],
    }
    out = anthropic_request_to_openai(payload, "gpt-4o")["messages"]
    assert out[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}],
    }
    assert out[1]["role"] == "tool" and out[1]["tool_call_id"] == "t1" and "attachments" in out[1]["content"]
    assert out[2] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}],
    }


@pytest.mark.parametrize(
    "payload, param",
    [
        ([], "body"),
        ({"max_tokens": 5}, "messages"),
        ({"max_tokens": 5, "messages": ["hi"]}, "messages[0]"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"max_tokens": 5, "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "system": [{"type": "image"}], "messages": []}, "system[0].type"),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ],
            },
            "messages[0].content[0].source.type",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": []}]}
                ],
            },
            "messages[0].content[0].input",
        ),
        (
            {"max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "t"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"max_tokens": 5, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0].type",
        ),
        ({"max_tokens": 5, "messages": [], "tools": [{"name": "x"}]}, "tools[0].input_schema"),
        (
            {
                "max_tokens": 5,
                "messages": [],
                "tools": [{"name": "x", "input_schema": {}}],
                "tool_choice": {"type": "maybe"},
            },
            "tool_choice.type",
        ),
        ({"max_tokens": 5, "messages": [], "stop_sequences": "END"}, "stop_sequences"),
        ({"max_tokens": 5, "messages": [], "metadata": {"user_id": 7}}, "metadata.user_id"),
    ],
)
def test_anthropic_request_bad_input_raises(payload: Any, param: str) -> None:
    with pytest.raises(TranslationError) as info:
        anthropic_request_to_openai(payload, "gpt-4o")
    assert info.value.param == param
    assert info.value.message


# ================================================================== requests: OpenAI -> Anthropic
def test_openai_request_full_conversation_to_anthropic() -> None:
    payload = sent_by_openai_sdk(
        model="claude-sonnet-4-5",
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg==", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
                ],
            },
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Rainy"}]},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "user", "content": "Please."},
        ],
        tools=[
            {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": SCHEMA}}
        ],
        tool_choice="required",
        parallel_tool_calls=False,
        max_completion_tokens=300,
        stop="END",
        temperature=1.7,
        top_p=0.5,
        user="user-9",
        stream=False,
        seed=3,
    )
    out = openai_request_to_anthropic(payload, "claude-sonnet-4-5-20250929", default_max_tokens=4096)
    assert out["model"] == "claude-sonnet-4-5-20250929"
    assert out["system"] == "Be brief.\n\nUse metric units."
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "Rainy"},
                {"type": "text", "text": "And tomorrow?"},
                {"type": "text", "text": "Please."},
            ],
        },
    ]
    assert out["tools"] == [{"name": "weather", "description": "Get weather", "input_schema": SCHEMA}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["max_tokens"] == 300
    assert out["stop_sequences"] == ["END"]
    assert out["temperature"] == 1 and out["top_p"] == 0.5
    assert out["metadata"] == {"user_id": "user-9"}
    assert out["stream"] is False
    assert "seed" not in out and "parallel_tool_calls" not in out and "user" not in out


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 77}, {"max_tokens": 77}),
        ({"max_tokens": 77, "max_completion_tokens": 88}, {"max_tokens": 88}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"temperature": -0.5}, {"temperature": 0}),
        ({"temperature": 0.4}, {"temperature": 0.4}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
    ],
)
def test_openai_request_scalars_to_anthropic(extra: dict, expected: dict) -> None:
    out = openai_request_to_anthropic({"messages": [{"role": "user", "content": "hi"}], **extra}, "claude", 4096)
    assert out["messages"] == [{"role": "user", "content": "hi"}]
    for key, value in expected.items():
        assert out[key] == value
    assert "stream_options" not in out


@pytest.mark.parametrize(
    "choice, parallel, expected",
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
        ({"type": "function", "function": {"name": "weather"}}, None, {"type": "tool", "name": "weather"}),
    ],
)
def test_openai_tool_choice_to_anthropic(choice: Any, parallel: Optional[bool], expected: Optional[dict]) -> None:
    payload: dict = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
    }
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    out = openai_request_to_anthropic(payload, "claude", 100)
    assert out.get("tool_choice") == expected
    assert out["tools"] == [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}]


def test_openai_response_format_becomes_a_system_instruction() -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    base = {"messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "hi"}]}
    json_object = openai_request_to_anthropic({**base, "response_format": {"type": "json_object"}}, "c", 10)
    assert json_object["system"].startswith("Sys.\n\n") and "JSON" in json_object["system"]
    schema = openai_request_to_anthropic({**base, "response_format": schema_format}, "c", 10)
    assert orjson.dumps(SCHEMA).decode() in schema["system"]
    text = openai_request_to_anthropic({**base, "response_format": {"type": "text"}}, "c", 10)
    assert text["system"] == "Sys."


def test_openai_request_merges_roles_and_skips_empty_assistant() -> None:
    payload = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "refusal": "I can't."},
            {"role": "assistant", "content": [{"type": "text", "text": "Sorry."}]},
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}}
                ],
            },
        ]
    }
    out = openai_request_to_anthropic(payload, "c", 10)["messages"]
    assert out == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "I can't."}, {"type": "text", "text": "Sorry."}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                    "title": "a.pdf",
                }
            ],
        },
    ]


@pytest.mark.parametrize(
    "payload, param, words",
    [
        ("nope", "body", "object"),
        ({}, "messages", "array"),
        ({"messages": [7]}, "messages[0]", "object"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "role"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role", "legacy"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
            "input_audio",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
            "messages[0].content[0].image_url.url",
            "URL",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0].file",
            "file_data",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "call_9",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "object",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "string"),
        ({"messages": [], "n": 2}, "n", "one choice"),
        ({"messages": [], "logprobs": True}, "logprobs", "logprobs"),
        ({"messages": [], "top_logprobs": 3}, "top_logprobs", "logprobs"),
        ({"messages": [], "audio": {"voice": "alloy", "format": "wav"}}, "audio", "audio"),
        ({"messages": [], "modalities": ["text", "audio"]}, "modalities", "audio"),
        ({"messages": [], "functions": [{"name": "f"}]}, "functions", "legacy"),
        ({"messages": [], "max_completion_tokens": 0}, "max_completion_tokens", "at least"),
        ({"messages": [], "temperature": "hot"}, "temperature", "number"),
        ({"messages": [], "stop": [1]}, "stop[0]", "string"),
        ({"messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type", "custom"),
        (
            {"messages": [], "tools": [{"type": "function", "function": {"name": "x"}}], "tool_choice": "sometimes"},
            "tool_choice",
            "required",
        ),
        ({"messages": [], "response_format": {"type": "yaml"}}, "response_format.type", "json_schema"),
        ({"messages": [], "stream": "yes"}, "stream", "boolean"),
    ],
)
def test_openai_request_bad_input_raises(payload: Any, param: str, words: str) -> None:
    with pytest.raises(TranslationError) as info:
        openai_request_to_anthropic(payload, "claude", 100)
    assert info.value.param == param
    assert words in info.value.message
    # As the call path answers it (proxy.translated.to_provider): a 400 in the caller's shape.
    refused = HTTPError(400, info.value.message, param=info.value.param)
    assert orjson.loads(http_error_body("openai", refused))["error"]["param"] == param
    assert orjson.loads(http_error_body("anthropic", refused))["error"]["type"] == "invalid_request_error"


# ================================================================== responses
def test_openai_text_response_to_anthropic_message() -> None:
    out = openai_response_to_anthropic(OPENAI_TEXT_RESPONSE, "gpt-4o")
    message = Message.model_validate(out)
    assert message.id == "msg_Abc123"
    assert message.model == "gpt-4o"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello there."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 100)
    assert (message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (0, 7)


def test_openai_tool_response_to_anthropic_message() -> None:
    message = Message.model_validate(openai_response_to_anthropic(OPENAI_TOOL_RESPONSE, "gpt-4o"))
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", "call_1", "weather", {"city": "Paris"}),
        ("tool_use", "call_2", "weather", {"city": "Rome"}),
    ]
    assert message.usage.input_tokens == 50 and message.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize(
    "finish, stop",
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_to_stop_reason(finish: str, stop: str) -> None:
    body = orjson.loads(orjson.dumps(OPENAI_TEXT_RESPONSE))
    body["choices"][0]["finish_reason"] = finish
    assert Message.model_validate(openai_response_to_anthropic(body, "m")).stop_reason == stop


def test_openai_refusal_and_bad_arguments_are_kept() -> None:
    body = orjson.loads(orjson.dumps(OPENAI_TOOL_RESPONSE))
    body["choices"][0]["message"]["refusal"] = "I won't."
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    message = Message.model_validate(openai_response_to_anthropic(body, "m"))
    assert message.content[0].type == "text" and message.content[0].text == "I won't."
    assert message.content[1].input == {"_raw_arguments": "{not json"}


def test_openai_response_without_choices_raises() -> None:
    with pytest.raises(TranslationError):
        openai_response_to_anthropic({"id": "x", "choices": []}, "m")
    with pytest.raises(TranslationError):
        anthropic_response_to_openai({"id": "x"}, "m")


def test_anthropic_response_to_openai_completion() -> None:
    completion = ChatCompletion.model_validate(anthropic_response_to_openai(ANTHROPIC_TOOL_RESPONSE, "claude-x"))
    assert completion.id == "chatcmpl-01XYZ"
    assert completion.model == "claude-x"
    assert completion.object == "chat.completion"
    assert abs(completion.created - __import__("time").time()) < 5
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("toolu_1", "weather", {"city": "Paris"})
    ]
    assert completion.usage.prompt_tokens == 235
    assert completion.usage.completion_tokens == 40
    assert completion.usage.total_tokens == 275
    assert completion.usage.prompt_tokens_details.cached_tokens == 200


@pytest.mark.parametrize(
    "stop, finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_to_finish_reason(stop: str, finish: str) -> None:
    body = {**ANTHROPIC_TOOL_RESPONSE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    completion = ChatCompletion.model_validate(anthropic_response_to_openai(body, "c"))
    assert completion.choices[0].finish_reason == finish
    assert completion.choices[0].message.tool_calls is None


def test_anthropic_tool_only_response_has_null_content() -> None:
    body = {**ANTHROPIC_TOOL_RESPONSE, "content": [ANTHROPIC_TOOL_RESPONSE["content"][2]]}
    completion = ChatCompletion.model_validate(anthropic_response_to_openai(body, "c"))
    assert completion.choices[0].message.content is None
    assert completion.choices[0].message.tool_calls[0].id == "toolu_1"


def test_responses_are_parsed_by_the_sdks() -> None:
    anthropic_body = orjson.dumps(openai_response_to_anthropic(OPENAI_TOOL_RESPONSE, "gpt-4o"))
    message = anthropic_client(anthropic_body, content_type="application/json").messages.create(
        model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert [block.input for block in message.content] == [{"city": "Paris"}, {"city": "Rome"}]
    openai_body = orjson.dumps(anthropic_response_to_openai(ANTHROPIC_TOOL_RESPONSE, "claude"))
    completion = openai_client(openai_body, content_type="application/json").chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "weather"


# ================================================================== error bodies
@pytest.mark.parametrize(
    "status, error_type, exception",
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.APIStatusError),
    ],
)
def test_openai_error_to_anthropic(status: int, error_type: str, exception: type) -> None:
    upstream = orjson.dumps({"error": {"message": "Upstream says no", "type": "whatever", "param": None, "code": "x"}})
    body = openai_error_to_anthropic(status, upstream)
    assert orjson.loads(body) == {"type": "error", "error": {"type": error_type, "message": "Upstream says no"}}
    client = anthropic_client(body, status=status, content_type="application/json")
    with pytest.raises(exception) as info:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert "Upstream says no" in str(info.value)


@pytest.mark.parametrize(
    "status, error_type, exception",
    [
        (400, "invalid_request_error", openai.BadRequestError),
        (401, "invalid_request_error", openai.AuthenticationError),
        (403, "permission_error", openai.PermissionDeniedError),
        (404, "invalid_request_error", openai.NotFoundError),
        (429, "rate_limit_error", openai.RateLimitError),
        (500, "server_error", openai.InternalServerError),
        (529, "server_error", openai.InternalServerError),
    ],
)
def test_anthropic_error_to_openai(status: int, error_type: str, exception: type) -> None:
    upstream = orjson.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}, "request_id": "req_1"}
    )
    body = anthropic_error_to_openai(status, upstream)
    assert orjson.loads(body) == {
        "error": {"message": "Busy", "type": error_type, "param": None, "code": "overloaded_error"}
    }
    client = openai_client(body, status=status, content_type="application/json")
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert info.value.code == "overloaded_error" and info.value.message.endswith("Busy")


def test_unexpected_error_bodies_keep_their_text() -> None:
    assert orjson.loads(openai_error_to_anthropic(502, b"<html>Bad Gateway</html>")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "<html>Bad Gateway</html>"},
    }
    assert orjson.loads(anthropic_error_to_openai(418, b'{"detail": "teapot"}'))["error"] == {
        "message": '{"detail": "teapot"}',
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert orjson.loads(anthropic_error_to_openai(503, b""))["error"]["message"] == "upstream HTTP 503"
    assert (
        orjson.loads(
            anthropic_error_to_openai(429, b'{"type":"error","error":{"type":"billing_error","message":"pay"}}')
        )["error"]["type"]
        == "insufficient_quota"
    )


# ================================================================== streams: OpenAI -> Anthropic
def test_openai_text_stream_is_the_anthropic_event_sequence() -> None:
    raw = to_anthropic_sse(OPENAI_TEXT_STREAM, hint=33)
    events = parse_sse(raw)
    assert [event for event, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == event for event, data in events)
    start = events[0][1]["message"]
    assert start["id"] == "msg_S1" and start["model"] == "gpt-4o" and start["content"] == []
    assert start["usage"]["input_tokens"] == 33 and start["usage"]["output_tokens"] == 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 24,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 16,
            "output_tokens": 12,
        },
    }


def test_openai_text_stream_parsed_by_anthropic_sdk() -> None:
    message = anthropic_final(to_anthropic_sse(OPENAI_TEXT_STREAM, hint=33))
    assert message.content[0].text == "Hello, world."
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (
        24,
        12,
        16,
    )


def test_message_delta_waits_for_the_usage_chunk() -> None:
    stream = OpenAIToAnthropicStream("gpt-4o")
    before = b"".join(stream.feed(None, data) for data in OPENAI_TEXT_STREAM[:5])
    assert b"content_block_stop" in before and b"message_delta" not in before
    after_usage = stream.feed(None, OPENAI_TEXT_STREAM[5])
    assert after_usage.startswith(b"event: message_delta") and after_usage.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert stream.feed(None, "[DONE]") == b"" and stream.finish() == b""


def test_openai_stream_without_usage_chunk_completes_at_done() -> None:
    chunks = [c for c in OPENAI_TEXT_STREAM if '"choices":[]' not in c]
    message = anthropic_final(to_anthropic_sse(chunks, hint=9))
    assert message.content[0].text == "Hello, world."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 0)


def test_openai_parallel_tool_stream_parsed_by_anthropic_sdk() -> None:
    raw = to_anthropic_sse(OPENAI_PARALLEL_TOOLS_STREAM)
    events = parse_sse(raw)
    starts = [data for event, data in events if event == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}
    stops = [data["index"] for event, data in events if event == "content_block_stop"]
    assert stops == [0, 1, 2]
    message = anthropic_final(raw)
    assert message.content[0].text == "Checking both."
    assert [(b.id, b.name, b.input) for b in message.content[1:]] == [
        ("call_a", "weather", {"city": "Paris"}),
        ("call_b", "weather", {"city": "Rome"}),
    ]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (80, 30)


def test_openai_cut_stream_makes_anthropic_sdk_raise() -> None:
    raw = to_anthropic_sse(OPENAI_PARALLEL_TOOLS_STREAM[:5])
    assert parse_sse(raw)[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "the upstream stream ended early; the response is incomplete"},
        },
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_final(raw)
    assert "ended early" in str(info.value)


def test_openai_stream_ending_after_finish_but_before_done_is_an_error() -> None:
    raw = to_anthropic_sse(OPENAI_TEXT_STREAM[:5])
    assert parse_sse(raw)[-1][0] == "error"
    assert b"message_stop" not in raw


def test_openai_error_chunk_becomes_anthropic_error_event() -> None:
    error = orjson.dumps(
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    ).decode()
    stream = OpenAIToAnthropicStream("gpt-4o")
    raw = stream.feed(None, OPENAI_TEXT_STREAM[0]) + stream.feed(None, OPENAI_TEXT_STREAM[1]) + stream.feed(None, error)
    raw += stream.feed(None, OPENAI_TEXT_STREAM[2]) + stream.finish()
    assert parse_sse(raw)[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}},
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_final(raw)
    assert "Rate limit reached" in str(info.value)


def test_openai_invalid_chunk_becomes_an_error_event() -> None:
    stream = OpenAIToAnthropicStream("gpt-4o")
    assert parse_sse(stream.feed(None, "{broken"))[0][1]["error"]["type"] == "api_error"
    assert stream.feed(None, OPENAI_TEXT_STREAM[1]) == b""


# ================================================================== streams: Anthropic -> OpenAI
def test_anthropic_text_stream_chunks() -> None:
    raw = to_openai_sse(ANTHROPIC_TEXT_STREAM)
    frames = parse_sse(raw)
    assert frames[-1] == (None, "[DONE]")
    chunks = [data for _, data in frames[:-1]]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-S1", chunks[0]["created"], "claude-sonnet-4-5", "chat.completion.chunk")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Bonjour", " le monde"]
    assert chunks[3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 125,
        "completion_tokens": 9,
        "total_tokens": 134,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
    }
    assert b"secret" not in raw


def test_anthropic_text_stream_parsed_by_openai_sdk() -> None:
    result = openai_accumulate(to_openai_sse(ANTHROPIC_TEXT_STREAM))
    assert result["text"] == "Bonjour le monde"
    assert result["finish"] == "stop"
    assert result["usage"].prompt_tokens == 125 and result["usage"].completion_tokens == 9
    assert result["usage"].prompt_tokens_details.cached_tokens == 100
    assert result["ids"] == {"chatcmpl-S1"}


def test_anthropic_stream_without_include_usage_has_no_usage() -> None:
    chunks = [data for _, data in parse_sse(to_openai_sse(ANTHROPIC_TEXT_STREAM, include_usage=False))[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_anthropic_parallel_tool_stream_parsed_by_openai_sdk() -> None:
    raw = to_openai_sse(ANTHROPIC_PARALLEL_TOOLS_STREAM)
    chunks = [data for _, data in parse_sse(raw)[:-1]]
    first_call = [c for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"]][0]
    assert first_call["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}
    ]
    result = openai_accumulate(raw)
    assert result["text"] == "On it."
    assert result["calls"] == {
        0: {"id": "toolu_a", "name": "weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "toolu_b", "name": "time", "arguments": '{"tz": "CET"}'},
    }
    assert result["finish"] == "tool_calls"
    assert result["usage"].completion_tokens == 33


def test_anthropic_error_event_makes_openai_sdk_raise() -> None:
    error = an_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    raw = to_openai_sse([*ANTHROPIC_TEXT_STREAM[:8], error, ANTHROPIC_TEXT_STREAM[8]])
    assert parse_sse(raw)[-1][1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert b"[DONE]" not in raw
    with pytest.raises(openai.APIError) as info:
        openai_accumulate(raw)
    assert "Overloaded" in info.value.message


def test_anthropic_cut_stream_makes_openai_sdk_raise() -> None:
    raw = to_openai_sse(ANTHROPIC_PARALLEL_TOOLS_STREAM[:7])
    assert parse_sse(raw)[-1][1]["error"]["message"] == "the upstream stream ended early; the response is incomplete"
    with pytest.raises(openai.APIError) as info:
        openai_accumulate(raw)
    assert "ended early" in info.value.message


def test_anthropic_stream_ending_after_message_delta_is_an_error() -> None:
    raw = to_openai_sse(ANTHROPIC_TEXT_STREAM[:-1])
    assert b"[DONE]" not in raw and parse_sse(raw)[-1][1]["error"]["type"] == "server_error"


# ================================================================== round trips
def test_round_trip_request_keeps_the_conversation() -> None:
    anthropic_payload = {
        "max_tokens": 64,
        "system": "Sys.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "tools": [{"name": "weather", "description": "Get weather", "input_schema": SCHEMA}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "stop_sequences": ["END"],
        "temperature": 0.2,
    }
    back = openai_request_to_anthropic(anthropic_request_to_openai(anthropic_payload, "gpt"), "claude", 1)
    assert back == {**anthropic_payload, "model": "claude"}


# ================================================================== robustness
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(
        [
            "",
            "text",
            "user",
            "assistant",
            "tool",
            "system",
            "image_url",
            "image",
            "tool_use",
            "tool_result",
            "function",
            "base64",
            "url",
            "data:image/png;base64,AA",
            "{",
            "{}",
            "tool_use",
            "text_delta",
            "input_json_delta",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "type",
                    "text",
                    "tool_calls",
                    "function",
                    "arguments",
                    "source",
                    "id",
                    "name",
                    "tool_call_id",
                    "tool_use_id",
                    "input",
                    "image_url",
                    "url",
                    "max_tokens",
                    "stop",
                    "tools",
                    "choices",
                    "delta",
                    "index",
                    "content_block",
                    "error",
                    "usage",
                    "message",
                    "finish_reason",
                    "media_type",
                    "data",
                    "partial_json",
                    "is_error",
                    "system",
                    "tool_choice",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(messages=_json, extra=_json)
def test_malformed_requests_raise_only_translation_error(messages: Any, extra: Any) -> None:
    payload = {"messages": messages, **(extra if isinstance(extra, dict) else {})}
    for translate in (
        lambda: openai_request_to_anthropic(payload, "claude", 10),
        lambda: anthropic_request_to_openai(payload, "gpt"),
    ):
        try:
            assert isinstance(translate(), dict)
        except TranslationError as error:
            assert error.message


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(_json, max_size=5))
def test_malformed_stream_events_never_raise(chunks: list) -> None:
    to_anthropic = OpenAIToAnthropicStream("m")
    to_openai = AnthropicToOpenAIStream("m", include_usage=True)
    for chunk in chunks:
        data = orjson.dumps(chunk).decode()
        assert isinstance(to_anthropic.feed(None, data), bytes)
        assert isinstance(to_openai.feed("message_start", data), bytes)
    assert isinstance(to_anthropic.finish(), bytes) and isinstance(to_openai.finish(), bytes)
