"""Each wire format's tool code (``tollway.providers.*_tools``): the same methods, and a
tool call that goes round (definition -> calls in a response -> result messages) in
the shapes the official SDKs accept."""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

import pytest
from anthropic.types import Message, MessageParam, ToolChoiceParam, ToolParam
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)
from pydantic import TypeAdapter

from tollway.config.routes import PROVIDER_KINDS
from tollway.http.core import HTTPError
from tollway.providers import ADAPTERS, CANONICAL_TOOLS, TOOL_FORMATS
from tollway.providers.tool_format import LoopWriter, ToolFormat
from tollway.tools.calls import add_definitions
from tollway.tools.dispatch import ToolResult
from tollway.tools.store import Tool

SCHEMA = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
TOOL = Tool("tool_1", "acct_1", "lookup", "Look a word up", SCHEMA, "https://example.com/hook", 1000, "whsec_x", 0, 0)


def _public(cls: type) -> dict[str, Any]:
    return {n: v for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


def _force(value: Any) -> Any:
    """Validated values with their lazily validated (``Iterable``) fields read, so that
    every error shows."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    try:
        return [_force(v) for v in value]
    except TypeError:
        return value


def _valid(adapter: TypeAdapter, value: Any) -> None:
    _force(adapter.validate_python(value))


def _openai_body(text: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def _anthropic_body(text: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": "call_1", "name": name, "input": json.loads(arguments)},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }


def _openai_result_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["tool_call_id"] for m in messages if m["role"] == "tool"]


def _anthropic_result_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [b["tool_use_id"] for m in messages for b in m["content"] if b["type"] == "tool_result"]


def _openai_stop(body: dict[str, Any]) -> str:
    return body["choices"][0]["finish_reason"]


def _anthropic_stop(body: dict[str, Any]) -> str:
    return body["stop_reason"]


class Wire:
    """How the official SDK of a format checks what the format's tool code produced."""

    def __init__(
        self,
        body,
        response,
        definition,
        messages,
        tool_choice,
        result_ids: Callable,
        stop: Callable,
        no_calls_stop: str,
    ):
        self.body, self.response, self.result_ids, self.stop, self.no_calls_stop = (
            body,
            response,
            result_ids,
            stop,
            no_calls_stop,
        )
        self.definition, self.messages, self.tool_choice = (
            TypeAdapter(definition),
            TypeAdapter(list[messages]),
            TypeAdapter(tool_choice),
        )


WIRES = {
    "openai": Wire(
        _openai_body,
        ChatCompletion,
        ChatCompletionToolParam,
        ChatCompletionMessageParam,
        ChatCompletionToolChoiceOptionParam,
        _openai_result_ids,
        _openai_stop,
        "stop",
    ),
    "anthropic": Wire(
        _anthropic_body,
        Message,
        ToolParam,
        MessageParam,
        ToolChoiceParam,
        _anthropic_result_ids,
        _anthropic_stop,
        "end_turn",
    ),
}


def test_every_provider_kind_has_its_tool_format() -> None:
    # The tool loop runs in the provider's own format (its kind); the Responses API of
    # an OpenAI provider is a way to call it, not a kind of its own.
    assert set(TOOL_FORMATS) == set(PROVIDER_KINDS) == set(WIRES)
    assert set(PROVIDER_KINDS) <= set(ADAPTERS)
    assert all(fmt.kind == kind for kind, fmt in TOOL_FORMATS.items())
    assert CANONICAL_TOOLS in TOOL_FORMATS.values()


def test_the_formats_implement_the_same_methods() -> None:
    wanted = _public(ToolFormat)
    writer_wanted = _public(LoopWriter)
    assert {
        "definition",
        "calls_in_body",
        "assistant_turn",
        "result_messages",
        "strip_calls",
        "forbid_tools",
        "loop_writer",
    } <= set(wanted)
    for fmt in TOOL_FORMATS.values():
        methods = _public(type(fmt))
        assert set(wanted) <= set(methods), type(fmt).__name__
        for name, proto in wanted.items():
            assert list(inspect.signature(methods[name]).parameters) == list(inspect.signature(proto).parameters), name
        writer = fmt.loop_writer({"lookup"}, "m", {"stream_options": {"include_usage": True}})
        assert set(writer_wanted) <= set(_public(type(writer))), type(writer).__name__


@pytest.mark.parametrize("kind", sorted(TOOL_FORMATS))
def test_a_tool_call_goes_round(kind: str) -> None:
    fmt, wire = TOOL_FORMATS[kind], WIRES[kind]
    definition = fmt.definition(TOOL)
    _valid(wire.definition, definition)
    assert fmt.definition_name(definition) == "lookup"

    payload: dict[str, Any] = {"messages": [{"role": "user", "content": "What is a toll?"}]}
    add_definitions(fmt, payload, [TOOL])
    assert payload["tools"] == [definition]

    # The model calls the tool it was offered, by the name in its definition.
    body = wire.body("Let me look.", fmt.definition_name(payload["tools"][0]), '{"word":"toll"}')
    wire.response.model_validate(body)
    calls = fmt.calls_in_body(body)
    assert [(c.id, c.name, c.input) for c in calls] == [("call_1", "lookup", {"word": "toll"})]
    assert fmt.body_text(body) == "Let me look."

    result = ToolResult("call_1", TOOL.id, TOOL.name, {"meaning": "a charge"}, None, False, 12, 1, 200)
    for assistant in (fmt.assistant_turn(fmt.body_text(body), calls), fmt.assistant_turn("", calls, body)):
        results = fmt.result_messages([result])
        messages = payload["messages"] + [assistant] + results
        _valid(wire.messages, messages)
        assert wire.result_ids(results) == ["call_1"]
        assert '{"meaning":"a charge"}' in str(results)
    # What threads store is the canonical format's, whatever the model's.
    _valid(WIRES[CANONICAL_TOOLS.kind].messages, [CANONICAL_TOOLS.assistant_turn(fmt.body_text(body), calls)])

    fmt.forbid_tools(payload)
    _valid(wire.tool_choice, payload["tool_choice"])

    stripped = fmt.strip_calls(body, {"lookup"})
    wire.response.model_validate(stripped)
    assert fmt.calls_in_body(stripped) == [] and wire.stop(stripped) == wire.no_calls_stop
    assert fmt.body_text(stripped) == "Let me look."


@pytest.mark.parametrize("kind", sorted(TOOL_FORMATS))
def test_a_request_cannot_name_a_registered_tool_twice(kind: str) -> None:
    fmt = TOOL_FORMATS[kind]
    payload = {"tools": [fmt.definition(TOOL)]}
    with pytest.raises(HTTPError) as raised:
        add_definitions(fmt, payload, [TOOL])
    assert raised.value.status == 400 and raised.value.param == "tool_ids"
