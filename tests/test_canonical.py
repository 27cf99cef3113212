"""The canonical model and the Responses converters, checked with the official openai SDK.

Requests of every format to canonical and back (every block type), stop reasons
and usage, and canonical responses and streams as Responses objects and typed
SSE events parsed by ``openai`` (``responses.create`` and ``responses.stream``
over an httpx MockTransport).
"""

from __future__ import annotations

from typing import Any, Iterable

import httpx2
import openai
import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response as OpenAIResponse
from openai.types.responses import ResponseStreamEvent

from tollway.providers import canonical as c
from tollway.providers.anthropic import convert as anthropic_convert
from tollway.providers.anthropic import stream as anthropic_stream
from tollway.providers.formats import FORMATS, StreamTranslator
from tollway.providers.openai_chat import convert as openai_chat_convert
from tollway.providers.openai_chat import request as openai_chat_request
from tollway.providers.openai_chat import stream as openai_chat_stream
from tollway.providers.openai_responses import convert as responses
from tollway.providers.openai_responses import upstream as responses_upstream
from tollway.providers.openai_responses.stream import StreamEncoder
from tollway.translate import TranslationError
from tollway.translate.sse import anthropic_event, openai_data

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}}
DOCUMENT = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
    "title": "a.pdf",
}


def openai_client(status: int, body: bytes, content_type: str, seen: list | None = None) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(orjson.loads(request.content))
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


def sent_by_sdk(**kwargs: Any) -> dict:
    """The body the openai SDK sends for ``responses.create(**kwargs)``."""
    seen: list = []
    reply = responses.response_object({}, "resp_x", "m", [], "completed", c.Usage())
    openai_client(200, orjson.dumps(reply), "application/json", seen).responses.create(**kwargs)
    return seen[0]


def encode(events: Iterable[c.Event], request: dict | None = None) -> bytes:
    encoder = StreamEncoder(request or {"model": "m"}, "resp_abc", "m")
    return b"".join(encoder.encode(event) for event in events)


_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def strictly_valid(raw: bytes) -> list[str]:
    """Each SSE event validated strictly against the SDK's event types (every required field);
    their ``event:`` names."""
    names = []
    for frame in raw.decode().split("\n\n"):
        if frame:
            head, data = frame.split("\n", 1)
            event = _EVENT.validate_python(orjson.loads(data.removeprefix("data: ")))
            assert head == f"event: {event.type}"
            names.append(event.type)
    return names


def anthropic_events(*payloads: dict) -> list[c.Event]:
    decoder = anthropic_stream.StreamDecoder()
    out: list[c.Event] = []
    for payload in payloads:
        out.extend(decoder.feed(payload["type"], orjson.dumps(payload).decode()))
    return out + decoder.finish()


# ================================================================== requests
def test_responses_request_every_item_to_canonical() -> None:
    body = sent_by_sdk(
        model="m",
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Use metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://example.com/a.jpg", "detail": "auto"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        tools=[
            {"type": "function", "name": "weather", "description": "Get weather", "parameters": SCHEMA, "strict": True}
        ],
        tool_choice={"type": "function", "name": "weather"},
        parallel_tool_calls=False,
        max_output_tokens=300,
        temperature=0.2,
        top_p=0.9,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "city", "schema": SCHEMA, "strict": True}},
        metadata={"team": "a"},
        safety_identifier="user-9",
    )
    request = responses.to_canonical(body)
    assert request.system == "Be brief.\n\nUse metric units."
    assert [(m.role, m.content) for m in request.messages] == [
        (
            "user",
            [
                {"type": "text", "text": "What is this?"},
                IMAGE,
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                DOCUMENT,
            ],
        ),
        ("assistant", [{"type": "text", "text": "Checking."}]),
        ("assistant", [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]),
        ("user", [{"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"}]),
    ]
    assert request.tools == [c.Tool("weather", SCHEMA, "Get weather", True)]
    assert request.tool_choice == c.ToolChoice("tool", "weather", disable_parallel=True)
    assert (request.max_tokens, request.temperature, request.top_p) == (300, 0.2, 0.9)
    assert request.response_format == c.ResponseFormat("json_schema", SCHEMA, "city", True)
    assert (request.reasoning_effort, request.user, request.metadata) == ("low", "user-9", {"team": "a"})
    # ...and on to Anthropic: the turns merged, the format an instruction.
    out = anthropic_convert.from_canonical(request, "claude", 1024)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    assert (
        out["system"].startswith("Be brief.\n\nUse metric units.\n\n")
        and orjson.dumps(SCHEMA).decode() in out["system"]
    )
    # ...and to Chat: the schema is a response_format, the tool result a tool message.
    chat = openai_chat_convert.from_canonical(request, "gpt")
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
    }
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "assistant", "tool"]
    assert (
        chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
        and chat["parallel_tool_calls"] is False
    )


def test_a_string_input_is_one_user_message() -> None:
    request = responses.to_canonical({"model": "m", "input": "hi", "stream": True})
    assert request.messages == [c.Message("user", [{"type": "text", "text": "hi"}])] and request.stream is True


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{x"}]},
            "input[0].arguments",
        ),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        (
            {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "sometimes"},
            "tool_choice",
        ),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_responses_requests_raise(body: dict, param: str) -> None:
    with pytest.raises(TranslationError) as info:
        responses.to_canonical(body)
    assert info.value.param == param and info.value.message


def test_chat_and_messages_round_trip_through_canonical() -> None:
    messages_body = {
        "model": "claude",
        "max_tokens": 100,
        "system": "S",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE, DOCUMENT]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny", "is_error": False}],
            },
        ],
        "stream": True,
    }
    request = FORMATS["anthropic"].request_to_canonical(messages_body)
    assert anthropic_convert.from_canonical(request, "claude", 1) == messages_body  # Messages -> canonical -> Messages
    chat = openai_chat_convert.from_canonical(request, "gpt")
    assert chat["messages"][2]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"Paris"}'}
    assert chat["stream_options"] == {"include_usage": True}
    back = openai_chat_request.to_canonical(chat)  # and back from Chat: the thinking block is gone
    assert back.messages[1].content == [
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
    ]
    assert back.messages[2].content == [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}]
    assert back.messages[0].content[1:] == [IMAGE, DOCUMENT] and back.system == "S" and back.stream is True


# ================================================================== responses, stop reasons, usage
@pytest.mark.parametrize(
    "stop, status, reason",
    [
        ("end_turn", "completed", None),
        ("tool_use", "completed", None),
        ("stop_sequence", "completed", None),
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("refusal", "incomplete", "content_filter"),
    ],
)
def test_stop_reasons_as_response_status(stop: str, status: str, reason: Any) -> None:
    answer = c.Response("msg_1", "claude", [{"type": "text", "text": "Hi"}], stop, usage=c.Usage(10, 5, 100, 7, 2))
    body = responses.response_from_canonical(answer, {"model": "m", "store": False}, "resp_1", "m")
    OpenAIResponse.model_validate(body)  # strictly: every required field
    parsed = openai_client(200, orjson.dumps(body), "application/json").responses.create(model="m", input="x")
    assert (
        parsed.status == status and (parsed.incomplete_details.reason if parsed.incomplete_details else None) == reason
    )
    assert parsed.output_text == "Hi" and parsed.store is False
    usage = parsed.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (117, 100)
    assert (usage.output_tokens, usage.output_tokens_details.reasoning_tokens, usage.total_tokens) == (5, 2, 122)


@pytest.mark.parametrize(
    "finish, stop",
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_chat_finish_reasons_and_usage_to_canonical(finish: Any, stop: str) -> None:
    body = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    answer = openai_chat_convert.response_to_canonical(body)
    assert answer.stop_reason == stop and answer.usage == c.Usage(10, 9, 20, 0, 4)
    assert openai_chat_convert.response_from_canonical(answer, "m")["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 4
    }


def test_every_output_block_as_a_response_item() -> None:
    answer = anthropic_convert.response_to_canonical(
        {
            "id": "msg_1",
            "model": "claude",
            "stop_reason": "tool_use",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "s"},
                {"type": "text", "text": "Checking "},
                {"type": "text", "text": "now."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
            ],
            "usage": {"input_tokens": 5, "output_tokens": 3},
        }
    )
    body = responses.response_from_canonical(answer, {"model": "m", "tools": []}, "resp_1", "m")
    parsed = OpenAIResponse.model_validate(body)
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.output[0].content[0].text == "Let me think."
    assert parsed.output_text == "Checking now."
    call = parsed.output[2]
    assert (call.call_id, call.name, orjson.loads(call.arguments)) == ("toolu_1", "weather", {"city": "Paris"})
    assert call.id.startswith("fc_") and parsed.output[1].id.startswith("msg_")
    # Stored output back to blocks, for the next turn's history (reasoning stays out).
    assert responses.output_to_blocks(body["output"]) == [
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ]


# ================================================================== streams
TEXT_AND_TOOL = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}},
    {"type": "message_stop"},
]


def test_responses_stream_through_the_sdk() -> None:
    raw = encode(anthropic_events(*TEXT_AND_TOOL))
    assert len(strictly_valid(raw)) > 10
    client = openai_client(200, raw, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.reasoning_text.delta",
    ):
        assert expected in kinds
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Hel", "lo"]
    assert final.id == "resp_abc" and final.status == "completed" and final.output_text == "Hello"
    assert events[0].response.created_at == final.created_at and events[0].response.status == "in_progress"
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert orjson.loads(final.output[2].arguments) == {"city": "Paris"} and final.output[2].call_id == "toolu_1"
    assert (final.usage.input_tokens, final.usage.input_tokens_details.cached_tokens, final.usage.output_tokens) == (
        14,
        4,
        12,
    )


def test_chat_stream_to_responses_through_the_sdk() -> None:
    chunks = [
        {
            "id": "chatcmpl-1",
            "model": "gpt",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi "}}],
        },
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "there"}}]},
        {
            "id": "chatcmpl-1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "weather", "arguments": '{"ci'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "chatcmpl-1",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Rome"}'}}]}}
            ],
        },
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 5}},
    ]
    decoder = openai_chat_stream.StreamDecoder()
    events = [e for chunk in chunks for e in decoder.feed(None, orjson.dumps(chunk).decode())] + decoder.feed(
        None, "[DONE]"
    )
    with openai_client(200, encode(events), "text/event-stream").responses.stream(model="m", input="x") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hi there" and final.output[1].name == "weather"
    assert orjson.loads(final.output[1].arguments) == {"city": "Rome"} and final.usage.total_tokens == 13


def test_a_cut_stream_is_an_error_event_then_failed() -> None:
    raw = encode(anthropic_events(*TEXT_AND_TOOL[:6]))  # no message_stop: the decoder reports the early end
    assert strictly_valid(raw)[-2:] == ["error", "response.failed"]
    with openai_client(200, raw, "text/event-stream").responses.stream(model="m", input="x") as stream:
        events = list(stream)
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert "ended early" in events[-2].message and events[-1].response.status == "failed"
    assert events[-1].response.error.code == "server_error"


def test_a_max_tokens_stream_is_incomplete() -> None:
    events = anthropic_events(
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "w0"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    )
    encoder = StreamEncoder({"model": "m"}, "resp_1", "m")
    raw = b"".join(encoder.encode(e) for e in events)
    assert encoder.final["status"] == "incomplete" and encoder.final["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert strictly_valid(raw)[-1] == "response.incomplete"
    with openai_client(200, raw, "text/event-stream").responses.stream(model="m", input="x") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"


def test_stream_translator_between_chat_and_messages() -> None:
    messages_sse = StreamTranslator(openai_chat_stream.StreamDecoder(), anthropic_stream.StreamEncoder("gpt-4o"))
    out = messages_sse.feed(
        None,
        orjson.dumps(
            {"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
        ).decode(),
    )
    out += messages_sse.feed(None, "[DONE]")
    assert (
        out.startswith(b"event: message_start")
        and b'"id":"msg_9"' in out
        and out.endswith(anthropic_event({"type": "message_stop"}))
    )
    chat_sse = StreamTranslator(
        anthropic_stream.StreamDecoder(), openai_chat_stream.StreamEncoder("claude", include_usage=False)
    )
    out = b"".join(chat_sse.feed(p["type"], orjson.dumps(p).decode()) for p in TEXT_AND_TOOL)
    assert b'"content":"Hel"' in out and b"Hmm." not in out and out.endswith(b"data: [DONE]\n\n")
    assert openai_data({"x": 1}) == b'data: {"x":1}\n\n'


# ================================================================== malformed input
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(
        [
            "",
            "x",
            "user",
            "assistant",
            "developer",
            "system",
            "message",
            "input_text",
            "output_text",
            "input_image",
            "input_file",
            "function_call",
            "function_call_output",
            "reasoning",
            "function",
            "json_schema",
            "{}",
            "{",
            "data:image/png;base64,AA",
            "https://a/b.png",
            "auto",
            "required",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "role",
                    "content",
                    "text",
                    "image_url",
                    "file_data",
                    "call_id",
                    "name",
                    "arguments",
                    "output",
                    "tools",
                    "tool_choice",
                    "parameters",
                    "format",
                    "schema",
                    "effort",
                    "instructions",
                    "max_output_tokens",
                    "stream",
                    "text",
                    "reasoning",
                    "metadata",
                    "input",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, extra=_json)
def test_malformed_responses_requests_raise_only_translation_error(value: Any, extra: Any) -> None:
    payload = {"model": "m", "input": value, **(extra if isinstance(extra, dict) else {})}
    try:
        request = responses.to_canonical(payload)
    except TranslationError as error:
        assert error.message
        return
    for target in (
        lambda: anthropic_convert.from_canonical(request, "claude", 10),
        lambda: openai_chat_convert.from_canonical(request, "gpt"),
    ):
        try:
            assert isinstance(target(), dict)
        except TranslationError as error:
            assert error.message


# ================================================================== Responses as the target
def test_canonical_to_a_responses_request_and_back() -> None:
    request = anthropic_convert.to_canonical(
        {
            "model": "claude",
            "max_tokens": 64,
            "system": "S",
            "temperature": 0.5,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE, DOCUMENT]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                        {"type": "text", "text": "ok?"},
                    ],
                },
            ],
            "tools": [{"name": "weather", "description": "d", "input_schema": SCHEMA}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
            "stream": True,
        }
    )
    body = responses_upstream.from_canonical(request, "gpt-5")
    assert body["store"] is False and body["instructions"] == "S" and body["max_output_tokens"] == 64
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False and body["stream"] is True
    assert body["text"] == {"format": {"type": "json_schema", "name": "output", "schema": SCHEMA}}
    assert [item.get("type") for item in body["input"]] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert (
        sent_by_sdk(**{k: v for k, v in body.items() if k != "stream"})["input"] == body["input"]
    )  # the SDK takes it as is
    back = responses.to_canonical(body)
    assert c.merge_messages(back.messages) == c.merge_messages(
        [c.Message(m.role, [b for b in m.content if b["type"] != "thinking"]) for m in request.messages]
    )
    assert back.tools == [c.Tool("weather", SCHEMA, "d", False)]
    with pytest.raises(TranslationError) as info:
        responses_upstream.from_canonical(
            c.Request([c.Message("user", [{"type": "text", "text": "x"}])], stop=["END"]), "m"
        )
    assert info.value.param == "stop"


@pytest.mark.parametrize("stop", ["end_turn", "tool_use", "max_tokens", "refusal"])
def test_a_responses_response_to_canonical(stop: str) -> None:
    content = [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}]
    if stop in ("end_turn", "max_tokens", "refusal"):
        content = content[:1]
    answer = c.Response("resp_1", "gpt", content, stop, usage=c.Usage(3, 4, 5, 6, 2))
    body = responses.response_from_canonical(answer, {}, "resp_1", "gpt")
    back = responses_upstream.response_to_canonical(body)
    assert (back.content, back.stop_reason, back.usage) == (content, stop, answer.usage)


def test_a_responses_stream_to_chat_through_the_sdk() -> None:
    from tollway._core import SseDecoder

    raw = encode(anthropic_events(*TEXT_AND_TOOL))
    translator = StreamTranslator(
        responses_upstream.StreamDecoder(), openai_chat_stream.StreamEncoder("m", include_usage=True)
    )
    chat_sse = b"".join(translator.feed(event, data) for event, data in SseDecoder().feed(raw)) + translator.finish()
    client = openai_client(200, chat_sse, "text/event-stream")
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Hello" and choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "weather" and choice.message.tool_calls[0].id == "toolu_1"
    assert orjson.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (14, 12)
    cut = StreamTranslator(responses_upstream.StreamDecoder(), anthropic_stream.StreamEncoder("m"))
    assert (
        b"ended early"
        in cut.feed("response.created", '{"type":"response.created","response":{"id":"resp_1"}}') + cut.finish()
    )


_RESPONSE = _json | st.fixed_dictionaries(
    {}, optional={k: _json for k in ("id", "model", "output", "usage", "status", "incomplete_details", "error")}
)
_UPSTREAM_EVENT = _json | st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "response.created",
                "response.output_item.added",
                "response.output_text.delta",
                "response.function_call_arguments.delta",
                "response.output_item.done",
                "response.completed",
                "response.incomplete",
                "response.failed",
                "error",
            ]
        )
    },
    optional={
        "output_index": st.integers(-1, 2) | _json,
        "item": _json
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "function_call", "reasoning"])},
            optional={k: _json | st.text(max_size=3) for k in ("call_id", "name", "arguments")},
        ),
        "delta": _json | st.text(max_size=3),
        "response": _RESPONSE,
        "error": _json,
        "message": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_UPSTREAM_EVENT, max_size=6), body=_RESPONSE)
def test_malformed_responses_upstream_never_raises_else(chunks: list, body: Any) -> None:
    decoder = responses_upstream.StreamDecoder()
    for chunk in chunks:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        for event in decoder.feed(kind if isinstance(kind, str) else None, orjson.dumps(chunk).decode()):
            assert isinstance(event, c.Event.__args__)
    assert all(isinstance(event, c.Event.__args__) for event in decoder.finish())
    try:
        assert isinstance(responses_upstream.response_to_canonical(body), c.Response)
    except TranslationError as error:
        assert error.message


_PROVIDER_EVENT = _json | st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "error",
            ]
        )
    },
    optional={
        "index": st.integers(-1, 2) | _json,
        "content_block": _json
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "tool_use", "thinking"])},
            optional={k: _json for k in ("id", "name", "input", "text")},
        ),
        "delta": _json
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["text_delta", "input_json_delta", "thinking_delta"])},
            optional={k: _json | st.text(max_size=3) for k in ("text", "partial_json", "thinking", "stop_reason")},
        ),
        "message": _json,
        "usage": _json,
        "choices": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_PROVIDER_EVENT, max_size=8))
def test_malformed_provider_streams_encode_as_responses_events(chunks: list) -> None:
    for decoder in (anthropic_stream.StreamDecoder(), openai_chat_stream.StreamDecoder()):
        encoder = StreamEncoder({"model": "m"}, "resp_1", "m")
        for chunk in chunks:
            kind = chunk.get("type") if isinstance(chunk, dict) else None
            for event in decoder.feed(kind if isinstance(kind, str) else None, orjson.dumps(chunk).decode()):
                assert isinstance(encoder.encode(event), bytes)
        assert all(isinstance(encoder.encode(event), bytes) for event in decoder.finish())
