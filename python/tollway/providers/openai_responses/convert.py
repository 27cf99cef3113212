"""OpenAI Responses (``POST /v1/responses``) <-> the canonical model.

Requests: ``input`` (a string, or items: messages with ``input_text`` /
``input_image`` / ``input_file`` / ``output_text`` / ``refusal`` parts,
``function_call`` and ``function_call_output``), ``instructions``, function
tools, ``tool_choice``, ``max_output_tokens``, ``reasoning.effort``,
``text.format`` and ``metadata``. Input ``reasoning`` items are dropped (their
content is encrypted for OpenAI's own models); hosted tools, ``item_reference``
and file ids raise TranslationError (400).

Responses: a canonical Response as a ``response`` object; ``max_tokens`` and
``refusal`` stops are ``status: "incomplete"`` with their ``incomplete_details``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Optional

import orjson

from tollway.providers import canonical as c
from tollway.providers.openai_chat.request import tool_choice
from tollway.translate.checks import as_bool, as_dict, as_int, as_list, as_number, as_str, opt_str
from tollway.translate.errors import TranslationError

_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
_ROLES = ("user", "assistant", "system", "developer")
_INCOMPLETE = {"max_tokens": "max_output_tokens", "refusal": "content_filter"}


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# ---- request ------------------------------------------------------------------
def _image(part: dict[str, Any], param: str) -> c.Block:
    if part.get("file_id") is not None:
        raise TranslationError("file ids cannot be resolved here; send image_url", f"{param}.file_id")
    url = as_str(part.get("image_url"), f"{param}.image_url")
    match = _DATA_URL.match(url)
    if match:
        return {"type": "image", "source": {"type": "base64", "media_type": match["media"], "data": match["data"]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("must be an http(s) URL or a base64 data URL", f"{param}.image_url")


def _file(part: dict[str, Any], param: str) -> c.Block:
    data = opt_str(part.get("file_data"), f"{param}.file_data")
    match = _DATA_URL.match(data) if data else None
    if not match:
        raise TranslationError("only inline file_data (a base64 data URL) is supported", f"{param}.file_data")
    block: c.Block = {
        "type": "document",
        "source": {"type": "base64", "media_type": match["media"], "data": match["data"]},
    }
    filename = opt_str(part.get("filename"), f"{param}.filename")
    if filename:
        block["title"] = filename
    return block


def _parts(content: Any, param: str) -> list[c.Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(as_list(content, param)):
        part = as_dict(part, f"{param}[{i}]")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = as_str(part.get("text"), f"{param}[{i}].text")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "refusal":
            blocks.append({"type": "text", "text": as_str(part.get("refusal"), f"{param}[{i}].refusal")})
        elif kind == "input_image":
            blocks.append(_image(part, f"{param}[{i}]"))
        elif kind == "input_file":
            blocks.append(_file(part, f"{param}[{i}]"))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported", f"{param}[{i}].type")
    return blocks


def _call_output(output: Any, param: str) -> Any:
    if isinstance(output, str):
        return output
    blocks = _parts(output, param)
    if any(block["type"] == "document" for block in blocks):
        raise TranslationError("a function call output may hold text and images only", param)
    return blocks


def item_to_message(item: Any, param: str) -> Optional[tuple[str, list[c.Block]]]:
    """One input item as (role, blocks): role ``system`` for system and developer
    messages; None for an item that carries nothing for the model (reasoning)."""
    item = as_dict(item, param)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise TranslationError(f"role must be one of {', '.join(_ROLES)}", f"{param}.role")
        if "content" not in item:
            raise TranslationError("is required", f"{param}.content")
        blocks = _parts(item["content"], f"{param}.content")
        return ("system" if role == "developer" else role), blocks
    if kind == "function_call":
        call_id = as_str(item.get("call_id"), f"{param}.call_id")
        name = as_str(item.get("name"), f"{param}.name")
        arguments = as_str(item.get("arguments", ""), f"{param}.arguments")
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise TranslationError(
                f"arguments of function call {call_id} ({name}) are not valid JSON", f"{param}.arguments"
            ) from None
        if not isinstance(parsed, dict):
            raise TranslationError(
                f"arguments of function call {call_id} ({name}) must be a JSON object", f"{param}.arguments"
            )
        return "assistant", [{"type": "tool_use", "id": call_id, "name": name, "input": parsed}]
    if kind == "function_call_output":
        call_id = as_str(item.get("call_id"), f"{param}.call_id")
        if "output" not in item:
            raise TranslationError("is required", f"{param}.output")
        return "user", [
            {"type": "tool_result", "tool_use_id": call_id, "content": _call_output(item["output"], f"{param}.output")}
        ]
    if kind == "reasoning":
        return None
    raise TranslationError(f"input item type {kind!r} is not supported", f"{param}.type")


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return [as_dict(item, f"input[{i}]") for i, item in enumerate(as_list(value, "input"))]


def _tools(tools: Any) -> list[c.Tool]:
    out = []
    for i, tool in enumerate(as_list(tools, "tools")):
        tool = as_dict(tool, f"tools[{i}]")
        if tool.get("type") != "function":
            raise TranslationError(
                f"tool type {tool.get('type')!r} is only available on OpenAI's own Responses models", f"tools[{i}].type"
            )
        parameters = tool.get("parameters")
        out.append(
            c.Tool(
                as_str(tool.get("name"), f"tools[{i}].name"),
                {"type": "object", "properties": {}}
                if parameters is None
                else as_dict(parameters, f"tools[{i}].parameters"),
                opt_str(tool.get("description"), f"tools[{i}].description"),
                None if tool.get("strict") is None else as_bool(tool["strict"], f"tools[{i}].strict"),
            )
        )
    return out


def _tool_choice(choice: Any, parallel: Optional[bool]) -> Optional[c.ToolChoice]:
    """A Responses function choice names its function at the top level."""
    return tool_choice(choice, parallel, lambda named: as_str(named.get("name"), "tool_choice.name"))


def _text_format(text: Any) -> Optional[c.ResponseFormat]:
    fmt = as_dict(text, "text").get("format")
    if fmt is None:
        return None
    fmt = as_dict(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return c.ResponseFormat("json_object")
    if kind == "json_schema":
        strict = fmt.get("strict")
        return c.ResponseFormat(
            "json_schema",
            as_dict(fmt.get("schema"), "text.format.schema"),
            opt_str(fmt.get("name"), "text.format.name"),
            None if strict is None else as_bool(strict, "text.format.strict"),
        )
    raise TranslationError("must be text, json_object or json_schema", "text.format.type")


def to_canonical(payload: Any, history: Optional[list[tuple[str, list[c.Block]]]] = None) -> c.Request:
    """A Responses request body as a canonical Request; ``history`` (the (role, blocks)
    of ``previous_response_id``'s conversation) goes before the input."""
    payload = as_dict(payload, "body")
    instructions = opt_str(payload.get("instructions"), "instructions")
    system = [instructions] if instructions else []
    messages: list[c.Message] = []
    turns = list(history or [])
    for i, item in enumerate(input_items(payload.get("input", []))):
        found = item_to_message(item, f"input[{i}]")
        if found is not None:
            turns.append(found)
    for role, blocks in turns:
        if role == "system":
            system.append(c.text_of(blocks))
        elif blocks:
            messages.append(c.Message(role, list(blocks)))
    if not messages:
        raise TranslationError("must hold at least one message", "input")
    request = c.Request(
        model=as_str(payload.get("model"), "model"), messages=messages, system="\n\n".join(system) or None
    )
    if payload.get("max_output_tokens") is not None:
        request.max_tokens = as_int(payload["max_output_tokens"], "max_output_tokens", minimum=1)
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            setattr(request, name, as_number(payload[name], name))
    request.stream = payload.get("stream") is not None and as_bool(payload["stream"], "stream")
    parallel = payload.get("parallel_tool_calls")
    parallel = None if parallel is None else as_bool(parallel, "parallel_tool_calls")
    if payload.get("tools"):
        request.tools = _tools(payload["tools"])
        request.tool_choice = _tool_choice(payload.get("tool_choice"), parallel)
    if payload.get("text") is not None:
        request.response_format = _text_format(payload["text"])
    if payload.get("reasoning") is not None:
        request.reasoning_effort = opt_str(as_dict(payload["reasoning"], "reasoning").get("effort"), "reasoning.effort")
    user = opt_str(payload.get("safety_identifier"), "safety_identifier") or opt_str(payload.get("user"), "user")
    request.user = user or None
    if payload.get("metadata") is not None:
        metadata = as_dict(payload["metadata"], "metadata")
        request.metadata = {k: as_str(v, f"metadata.{k}") for k, v in metadata.items()}
    return request


# ---- response -----------------------------------------------------------------
def usage_object(usage: c.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt + usage.output,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, block: c.Block, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": block["id"],
        "name": block["name"],
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def output_items(content: list[c.Block]) -> list[dict[str, Any]]:
    """Canonical blocks as output items: each run of text blocks is one message."""
    items: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            items.append(message_item(new_id("msg_"), "".join(texts)))
            texts.clear()

    for block in content:
        if block["type"] == "text":
            texts.append(block["text"])
            continue
        flush()
        if block["type"] == "tool_use":
            items.append(function_call_item(new_id("fc_"), block, orjson.dumps(block.get("input", {})).decode()))
        elif block["type"] == "thinking":
            items.append(reasoning_item(new_id("rs_"), block.get("thinking", "")))
    flush()
    return items


def output_to_blocks(items: list[dict[str, Any]]) -> list[c.Block]:
    """Output items (of a stored response) back as canonical blocks, for the next turn's history."""
    blocks: list[c.Block] = []
    for item in items:
        found = item_to_message(item, "output") if item.get("type") != "reasoning" else None
        if found is not None:
            blocks.extend(found[1])
    return blocks


def response_object(
    request: dict[str, Any],
    response_id: str,
    model: str,
    output: list[dict[str, Any]],
    status: str,
    usage: Optional[c.Usage],
    created_at: Optional[int] = None,
    incomplete: Optional[str] = None,
    error: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """A ``response`` object echoing the request's parameters, as OpenAI answers."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.get("store", True) is not False,
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None if usage is None else usage_object(usage),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def response_from_canonical(
    response: c.Response, request: dict[str, Any], response_id: str, model: str
) -> dict[str, Any]:
    incomplete = _INCOMPLETE.get(response.stop_reason)
    status = "incomplete" if incomplete else "completed"
    return response_object(
        request, response_id, model, output_items(response.content), status, response.usage, incomplete=incomplete
    )


def status_of(stop_reason: str) -> tuple[str, Optional[str]]:
    incomplete = _INCOMPLETE.get(stop_reason)
    return ("incomplete" if incomplete else "completed"), incomplete
