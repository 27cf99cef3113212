"""The Responses format as a call's target: canonical -> a Responses request, and a
Responses response, error or stream -> canonical.

For clients of another format (Chat, Messages, threads) calling a model whose
provider speaks only Responses. The request is sent with ``store: false``: the
conversation is the client's (or the gateway's thread), not the provider's.
``reasoning`` output items are not carried back (their content is encrypted);
their tokens still count in the usage. Stop sequences have no Responses
equivalent and raise TranslationError.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.providers import canonical as c
from tollway.providers.openai_responses.convert import item_to_message
from tollway.translate.errors import TranslationError

_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_STOPS = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}


def _source_url(block: c.Block, param: str) -> str:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if (
        source.get("type") == "base64"
        and isinstance(source.get("media_type"), str)
        and isinstance(source.get("data"), str)
    ):
        return f"data:{source['media_type']};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise TranslationError(f"source type {source.get('type')!r} cannot be sent to this model", f"{param}.source.type")


def _part(block: c.Block, param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "input_text", "text": block["text"]}
    if kind == "image":
        return {"type": "input_image", "image_url": _source_url(block, param), "detail": "auto"}
    if kind == "document":
        part = {"type": "input_file", "file_data": _source_url(block, param)}
        if isinstance(block.get("title"), str):
            part["filename"] = block["title"]
        return part
    raise TranslationError(f"content block type {kind!r} cannot be sent to this model", f"{param}.type")


def _items(message: c.Message, param: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts:
            if message.role == "assistant":
                text = "".join(p["text"] for p in parts)
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                )
            else:
                items.append({"type": "message", "role": "user", "content": list(parts)})
            parts.clear()

    for i, block in enumerate(message.content):
        kind = block.get("type")
        if kind == "tool_use":
            flush()
            arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
            items.append(
                {
                    "type": "function_call",
                    "call_id": str(block.get("id", "")),
                    "name": str(block.get("name", "")),
                    "arguments": arguments,
                }
            )
        elif kind == "tool_result":
            flush()
            content = block.get("content", "")
            output: Any = (
                content
                if isinstance(content, str)
                else [_part(b, f"{param}[{i}].content") for b in content if isinstance(b, dict)]
            )
            if block.get("is_error") is True:
                output = "Error: " + (output if isinstance(output, str) else "".join(p.get("text", "") for p in output))
            items.append(
                {"type": "function_call_output", "call_id": str(block.get("tool_use_id", "")), "output": output}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        elif message.role == "assistant" and kind != "text":
            raise TranslationError(
                f"assistant content block type {kind!r} cannot be sent to this model", f"{param}[{i}].type"
            )
        else:
            parts.append(_part(block, f"{param}[{i}]"))
    flush()
    return items


def from_canonical(request: c.Request, upstream_model: str) -> dict[str, Any]:
    """The Responses request body for a canonical Request."""
    if request.stop:
        raise TranslationError("stop sequences are not available on this model", "stop")
    out: dict[str, Any] = {"model": upstream_model, "input": [], "store": False}
    for i, message in enumerate(request.messages):
        out["input"].extend(_items(message, f"messages[{i}].content"))
    if request.system:
        out["instructions"] = request.system
    if request.max_tokens is not None:
        out["max_output_tokens"] = request.max_tokens
    for key in ("temperature", "top_p"):
        if getattr(request, key) is not None:
            out[key] = getattr(request, key)
    if request.tools:
        out["tools"] = []
        for tool in request.tools:
            spec: dict[str, Any] = {"type": "function", "name": tool.name, "parameters": tool.input_schema}
            if tool.description is not None:
                spec["description"] = tool.description
            spec["strict"] = bool(tool.strict)
            out["tools"].append(spec)
        choice = request.tool_choice
        if choice is not None:
            out["tool_choice"] = (
                {"type": "function", "name": choice.name} if choice.type == "tool" else _CHOICES[choice.type]
            )
            if choice.disable_parallel and choice.type != "none":
                out["parallel_tool_calls"] = False
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    elif fmt is not None and fmt.type == "json_schema":
        spec = {"type": "json_schema", "name": fmt.name or "output", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        out["text"] = {"format": spec}
    if request.reasoning_effort in ("minimal", "low", "medium", "high"):
        out["reasoning"] = {"effort": request.reasoning_effort}
    if request.user:
        out["safety_identifier"] = request.user
    if request.stream:
        out["stream"] = True
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_to_canonical(raw: Any) -> c.Usage:
    usage = raw if isinstance(raw, dict) else {}
    prompt = _count(usage.get("input_tokens"))
    details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
    cached = min(_count(details.get("cached_tokens")), prompt)
    written = min(_count(details.get("cache_write_tokens")), prompt - cached)
    out_details = usage.get("output_tokens_details") if isinstance(usage.get("output_tokens_details"), dict) else {}
    return c.Usage(
        prompt - cached - written,
        _count(usage.get("output_tokens")),
        cached,
        written,
        _count(out_details.get("reasoning_tokens")),
    )


def outcome_stop_reason(raw: Any) -> str:
    """The canonical stop reason of a finished stream's status or incomplete reason."""
    return _STOPS.get(raw, "max_tokens" if raw == "incomplete" else "end_turn") if isinstance(raw, str) else "end_turn"


def stop_reason(body: dict[str, Any]) -> str:
    """The canonical stop reason of a response object (its status, and whether it called tools)."""
    details = body.get("incomplete_details") if isinstance(body.get("incomplete_details"), dict) else {}
    if body.get("status") == "incomplete":
        return _STOPS.get(details.get("reason"), "max_tokens")
    output = body.get("output") if isinstance(body.get("output"), list) else []
    return "tool_use" if any(isinstance(i, dict) and i.get("type") == "function_call" for i in output) else "end_turn"


def response_to_canonical(body: Any) -> c.Response:
    """A ``response`` object as a canonical Response."""
    if not isinstance(body, dict) or not isinstance(body.get("output"), list):
        raise TranslationError("upstream response has no output", "output")
    content: list[c.Block] = []
    for item in body["output"]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            content.append(
                {
                    "type": "tool_use",
                    "id": call_id if isinstance(call_id, str) else "",
                    "name": name if isinstance(name, str) else "",
                    "input": c.tool_input(item.get("arguments")),
                }
            )
        elif item.get("type") == "message":
            try:
                found = item_to_message({**item, "role": "assistant"}, "output")
            except TranslationError:
                continue
            if found is not None:
                content.extend(found[1])
    ident = body.get("id")
    model = body.get("model")
    return c.Response(
        ident if isinstance(ident, str) else "",
        model if isinstance(model, str) else "",
        content,
        stop_reason(body),
        usage=usage_to_canonical(body.get("usage")),
    )


class StreamDecoder:
    """Responses SSE events -> canonical events (one block per output item)."""

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}  # output_index -> block index
        self._ended = False

    def feed(self, event: Optional[str], data: str) -> list[c.Event]:
        if self._ended:
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return self._fail(c.Error("api_error", "the upstream sent an invalid stream event"))
        kind = payload.get("type") or event
        index = payload.get("output_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        if kind == "response.created":
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            return [c.MessageStart(str(response.get("id") or ""), str(response.get("model") or ""))]
        if (
            kind == "response.output_item.added"
            and index is not None
            and index not in self._blocks
            and isinstance(payload.get("item"), dict)
        ):
            item = payload["item"]
            if item.get("type") == "message":
                block: c.Block = {"type": "text", "text": ""}
            elif item.get("type") == "function_call":
                block = {
                    "type": "tool_use",
                    "id": str(item.get("call_id") or ""),
                    "name": str(item.get("name") or ""),
                    "input": {},
                }
            else:
                return []
            self._blocks[index] = len(self._blocks)
            out: list[c.Event] = [c.BlockStart(self._blocks[index], block)]
            if block["type"] == "tool_use" and isinstance(item.get("arguments"), str) and item["arguments"]:
                out.append(c.ToolArgumentsDelta(self._blocks[index], item["arguments"]))
            return out
        delta = payload.get("delta")
        if kind == "response.output_text.delta" and index in self._blocks and isinstance(delta, str) and delta:
            return [c.TextDelta(self._blocks[index], delta)]
        if (
            kind == "response.function_call_arguments.delta"
            and index in self._blocks
            and isinstance(delta, str)
            and delta
        ):
            return [c.ToolArgumentsDelta(self._blocks[index], delta)]
        if kind == "response.output_item.done" and index in self._blocks:
            return [c.BlockStop(self._blocks.pop(index))]
        if kind in ("response.completed", "response.incomplete"):
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            self._ended = True
            out = [c.BlockStop(block) for block in self._blocks.values()]
            self._blocks.clear()
            return out + [
                c.MessageDelta(stop_reason(response), usage_to_canonical(response.get("usage"))),
                c.MessageStop(),
            ]
        if kind in ("error", "response.failed"):
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            error = payload.get("error") if kind == "error" else response.get("error")
            error = error if isinstance(error, dict) else payload
            message = (
                error.get("message")
                if isinstance(error.get("message"), str) and error["message"]
                else "upstream stream error"
            )
            code = error.get("code") if isinstance(error.get("code"), str) else None
            kind = "rate_limit_error" if code == "rate_limit_exceeded" else "api_error"
            return self._fail(c.Error(kind, message, code))
        return []

    def finish(self) -> list[c.Event]:
        return [] if self._ended else self._fail(c.Error("api_error", c.EARLY_END))

    def _fail(self, error: c.Error) -> list[c.Event]:
        self._ended = True
        return [c.StreamError(error)]
