"""Tool calls and their results in each provider's request/response shape.

The loop runs in the provider's shape: it reads the tool calls of a model turn
(from a whole response body or from what the stream teed), appends the
assistant's message and the results to the request, and asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional

import orjson

if TYPE_CHECKING:
    from tollway._core import StreamOutcome
    from tollway.tools.dispatch import ToolResult
    from tollway.tools.store import Tool


@dataclass(slots=True)
class PendingCall:
    id: str
    name: str
    input: Any
    arguments: str  # the raw JSON text the model produced


def _parse(arguments: str) -> Any:
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}


def calls_in_body(kind: str, body: dict[str, Any]) -> list[PendingCall]:
    """The tool calls of a whole (non-stream) response."""
    if kind == "openai":
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        out = []
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            arguments = fn.get("arguments") or "{}"
            out.append(PendingCall(call.get("id", ""), fn.get("name", ""), _parse(arguments), arguments))
        return out
    return [
        PendingCall(b.get("id", ""), b.get("name", ""), b.get("input") or {}, orjson.dumps(b.get("input") or {}).decode())
        for b in body.get("content") or ()
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


def calls_in_outcome(outcome: "StreamOutcome") -> list[PendingCall]:
    """The tool calls a stream produced (assembled by the Rust tee, the same for both providers)."""
    return [
        PendingCall(c.get("id") or "", c.get("name") or "", _parse(c.get("arguments") or "{}"), c.get("arguments") or "{}")
        for c in orjson.loads(outcome.tool_calls_json or "[]")
    ]


def assistant_turn(kind: str, text: str, calls: Iterable[PendingCall], body: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The assistant's message to append to the request before the results.

    From a whole Anthropic body the content goes back as it came (thinking blocks
    and their signatures included, as the API requires when thinking uses tools).
    """
    calls = list(calls)
    if kind == "openai":
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]
        return message
    if body is not None:
        return {"role": "assistant", "content": body.get("content") or []}
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in calls]
    return {"role": "assistant", "content": blocks}


def body_text(kind: str, body: dict[str, Any]) -> str:
    if kind == "openai":
        choices = body.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""
    return "".join(b.get("text", "") for b in body.get("content") or () if isinstance(b, dict) and b.get("type") == "text")


def result_messages(kind: str, results: list["ToolResult"]) -> list[dict[str, Any]]:
    """The results, as the provider expects them right after the assistant's message."""
    if kind == "openai":
        return [{"role": "tool", "tool_call_id": r.call_id, "content": r.content_text()} for r in results]
    return [{"role": "user", "content": result_blocks(results)}]


def result_blocks(results: list["ToolResult"]) -> list[dict[str, Any]]:
    """Canonical (Anthropic) tool_result blocks; also what threads store."""
    blocks = []
    for r in results:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content_text()}
        if r.is_error:
            block["is_error"] = True
        blocks.append(block)
    return blocks


def add_definitions(kind: str, payload: dict[str, Any], tools: list["Tool"]) -> None:
    """Offer the registered tools to the model next to the request's own ones."""
    own = payload.get("tools") or []
    names = {(t.get("function") or {}).get("name") if kind == "openai" else t.get("name") for t in own if isinstance(t, dict)}
    clash = sorted(names & {t.name for t in tools})
    if clash:
        from tollway.http.core import HTTPError

        raise HTTPError(400, f"the request's own tools and tool_ids both name {clash[0]!r}", param="tool_ids")
    defs = [t.openai_definition() if kind == "openai" else t.anthropic_definition() for t in tools]
    payload["tools"] = list(own) + defs


def forbid_tools(kind: str, payload: dict[str, Any]) -> None:
    """Last allowed turn: the model must answer in text."""
    payload["tool_choice"] = "none" if kind == "openai" else {"type": "none"}
    if kind == "openai":
        payload.pop("parallel_tool_calls", None)


def strip_calls(kind: str, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A response without the calls of registered tools (the gateway does not run them here)."""
    if kind == "openai":
        for choice in body.get("choices") or ():
            message = choice.get("message") or {}
            calls = [c for c in message.get("tool_calls") or () if (c.get("function") or {}).get("name") not in names]
            if calls:
                message["tool_calls"] = calls
            else:
                message.pop("tool_calls", None)
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "stop"
        return body
    content = [b for b in body.get("content") or () if not (b.get("type") == "tool_use" and b.get("name") in names)]
    body["content"] = content
    if body.get("stop_reason") == "tool_use" and not any(b.get("type") == "tool_use" for b in content):
        body["stop_reason"] = "end_turn"
    return body
