"""Non-streamed responses and error bodies in the client's format.

A response that is not the expected shape raises TranslationError (the caller
should answer 502: the upstream, not the client, is at fault).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.providers.canonical import tool_input
from tollway.translate.error_bodies import anthropic_error_to_openai, openai_error_to_anthropic
from tollway.translate.errors import TranslationError
from tollway.translate.ids import anthropic_message_id, openai_completion_id, tool_use_id
from tollway.translate.stop_reasons import finish_reason, stop_reason
from tollway.translate.usage import anthropic_usage, openai_usage

__all__ = [
    "anthropic_error_to_openai",
    "anthropic_response_to_openai",
    "openai_error_to_anthropic",
    "openai_response_to_anthropic",
    "tool_input",
]


def _first_choice(body: Any) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("upstream chat.completion has no choices", "choices")
    return choices[0]


def openai_response_to_anthropic(body: dict, model: str) -> dict:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``."""
    choice = _first_choice(body)
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    for key in ("content", "refusal"):
        text = message.get(key)
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") if isinstance(call.get("id"), str) else tool_use_id(),
                "name": function.get("name") if isinstance(function.get("name"), str) else "",
                "input": tool_input(function.get("arguments")),
            }
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        name = legacy.get("name")
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(),
                "name": name if isinstance(name, str) else "",
                "input": tool_input(legacy.get("arguments")),
            }
        )
    reason = stop_reason(choice.get("finish_reason"))
    return {
        "id": anthropic_message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason if reason is not None else "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(body.get("usage")),
    }


def anthropic_response_to_openai(body: dict, model: str) -> dict:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``; thinking and server-tool blocks are dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise TranslationError("upstream message has no content", "content")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in body["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id") if isinstance(block.get("id"), str) else "",
                    "type": "function",
                    "function": {
                        "name": block.get("name") if isinstance(block.get("name"), str) else "",
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    reason = finish_reason(body.get("stop_reason"))
    return {
        "id": openai_completion_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": reason or "stop", "logprobs": None}
        ],
        "usage": openai_usage(body.get("usage")),
        "system_fingerprint": None,
    }
