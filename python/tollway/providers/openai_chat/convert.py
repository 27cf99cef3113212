"""OpenAI Chat Completions <-> the canonical model (providers/canonical.py).

This module: canonical requests to Chat bodies (user turns' tool results become
``role: tool`` messages before the rest of the turn; thinking blocks are
dropped), Chat responses and errors to and from canonical. Chat requests to
canonical: request.py; streams: stream.py (this package).
Not sent: ``reasoning_effort`` (Chat models that do not reason reject it).
Server tools, file sources and other blocks Chat has no equivalent for raise
TranslationError.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.errors import error_object, error_type, stream_error_type
from tollway.providers import canonical as c
from tollway.translate.checks import as_dict, as_list, as_str, opt_str
from tollway.translate.errors import TranslationError
from tollway.translate.ids import openai_completion_id, tool_use_id

_DROPPED_BLOCKS = {"thinking", "redacted_thinking"}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# canonical stop reason -> finish_reason, and back
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: str) -> str:
    return _FINISH.get(stop_reason, "stop")


def stop_reason(finish: Any) -> str:
    """The canonical stop reason of a finish_reason (unknown or absent: end_turn)."""
    return _STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = as_dict(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = as_str(source.get("media_type"), f"{param}.source.media_type")
        data = as_str(source.get("data"), f"{param}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": as_str(source.get("url"), f"{param}.source.url")}}
    raise TranslationError(f"image source type {kind!r} cannot be sent to this model", f"{param}.source.type")


def _document_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = as_dict(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(source.get("data"), f"{param}.source.data")}
    if kind == "base64":
        media_type = as_str(source.get("media_type"), f"{param}.source.media_type")
        data = as_str(source.get("data"), f"{param}.source.data")
        filename = opt_str(block.get("title"), f"{param}.title") or "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:{media_type};base64,{data}"}}
    raise TranslationError(f"document source type {kind!r} cannot be sent to this model", f"{param}.source.type")


def _user_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"), f"{param}.text")}
    if kind == "image":
        return _image_part(block, param)
    if kind == "document":
        return _document_part(block, param)
    raise TranslationError(f"content block type {kind!r} cannot be sent to this model", f"{param}.type")


def _tool_result(block: dict[str, Any], param: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ``role: tool`` message, and the images of the result (OpenAI tool messages take text only)."""
    call_id = as_str(block.get("tool_use_id"), f"{param}.tool_use_id")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    else:
        for i, part in enumerate(as_list(content, f"{param}.content")):
            part = as_dict(part, f"{param}.content[{i}]")
            translated = _user_part(part, f"{param}.content[{i}]")
            if translated["type"] == "text":
                texts.append(translated["text"])
            else:
                images.append(translated)
    text = "\n\n".join(texts)
    if images:
        text = (text + "\n\n" if text else "") + "(attachments follow in the next user message)"
    if block.get("is_error") is True:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_messages(content: Any, param: str) -> list[dict[str, Any]]:
    """One user turn: its tool results first (as tool messages), then its other content."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(as_list(content, param)):
        block = as_dict(block, f"{param}[{i}]")
        if block.get("type") == "tool_result":
            message, images = _tool_result(block, f"{param}[{i}]")
            tool_messages.append(message)
            tool_images.extend(images)
        elif not (isinstance(block.get("type"), str) and block["type"] in _DROPPED_BLOCKS):
            parts.append(_user_part(block, f"{param}[{i}]"))
    parts = tool_images + parts
    out = tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(as_list(content, param)):
        block = as_dict(block, f"{param}[{i}]")
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text"), f"{param}[{i}].text"))
        elif kind == "tool_use":
            tool_input = as_dict(block.get("input", {}), f"{param}[{i}].input")
            calls.append(
                {
                    "id": as_str(block.get("id"), f"{param}[{i}].id"),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name"), f"{param}[{i}].name"),
                        "arguments": orjson.dumps(tool_input).decode(),
                    },
                }
            )
        elif not isinstance(kind, str) or kind not in _DROPPED_BLOCKS:
            raise TranslationError(
                f"assistant content block type {kind!r} cannot be sent to this model", f"{param}[{i}].type"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def from_canonical(request: c.Request, upstream_model: str) -> dict[str, Any]:
    """The Chat Completions body for a canonical Request."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for i, message in enumerate(request.messages):
        param = f"messages[{i}].content"
        if message.role == "user":
            messages.extend(_user_messages(message.content, param))
        else:
            messages.append(_assistant_message(message.content, param))
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if request.max_tokens is not None:
        out["max_completion_tokens"] = request.max_tokens
    if request.stop:
        out["stop"] = list(request.stop)
    for key in ("temperature", "top_p"):
        if getattr(request, key) is not None:
            out[key] = getattr(request, key)
    if request.user:
        out["user"] = request.user
    if request.tools:
        tools = []
        for tool in request.tools:
            function: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                function["description"] = tool.description
            function["parameters"] = tool.input_schema
            if tool.strict is not None:
                function["strict"] = tool.strict
            tools.append({"type": "function", "function": function})
        out["tools"] = tools
        choice = request.tool_choice
        if choice is not None:
            if choice.type == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                out["tool_choice"] = _TOOL_CHOICES[choice.type]
            if choice.disable_parallel and choice.type != "none":
                out["parallel_tool_calls"] = False
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "output", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    if request.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_to_canonical(raw: Any) -> c.Usage:
    usage = raw if isinstance(raw, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = min(_count(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt)
    out_details = usage.get("completion_tokens_details")
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return c.Usage(prompt - cached, _count(usage.get("completion_tokens")), cached, 0, reasoning)


def response_to_canonical(body: Any) -> c.Response:
    """A ``chat.completion`` as a canonical Response."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("upstream chat.completion has no choices", "choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[c.Block] = []
    for key in ("content", "refusal"):
        text = message.get(key)
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"] if isinstance(call.get("id"), str) else tool_use_id(),
                    "name": function["name"] if isinstance(function.get("name"), str) else "",
                    "input": c.tool_input(function.get("arguments")),
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
                "input": c.tool_input(legacy.get("arguments")),
            }
        )
    reason = stop_reason(choice.get("finish_reason"))
    return c.Response(
        id=body["id"] if isinstance(body.get("id"), str) else "",
        model=body["model"] if isinstance(body.get("model"), str) else "",
        content=content,
        stop_reason=reason,
        usage=usage_to_canonical(body.get("usage")),
    )


def usage_body(usage: c.Usage) -> dict[str, Any]:
    prompt = usage.prompt
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
    }
    if usage.reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return out


def response_from_canonical(response: c.Response, model: str) -> dict[str, Any]:
    """A canonical Response as a ``chat.completion`` (thinking blocks are dropped)."""
    texts = [block["text"] for block in response.content if block["type"] == "text"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input", {})).decode()},
        }
        for block in response.content
        if block["type"] == "tool_use"
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": openai_completion_id(response.id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(response.stop_reason), "logprobs": None}
        ],
        "usage": usage_body(response.usage),
        "system_fingerprint": None,
    }


def error_to_canonical(status: int, body: bytes) -> c.Error:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        return c.Error(
            stream_error_type("anthropic", error, "openai"), error["message"] or f"upstream HTTP {status}", code
        )
    text = body.decode("utf-8", "replace").strip()
    return c.Error(error_type("anthropic", status), text or f"upstream HTTP {status}")


def error_body(status: int, error: c.Error) -> bytes:
    kind = error_type("openai", status)
    if status == 429 and error.code == "billing_error":
        kind = "insufficient_quota"
    return orjson.dumps(error_object("openai", status, error.message, code=error.code, kind=kind))
