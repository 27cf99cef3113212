"""An Anthropic Messages request as an OpenAI Chat Completions request.

``output_config.format`` (a JSON schema) becomes ``response_format``. Dropped on
purpose: ``top_k``, ``thinking`` (and thinking blocks in history),
``output_config.effort``, ``cache_control``, ``service_tier``. Server tools, file sources and other blocks
OpenAI has no equivalent for raise TranslationError.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.translate.checks import as_bool, as_dict, as_int, as_list, as_number, as_str, opt_str
from tollway.translate.errors import TranslationError

_DROPPED_BLOCKS = {"thinking", "redacted_thinking"}
_CUSTOM_TOOL_TYPES = {None, "custom"}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _text_of_blocks(blocks: Any, param: str) -> str:
    """Text blocks (or a string) as one string; other blocks are an error."""
    if isinstance(blocks, str):
        return blocks
    texts = []
    for i, block in enumerate(as_list(blocks, param)):
        block = as_dict(block, f"{param}[{i}]")
        if block.get("type") != "text":
            raise TranslationError("only text blocks are allowed here", f"{param}[{i}].type")
        texts.append(as_str(block.get("text"), f"{param}[{i}].text"))
    return "\n\n".join(texts)


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = as_dict(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = as_str(source.get("media_type"), f"{param}.source.media_type")
        data = as_str(source.get("data"), f"{param}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": as_str(source.get("url"), f"{param}.source.url")}}
    raise TranslationError(f"image source type {kind!r} cannot be sent to an OpenAI model", f"{param}.source.type")


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
    raise TranslationError(f"document source type {kind!r} cannot be sent to an OpenAI model", f"{param}.source.type")


def _user_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"), f"{param}.text")}
    if kind == "image":
        return _image_part(block, param)
    if kind == "document":
        return _document_part(block, param)
    raise TranslationError(f"content block type {kind!r} cannot be sent to an OpenAI model", f"{param}.type")


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
    """One Anthropic user turn: its tool results first (as tool messages), then its other content."""
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
        elif block.get("type") not in _DROPPED_BLOCKS:
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
        elif kind not in _DROPPED_BLOCKS:
            raise TranslationError(
                f"assistant content block type {kind!r} cannot be sent to an OpenAI model", f"{param}[{i}].type"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = payload.get("system")
    if system is not None:
        text = _text_of_blocks(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, message in enumerate(as_list(payload.get("messages"), "messages")):
        message = as_dict(message, f"messages[{i}]")
        role = message.get("role")
        param = f"messages[{i}].content"
        if "content" not in message:
            raise TranslationError("is required", param)
        if role == "user":
            out.extend(_user_messages(message["content"], param))
        elif role == "assistant":
            out.append(_assistant_message(message["content"], param))
        else:
            raise TranslationError(f"role must be 'user' or 'assistant', not {role!r}", f"messages[{i}].role")
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(as_list(tools, "tools")):
        tool = as_dict(tool, f"tools[{i}]")
        if tool.get("type") not in _CUSTOM_TOOL_TYPES:
            raise TranslationError(
                f"server tool {tool.get('type')!r} is not available on OpenAI models", f"tools[{i}].type"
            )
        function: dict[str, Any] = {"name": as_str(tool.get("name"), f"tools[{i}].name")}
        description = opt_str(tool.get("description"), f"tools[{i}].description")
        if description is not None:
            function["description"] = description
        function["parameters"] = as_dict(tool.get("input_schema"), f"tools[{i}].input_schema")
        if tool.get("strict") is not None:
            function["strict"] = as_bool(tool["strict"], f"tools[{i}].strict")
        out.append({"type": "function", "function": function})
    return out


def _apply_tool_choice(choice: Any, out: dict[str, Any]) -> None:
    choice = as_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        name = as_str(choice.get("name"), "tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise TranslationError("must be one of auto, any, tool, none", "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is not None:
        if as_bool(choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use") and kind != "none":
            out["parallel_tool_calls"] = False


def anthropic_request_to_openai(payload: dict, upstream_model: str) -> dict:
    """The OpenAI Chat Completions body for an Anthropic Messages request body."""
    payload = as_dict(payload, "body")
    out: dict[str, Any] = {"model": upstream_model, "messages": _messages(payload)}
    if payload.get("max_tokens") is not None:
        out["max_completion_tokens"] = as_int(payload["max_tokens"], "max_tokens", minimum=1)
    if payload.get("stop_sequences") is not None:
        stops = as_list(payload["stop_sequences"], "stop_sequences")
        out["stop"] = [as_str(stop, f"stop_sequences[{i}]") for i, stop in enumerate(stops)]
    for key in ("temperature", "top_p"):
        if payload.get(key) is not None:
            out[key] = as_number(payload[key], key)
    metadata = payload.get("metadata")
    if metadata is not None:
        user_id = opt_str(as_dict(metadata, "metadata").get("user_id"), "metadata.user_id")
        if user_id:
            out["user"] = user_id
    if payload.get("tools"):
        out["tools"] = _tools(payload["tools"])
        if payload.get("tool_choice") is not None:
            _apply_tool_choice(payload["tool_choice"], out)
    elif payload.get("tool_choice") is not None:
        as_dict(payload["tool_choice"], "tool_choice")  # validated; meaningless without tools
    output_config = payload.get("output_config")
    if output_config is not None:
        output_format = as_dict(output_config, "output_config").get("format")
        if output_format is not None:
            output_format = as_dict(output_format, "output_config.format")
            if output_format.get("type") != "json_schema":
                raise TranslationError("must be json_schema", "output_config.format.type")
            schema = as_dict(output_format.get("schema"), "output_config.format.schema")
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if payload.get("stream") is not None and as_bool(payload["stream"], "stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
