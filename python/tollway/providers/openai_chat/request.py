"""An OpenAI Chat Completions request as a canonical Request (providers/canonical.py).

System and developer messages become the system prompt, tool messages
``tool_result`` blocks in user turns, assistant ``tool_calls`` ``tool_use``
blocks; consecutive turns of one role are left for the target to merge.
Not carried: ``seed``, ``presence_penalty``, ``frequency_penalty``,
``logit_bias``, ``store``, ``metadata``, ``service_tier``, ``stream_options``,
``prediction`` and per-message ``name``. What no other format can express
(``n`` > 1, logprobs, audio, legacy functions) raises TranslationError.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

import orjson

from tollway.providers import canonical as c
from tollway.translate.checks import as_bool, as_dict, as_int, as_list, as_number, as_str, opt_str
from tollway.translate.errors import TranslationError

_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _text_of_parts(content: Any, param: str) -> str:
    """A string, or an array of text parts, as one string."""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(as_list(content, param)):
        part = as_dict(part, f"{param}[{i}]")
        if part.get("type") == "text":
            texts.append(as_str(part.get("text"), f"{param}[{i}].text"))
        elif part.get("type") == "refusal":
            texts.append(as_str(part.get("refusal"), f"{param}[{i}].refusal"))
        else:
            raise TranslationError("only text parts are allowed here", f"{param}[{i}].type")
    return "\n\n".join(texts)


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    image_url = part.get("image_url")
    url = as_str(image_url.get("url") if isinstance(image_url, dict) else image_url, f"{param}.image_url.url")
    match = _DATA_URL.match(url)
    if match:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": match["media"], "data": match["data"]},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("must be an http(s) URL or a base64 data URL", f"{param}.image_url.url")


def _file_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    file = as_dict(part.get("file"), f"{param}.file")
    data = opt_str(file.get("file_data"), f"{param}.file.file_data")
    match = _DATA_URL.match(data) if data else None
    if not match:
        raise TranslationError(
            "only inline file_data (a base64 data URL) can be translated for this model",
            f"{param}.file",
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": match["media"], "data": match["data"]},
    }
    filename = opt_str(file.get("filename"), f"{param}.file.filename")
    if filename:
        block["title"] = filename
    return block


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(as_list(content, param)):
        part = as_dict(part, f"{param}[{i}]")
        kind = part.get("type")
        if kind == "text":
            text = as_str(part.get("text"), f"{param}[{i}].text")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{param}[{i}]"))
        elif kind == "file":
            blocks.append(_file_block(part, f"{param}[{i}]"))
        else:
            raise TranslationError(
                f"content part type {kind!r} cannot be translated for this model",
                f"{param}[{i}].type",
            )
    return blocks


def _tool_use_block(call: Any, param: str) -> dict[str, Any]:
    call = as_dict(call, param)
    if call.get("type", "function") != "function":
        raise TranslationError(
            f"tool call type {call.get('type')!r} cannot be translated for this model",
            f"{param}.type",
        )
    call_id = as_str(call.get("id"), f"{param}.id")
    function = as_dict(call.get("function"), f"{param}.function")
    name = as_str(function.get("name"), f"{param}.function.name")
    arguments = as_str(function.get("arguments", ""), f"{param}.function.arguments")
    try:
        tool_input = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        raise TranslationError(
            f"arguments of tool call {call_id} ({name}) are not valid JSON",
            f"{param}.function.arguments",
        ) from None
    if not isinstance(tool_input, dict):
        raise TranslationError(
            f"arguments of tool call {call_id} ({name}) must be a JSON object",
            f"{param}.function.arguments",
        )
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks = []
    content = message.get("content")
    if content is not None:
        text = _text_of_parts(content, f"{param}.content")
        if text:
            blocks.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if refusal is not None and not blocks:
        text = as_str(refusal, f"{param}.refusal")
        if text:
            blocks.append({"type": "text", "text": text})
    if message.get("function_call") is not None:
        raise TranslationError("legacy function_call is not supported; use tool_calls", f"{param}.function_call")
    calls = message.get("tool_calls")
    if calls is not None:
        for i, call in enumerate(as_list(calls, f"{param}.tool_calls")):
            blocks.append(_tool_use_block(call, f"{param}.tool_calls[{i}]"))
    return blocks


def _tool_result_block(message: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = as_str(message.get("tool_call_id"), f"{param}.tool_call_id")
    content = message.get("content")
    text = "" if content is None else _text_of_parts(content, f"{param}.content")
    return {"type": "tool_result", "tool_use_id": call_id, "content": text}


def _conversation(messages: Any) -> tuple[list[str], list[c.Message]]:
    """System texts, and the user/assistant turns (not merged)."""
    system: list[str] = []
    turns: list[c.Message] = []
    for i, message in enumerate(as_list(messages, "messages")):
        param = f"messages[{i}]"
        message = as_dict(message, param)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of_parts(message.get("content"), f"{param}.content")
            if text:
                system.append(text)
        elif role == "user":
            turns.append(c.Message("user", _user_blocks(message.get("content"), f"{param}.content")))
        elif role == "assistant":
            blocks = _assistant_blocks(message, param)
            if blocks:
                turns.append(c.Message("assistant", blocks))
        elif role == "tool":
            turns.append(c.Message("user", [_tool_result_block(message, param)]))
        elif role == "function":
            raise TranslationError(
                "legacy role 'function' is not supported; use tool_calls and role 'tool'",
                f"{param}.role",
            )
        else:
            raise TranslationError(f"unknown role {role!r}", f"{param}.role")
    return system, turns


def _tools(tools: Any) -> list[c.Tool]:
    out = []
    for i, tool in enumerate(as_list(tools, "tools")):
        tool = as_dict(tool, f"tools[{i}]")
        if tool.get("type") != "function":
            raise TranslationError(
                f"tool type {tool.get('type')!r} cannot be translated for this model", f"tools[{i}].type"
            )
        function = as_dict(tool.get("function"), f"tools[{i}].function")
        name = as_str(function.get("name"), f"tools[{i}].function.name")
        description = opt_str(function.get("description"), f"tools[{i}].function.description")
        parameters = function.get("parameters")
        schema = (
            {"type": "object", "properties": {}}
            if parameters is None
            else as_dict(parameters, f"tools[{i}].function.parameters")
        )
        strict = None if function.get("strict") is None else as_bool(function["strict"], f"tools[{i}].function.strict")
        out.append(c.Tool(name, schema, description, strict))
    return out


def _function_name(choice: dict[str, Any]) -> str:
    function = as_dict(choice.get("function"), "tool_choice.function")
    return as_str(function.get("name"), "tool_choice.function.name")


def tool_choice(
    choice: Any, parallel: Optional[bool], function_name: Callable[[dict[str, Any]], str] = _function_name
) -> Optional[c.ToolChoice]:
    """OpenAI's ``tool_choice`` (Chat Completions and Responses alike): absent, a mode, or a
    function choice, whose name ``function_name`` reads (the two APIs put it in different places)."""
    if choice is None:
        return c.ToolChoice("auto", disable_parallel=True) if parallel is False else None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise TranslationError("must be 'none', 'auto', 'required' or a function choice", "tool_choice")
        return c.ToolChoice(_TOOL_CHOICES[choice], disable_parallel=parallel is False)
    choice = as_dict(choice, "tool_choice")
    if choice.get("type") != "function":
        raise TranslationError(
            f"tool_choice type {choice.get('type')!r} cannot be translated for this model", "tool_choice.type"
        )
    return c.ToolChoice("tool", function_name(choice), disable_parallel=parallel is False)


def _reject_unsupported(payload: dict[str, Any]) -> None:
    if payload.get("n") is not None and as_int(payload["n"], "n", minimum=1) > 1:
        raise TranslationError("this model returns one choice per request; n must be 1", "n")
    if payload.get("logprobs") is not None and as_bool(payload["logprobs"], "logprobs"):
        raise TranslationError("logprobs are not available from this model", "logprobs")
    if payload.get("top_logprobs") is not None:
        raise TranslationError("logprobs are not available from this model", "top_logprobs")
    if payload.get("audio") is not None:
        raise TranslationError("audio output is not available from this model", "audio")
    modalities = payload.get("modalities")
    if modalities is not None and "audio" in as_list(modalities, "modalities"):
        raise TranslationError("audio output is not available from this model", "modalities")
    for legacy in ("functions", "function_call"):
        if payload.get(legacy) is not None:
            raise TranslationError("legacy functions are not supported; use tools", legacy)


def _response_format(response_format: Any) -> Optional[c.ResponseFormat]:
    response_format = as_dict(response_format, "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return c.ResponseFormat("json_object")
    if kind == "json_schema":
        spec = as_dict(response_format.get("json_schema"), "response_format.json_schema")
        schema = as_dict(spec.get("schema", {}), "response_format.json_schema.schema")
        strict = spec.get("strict")
        name = spec.get("name")
        return c.ResponseFormat(
            "json_schema", schema, name if isinstance(name, str) else None, strict if isinstance(strict, bool) else None
        )
    raise TranslationError("must be text, json_object or json_schema", "response_format.type")


def _stop_sequences(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    return [as_str(item, f"stop[{i}]") for i, item in enumerate(as_list(stop, "stop"))]


def to_canonical(payload: Any) -> c.Request:
    """A Chat Completions request body as a canonical Request."""
    payload = as_dict(payload, "body")
    _reject_unsupported(payload)
    system, messages = _conversation(payload.get("messages"))
    model = payload.get("model")
    request = c.Request(model=model if isinstance(model, str) else "", messages=messages)
    max_tokens, param = payload.get("max_completion_tokens"), "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = payload.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        request.max_tokens = as_int(max_tokens, param, minimum=1)
    if payload.get("response_format") is not None:
        request.response_format = _response_format(payload["response_format"])
    request.system = "\n\n".join(system) or None
    if payload.get("stop") is not None:
        request.stop = _stop_sequences(payload["stop"])
    if payload.get("temperature") is not None:
        request.temperature = as_number(payload["temperature"], "temperature")
    if payload.get("top_p") is not None:
        request.top_p = as_number(payload["top_p"], "top_p")
    user = opt_str(payload.get("user"), "user") or opt_str(payload.get("safety_identifier"), "safety_identifier")
    request.user = user or None
    parallel = payload.get("parallel_tool_calls")
    parallel = None if parallel is None else as_bool(parallel, "parallel_tool_calls")
    if payload.get("tools"):
        request.tools = _tools(payload["tools"])
        request.tool_choice = tool_choice(payload.get("tool_choice"), parallel)
    if isinstance(payload.get("reasoning_effort"), str):
        request.reasoning_effort = payload["reasoning_effort"]
    if payload.get("stream") is not None:
        request.stream = as_bool(payload["stream"], "stream")
    return request
