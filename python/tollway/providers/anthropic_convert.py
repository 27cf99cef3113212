"""Anthropic Messages <-> the canonical model (providers/canonical.py).

Canonical content blocks have Anthropic's shapes, so blocks pass through; the
work is in the request's other fields, the response and the stream events.
A canonical ``response_format`` (JSON only, a JSON schema) becomes a system
instruction, which the model follows but the API does not enforce.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import orjson

from tollway.providers import canonical as c
from tollway.translate.checks import as_bool, as_dict, as_int, as_list, as_number, as_str, opt_str
from tollway.translate.error_bodies import anthropic_error_object, anthropic_error_type
from tollway.translate.errors import TranslationError
from tollway.translate.sse import anthropic_event

JSON_ONLY = "Respond only with a single valid JSON object, with no other text and no Markdown code fences."
_CHOICES = {"auto", "any", "none", "tool"}
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def _blocks(content: Any, param: str) -> list[c.Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for i, block in enumerate(as_list(content, param)):
        block = as_dict(block, f"{param}[{i}]")
        kind = block.get("type")
        if kind == "text":
            as_str(block.get("text"), f"{param}[{i}].text")
        elif kind == "tool_use":
            as_str(block.get("id"), f"{param}[{i}].id")
            as_str(block.get("name"), f"{param}[{i}].name")
            as_dict(block.get("input", {}), f"{param}[{i}].input")
        elif kind == "tool_result":
            as_str(block.get("tool_use_id"), f"{param}[{i}].tool_use_id")
        elif kind in ("image", "document"):
            as_dict(block.get("source"), f"{param}[{i}].source")
        out.append(block)
    return out


def to_canonical(payload: Any) -> c.Request:
    """A Messages request body as a canonical Request."""
    payload = as_dict(payload, "body")
    system = payload.get("system")
    if system is not None and not isinstance(system, str):
        system = "\n\n".join(b["text"] for b in _blocks(system, "system") if b.get("type") == "text")
    messages = []
    for i, message in enumerate(as_list(payload.get("messages"), "messages")):
        message = as_dict(message, f"messages[{i}]")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise TranslationError(f"role must be 'user' or 'assistant', not {role!r}", f"messages[{i}].role")
        if "content" not in message:
            raise TranslationError("is required", f"messages[{i}].content")
        messages.append(c.Message(role, _blocks(message["content"], f"messages[{i}].content")))
    request = c.Request(model=as_str(payload.get("model"), "model"), messages=messages, system=system or None)
    if payload.get("max_tokens") is not None:
        request.max_tokens = as_int(payload["max_tokens"], "max_tokens", minimum=1)
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            setattr(request, name, as_number(payload[name], name))
    if payload.get("stop_sequences") is not None:
        request.stop = [as_str(s, f"stop_sequences[{i}]") for i, s in enumerate(as_list(payload["stop_sequences"], "stop_sequences"))]
    request.stream = payload.get("stream") is not None and as_bool(payload["stream"], "stream")
    for i, tool in enumerate(as_list(payload.get("tools") or [], "tools")):
        tool = as_dict(tool, f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(f"server tool {tool.get('type')!r} cannot be translated", f"tools[{i}].type")
        request.tools.append(
            c.Tool(
                as_str(tool.get("name"), f"tools[{i}].name"),
                as_dict(tool.get("input_schema"), f"tools[{i}].input_schema"),
                opt_str(tool.get("description"), f"tools[{i}].description"),
                None if tool.get("strict") is None else as_bool(tool["strict"], f"tools[{i}].strict"),
            )
        )
    if payload.get("tool_choice") is not None:
        choice = as_dict(payload["tool_choice"], "tool_choice")
        if choice.get("type") not in _CHOICES:
            raise TranslationError("must be one of auto, any, tool, none", "tool_choice.type")
        name = as_str(choice.get("name"), "tool_choice.name") if choice["type"] == "tool" else None
        disable = choice.get("disable_parallel_tool_use")
        request.tool_choice = c.ToolChoice(choice["type"], name, disable is not None and as_bool(disable, "tool_choice.disable_parallel_tool_use"))
    metadata = payload.get("metadata")
    if metadata is not None:
        request.user = opt_str(as_dict(metadata, "metadata").get("user_id"), "metadata.user_id")
    output_config = payload.get("output_config")
    if output_config is not None:
        output_config = as_dict(output_config, "output_config")
        if output_config.get("format") is not None:
            fmt = as_dict(output_config["format"], "output_config.format")
            if fmt.get("type") != "json_schema":
                raise TranslationError("must be json_schema", "output_config.format.type")
            request.response_format = c.ResponseFormat("json_schema", as_dict(fmt.get("schema"), "output_config.format.schema"))
        if output_config.get("effort") is not None:
            request.reasoning_effort = as_str(output_config["effort"], "output_config.effort")
    return request


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
    if request.stream:
        out["stream"] = True
    return out


_USAGE_KEYS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("cache_write", "cache_creation_input_tokens"),
)


def _update_usage(usage: c.Usage, raw: Any) -> c.Usage:
    """``usage`` with the counts present in ``raw`` (an Anthropic usage object)."""
    if isinstance(raw, dict):
        for name, key in _USAGE_KEYS:
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(usage, name, value)
    return usage


def _usage(raw: Any) -> c.Usage:
    return _update_usage(c.Usage(), raw)


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
    reason = body.get("stop_reason")
    stop = body.get("stop_sequence")
    return c.Response(
        id=body["id"] if isinstance(body.get("id"), str) else "",
        model=body["model"] if isinstance(body.get("model"), str) else "",
        content=content,
        stop_reason=reason if reason in c.STOP_REASONS else ("max_tokens" if reason == "model_context_window_exceeded" else "end_turn"),
        stop_sequence=stop if isinstance(stop, str) else None,
        usage=_usage(body.get("usage")),
    )


def response_from_canonical(response: c.Response, model: str) -> dict[str, Any]:
    return {
        "id": response.id if response.id.startswith("msg_") else "msg_" + response.id,
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
        kind = error.get("type") if isinstance(error.get("type"), str) else anthropic_error_type(status)
        return c.Error(kind, error["message"], kind)
    text = body.decode("utf-8", "replace").strip()
    return c.Error(anthropic_error_type(status), text or f"upstream HTTP {status}")


def error_body(status: int, error: c.Error) -> bytes:
    return orjson.dumps(anthropic_error_object(anthropic_error_type(status), error.message))


class StreamDecoder:
    """Anthropic SSE events -> canonical events."""

    def __init__(self) -> None:
        self._usage = c.Usage()
        self._ended = False

    def feed(self, event: Optional[str], data: str) -> list[c.Event]:
        if self._ended:
            return []
        try:
            payload = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return self._fail(c.Error("api_error", "the upstream sent an invalid stream event"))
        kind = payload.get("type") or event
        index = payload.get("index")
        if kind == "message_start":
            message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
            self._usage = _usage(message.get("usage"))
            ident = message.get("id") if isinstance(message.get("id"), str) else ""
            model = message.get("model") if isinstance(message.get("model"), str) else ""
            return [c.MessageStart(ident, model, replace(self._usage))]
        if kind == "content_block_start" and isinstance(index, int):
            block = payload.get("content_block")
            if not isinstance(block, dict) or block.get("type") not in ("text", "tool_use", "thinking"):
                return []
            out: list[c.Event] = []
            if block["type"] == "tool_use":
                start = {"type": "tool_use", "id": block.get("id") or "", "name": block.get("name") or "", "input": {}}
                out.append(c.BlockStart(index, start))
                if block.get("input"):
                    out.append(c.ToolArgumentsDelta(index, orjson.dumps(block["input"]).decode()))
            elif block["type"] == "text":
                out.append(c.BlockStart(index, {"type": "text", "text": ""}))
                if isinstance(block.get("text"), str) and block["text"]:
                    out.append(c.TextDelta(index, block["text"]))
            else:
                out.append(c.BlockStart(index, {"type": "thinking", "thinking": ""}))
            return out
        if kind == "content_block_delta" and isinstance(index, int):
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                return [c.TextDelta(index, delta["text"])]
            if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str) and delta["partial_json"]:
                return [c.ToolArgumentsDelta(index, delta["partial_json"])]
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                return [c.ThinkingDelta(index, delta["thinking"])]
            return []
        if kind == "content_block_stop" and isinstance(index, int):
            return [c.BlockStop(index)]
        if kind == "message_delta":
            _update_usage(self._usage, payload.get("usage"))
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            reason = delta.get("stop_reason")
            if reason is None:
                return []
            stop = delta.get("stop_sequence")
            reason = reason if reason in c.STOP_REASONS else "end_turn"
            return [c.MessageDelta(reason, replace(self._usage), stop if isinstance(stop, str) else None)]
        if kind == "message_stop":
            self._ended = True
            return [c.MessageStop()]
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            kind = error.get("type") if isinstance(error.get("type"), str) else "api_error"
            message = error.get("message") if isinstance(error.get("message"), str) and error["message"] else "upstream stream error"
            return self._fail(c.Error(kind, message, kind))
        return []

    def finish(self) -> list[c.Event]:
        return [] if self._ended else self._fail(c.Error("api_error", c.EARLY_END))

    def _fail(self, error: c.Error) -> list[c.Event]:
        self._ended = True
        return [c.StreamError(error)]


class StreamEncoder:
    """Canonical events -> Anthropic SSE bytes."""

    def encode(self, event: c.Event) -> bytes:
        if isinstance(event, c.MessageStart):
            message = {
                "id": event.id if event.id.startswith("msg_") else "msg_" + event.id,
                "type": "message",
                "role": "assistant",
                "model": event.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_body(event.usage),
            }
            return anthropic_event({"type": "message_start", "message": message})
        if isinstance(event, c.BlockStart):
            return anthropic_event({"type": "content_block_start", "index": event.index, "content_block": event.block})
        if isinstance(event, c.TextDelta):
            delta: dict[str, Any] = {"type": "text_delta", "text": event.text}
        elif isinstance(event, c.ToolArgumentsDelta):
            delta = {"type": "input_json_delta", "partial_json": event.partial_json}
        elif isinstance(event, c.ThinkingDelta):
            delta = {"type": "thinking_delta", "thinking": event.thinking}
        elif isinstance(event, c.BlockStop):
            return anthropic_event({"type": "content_block_stop", "index": event.index})
        elif isinstance(event, c.MessageDelta):
            body = {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence}
            return anthropic_event({"type": "message_delta", "delta": body, "usage": usage_body(event.usage)})
        elif isinstance(event, c.MessageStop):
            return anthropic_event({"type": "message_stop"})
        else:
            return anthropic_event(anthropic_error_object(event.error.type, event.error.message))
        return anthropic_event({"type": "content_block_delta", "index": event.index, "delta": delta})
