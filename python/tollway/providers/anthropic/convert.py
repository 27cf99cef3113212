"""Anthropic Messages <-> the canonical model (providers/canonical.py).

Canonical content blocks have Anthropic's shapes, so blocks pass through; the
work is in the request's other fields, the response and the stream events.
A canonical ``response_format`` (JSON only, a JSON schema) becomes a system
instruction, which the model follows but the API does not enforce.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.errors import error_object, error_type
from tollway.providers import canonical as c
from tollway.translate.checks import as_bool, as_dict, as_int, as_list, as_number, as_str, opt_str
from tollway.translate.errors import TranslationError
from tollway.translate.ids import anthropic_message_id

JSON_ONLY = "Respond only with a single valid JSON object, with no other text and no Markdown code fences."
_CHOICES = {"auto", "any", "none", "tool"}


def _text_blocks(content: Any, param: str) -> str:
    """Text blocks (or a string) as one string; other blocks are an error."""
    if isinstance(content, str):
        return content
    texts = []
    for i, block in enumerate(as_list(content, param)):
        block = as_dict(block, f"{param}[{i}]")
        if block.get("type") != "text":
            raise TranslationError("only text blocks are allowed here", f"{param}[{i}].type")
        texts.append(as_str(block.get("text"), f"{param}[{i}].text"))
    return "\n\n".join(texts)


def _blocks(content: Any, param: str) -> list[c.Block]:
    """A message's content as blocks (a string is one text block); the target checks
    which block types it can take."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [as_dict(block, f"{param}[{i}]") for i, block in enumerate(as_list(content, param))]


def _tools(tools: Any) -> list[c.Tool]:
    out = []
    for i, tool in enumerate(as_list(tools, "tools")):
        tool = as_dict(tool, f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(
                f"server tool {tool.get('type')!r} is only available on Anthropic models", f"tools[{i}].type"
            )
        name = as_str(tool.get("name"), f"tools[{i}].name")
        description = opt_str(tool.get("description"), f"tools[{i}].description")
        schema = as_dict(tool.get("input_schema"), f"tools[{i}].input_schema")
        strict = None if tool.get("strict") is None else as_bool(tool["strict"], f"tools[{i}].strict")
        out.append(c.Tool(name, schema, description, strict))
    return out


def _tool_choice(choice: Any) -> c.ToolChoice:
    choice = as_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind not in _CHOICES:
        raise TranslationError("must be one of auto, any, tool, none", "tool_choice.type")
    name = as_str(choice.get("name"), "tool_choice.name") if kind == "tool" else None
    disable = choice.get("disable_parallel_tool_use")
    disable = disable is not None and as_bool(disable, "tool_choice.disable_parallel_tool_use")
    return c.ToolChoice(kind, name, disable)


def _output_config(request: c.Request, output_config: Any) -> None:
    output_format = as_dict(output_config, "output_config").get("format")
    if output_format is not None:
        output_format = as_dict(output_format, "output_config.format")
        if output_format.get("type") != "json_schema":
            raise TranslationError("must be json_schema", "output_config.format.type")
        schema = as_dict(output_format.get("schema"), "output_config.format.schema")
        request.response_format = c.ResponseFormat("json_schema", schema)
    effort = output_config.get("effort")
    if isinstance(effort, str):
        request.reasoning_effort = effort


def to_canonical(payload: Any) -> c.Request:
    """A Messages request body as a canonical Request (``top_k``, ``thinking``,
    ``cache_control`` and ``service_tier`` are not carried)."""
    payload = as_dict(payload, "body")
    system = None if payload.get("system") is None else _text_blocks(payload["system"], "system")
    messages = []
    for i, message in enumerate(as_list(payload.get("messages"), "messages")):
        message = as_dict(message, f"messages[{i}]")
        if "content" not in message:
            raise TranslationError("is required", f"messages[{i}].content")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise TranslationError(f"role must be 'user' or 'assistant', not {role!r}", f"messages[{i}].role")
        messages.append(c.Message(role, _blocks(message["content"], f"messages[{i}].content")))
    model = payload.get("model")
    request = c.Request(messages, model if isinstance(model, str) else "", system=system or None)
    if payload.get("max_tokens") is not None:
        request.max_tokens = as_int(payload["max_tokens"], "max_tokens", minimum=1)
    if payload.get("stop_sequences") is not None:
        stops = as_list(payload["stop_sequences"], "stop_sequences")
        request.stop = [as_str(stop, f"stop_sequences[{i}]") for i, stop in enumerate(stops)]
    for key in ("temperature", "top_p"):
        if payload.get(key) is not None:
            setattr(request, key, as_number(payload[key], key))
    metadata = payload.get("metadata")
    if metadata is not None:
        request.user = opt_str(as_dict(metadata, "metadata").get("user_id"), "metadata.user_id") or None
    if payload.get("tools"):
        request.tools = _tools(payload["tools"])
        if payload.get("tool_choice") is not None:
            request.tool_choice = _tool_choice(payload["tool_choice"])
    elif payload.get("tool_choice") is not None:
        as_dict(payload["tool_choice"], "tool_choice")  # validated; meaningless without tools
    if payload.get("output_config") is not None:
        _output_config(request, payload["output_config"])
    if payload.get("stream") is not None:
        request.stream = as_bool(payload["stream"], "stream")
    return request


def stop_reason(raw: Any) -> str:
    """The canonical stop reason of an Anthropic ``stop_reason`` (unknown: end_turn)."""
    if raw in c.STOP_REASONS:
        return raw
    return "max_tokens" if raw == "model_context_window_exceeded" else "end_turn"


def format_instruction(response_format: Optional[c.ResponseFormat]) -> Optional[str]:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object" or response_format.schema is None:
        return JSON_ONLY
    return f"{JSON_ONLY} It must conform to this JSON Schema:\n{orjson.dumps(response_format.schema).decode()}"


def from_canonical(request: c.Request, upstream_model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Messages request body for a canonical Request."""
    messages = []
    for message in c.merge_messages(request.messages):
        blocks = message.content
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            messages.append({"role": message.role, "content": blocks[0]["text"]})
        else:
            messages.append({"role": message.role, "content": blocks})
    out: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "max_tokens": default_max_tokens if request.max_tokens is None else request.max_tokens,
    }
    system = [s for s in (request.system, format_instruction(request.response_format)) if s]
    if system:
        out["system"] = "\n\n".join(system)
    if request.stop:
        out["stop_sequences"] = list(request.stop)
    if request.temperature is not None:
        out["temperature"] = min(max(request.temperature, 0), 1)
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.user:
        out["metadata"] = {"user_id": request.user}
    if request.tools:
        out["tools"] = []
        for tool in request.tools:
            spec: dict[str, Any] = {"name": tool.name}
            if tool.description:
                spec["description"] = tool.description
            spec["input_schema"] = tool.input_schema
            if tool.strict is not None:
                spec["strict"] = tool.strict
            out["tools"].append(spec)
        choice = request.tool_choice
        if choice is not None:
            spec = {"type": choice.type}
            if choice.type == "tool":
                spec["name"] = choice.name
            if choice.disable_parallel and choice.type != "none":
                spec["disable_parallel_tool_use"] = True
            out["tool_choice"] = spec
    if request.stream is not None:
        out["stream"] = request.stream
    return out


_USAGE_KEYS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("cache_write", "cache_creation_input_tokens"),
)


def update_usage(usage: c.Usage, raw: Any) -> c.Usage:
    """``usage`` with the counts present in ``raw`` (an Anthropic usage object)."""
    if isinstance(raw, dict):
        for name, key in _USAGE_KEYS:
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(usage, name, value)
    return usage


def usage_of(raw: Any) -> c.Usage:
    return update_usage(c.Usage(), raw)


def usage_body(usage: c.Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }


def response_to_canonical(body: Any) -> c.Response:
    """A ``message`` as a canonical Response (server-tool and unknown blocks are dropped)."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise TranslationError("upstream message has no content", "content")
    content = []
    for block in body["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            content.append({"type": "text", "text": block["text"]})
        elif kind == "tool_use":
            content.append(
                {
                    "type": "tool_use",
                    "id": block["id"] if isinstance(block.get("id"), str) else "",
                    "name": block["name"] if isinstance(block.get("name"), str) else "",
                    "input": block["input"] if isinstance(block.get("input"), dict) else {},
                }
            )
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            content.append(block)
    stop = body.get("stop_sequence")
    return c.Response(
        id=body["id"] if isinstance(body.get("id"), str) else "",
        model=body["model"] if isinstance(body.get("model"), str) else "",
        content=content,
        stop_reason=stop_reason(body.get("stop_reason")),
        stop_sequence=stop if isinstance(stop, str) else None,
        usage=usage_of(body.get("usage")),
    )


def response_from_canonical(response: c.Response, model: str) -> dict[str, Any]:
    return {
        "id": anthropic_message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": response.content,
        "stop_reason": response.stop_reason,
        "stop_sequence": response.stop_sequence,
        "usage": usage_body(response.usage),
    }


def error_to_canonical(status: int, body: bytes) -> c.Error:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("type") if isinstance(error.get("type"), str) else None
        return c.Error(code or error_type("anthropic", status), error["message"] or f"upstream HTTP {status}", code)
    text = body.decode("utf-8", "replace").strip()
    return c.Error(error_type("anthropic", status), text or f"upstream HTTP {status}")


def error_body(status: int, error: c.Error) -> bytes:
    return orjson.dumps(error_object("anthropic", status, error.message))
