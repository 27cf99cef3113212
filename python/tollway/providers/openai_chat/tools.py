"""Tools, tool calls and their results in OpenAI Chat Completions requests, responses and streams."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Optional

import orjson

from tollway.errors import error_object
from tollway.providers.tool_format import PendingCall, completed_event, parse_arguments
from tollway.translate.sse import frame

if TYPE_CHECKING:
    from tollway.tools.dispatch import ToolResult
    from tollway.tools.store import Tool


class OpenAITools:
    kind = "openai"

    def definition(self, tool: "Tool") -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
        }

    def definition_name(self, entry: Any) -> Optional[str]:
        return (entry.get("function") or {}).get("name") if isinstance(entry, dict) else None

    def calls_in_body(self, body: dict[str, Any]) -> list[PendingCall]:
        out = []
        for call in _message(body).get("tool_calls") or ():
            fn = call.get("function") or {}
            arguments = fn.get("arguments") or "{}"
            out.append(PendingCall(call.get("id", ""), fn.get("name", ""), parse_arguments(arguments), arguments))
        return out

    def body_text(self, body: dict[str, Any]) -> str:
        content = _message(body).get("content")
        return content if isinstance(content, str) else ""

    def assistant_turn(
        self, text: str, calls: Iterable[PendingCall], body: Optional[dict[str, Any]] = None
    ) -> dict[str, Any]:
        calls = list(calls)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]
        return message

    def result_messages(self, results: list["ToolResult"]) -> list[dict[str, Any]]:
        return [{"role": "tool", "tool_call_id": r.call_id, "content": r.content_text()} for r in results]

    def strip_calls(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
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

    def forbid_tools(self, payload: dict[str, Any]) -> None:
        payload["tool_choice"] = "none"
        payload.pop("parallel_tool_calls", None)

    def loop_writer(self, registered: set[str], model: str, request: dict[str, Any]) -> "OpenAILoopWriter":
        options = request.get("stream_options")
        return OpenAILoopWriter(registered, model, isinstance(options, dict) and options.get("include_usage") is True)


def _message(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices") or [{}]
    return choices[0].get("message") or {}


class OpenAILoopWriter:
    """A looped stream as one ``chat.completion.chunk`` stream (see ``tool_format.LoopWriter``)."""

    def __init__(self, registered: set[str], model: str, include_usage: bool) -> None:
        self.registered = registered
        self.model = model
        self.include_usage = include_usage
        self.id: Optional[str] = None
        self.created = int(time.time())
        self.turn = 0
        self.next_index = 0
        self.index_map: dict[int, Optional[int]] = {}
        self.finish_reason: Optional[str] = None
        self.usage: dict[str, Any] = {}

    def begin_turn(self) -> None:
        self.turn += 1
        self.index_map = {}
        self.finish_reason = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def feed(self, event: Optional[str], data: str) -> bytes:
        if data.strip() == "[DONE]":
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if "error" in obj:
            return frame(None, data.encode())
        if self.id is None:
            self.id = obj.get("id")
            self.created = obj.get("created", self.created)
            self.model = obj.get("model", self.model)
        obj["id"] = self.id
        choices = obj.get("choices") or []
        if not choices:
            if obj.get("usage"):
                self._add_usage(obj["usage"])
            return b""
        choice = choices[0]
        delta = choice.get("delta") or {}
        if self.turn > 1:
            delta.pop("role", None)
        if delta.get("tool_calls"):
            kept = []
            for call in delta["tool_calls"]:
                index = call.get("index", 0)
                if index not in self.index_map:
                    name = (call.get("function") or {}).get("name")
                    if name in self.registered:
                        self.index_map[index] = None
                    else:
                        self.index_map[index] = self.next_index
                        self.next_index += 1
                ours = self.index_map[index]
                if ours is not None:
                    kept.append({**call, "index": ours})
            if kept:
                delta["tool_calls"] = kept
            else:
                delta.pop("tool_calls")
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            choice["finish_reason"] = None
        if obj.get("usage"):
            self._add_usage(obj.pop("usage"))
        if not delta or delta == {"content": ""} and self.turn > 1:
            return b""
        choice["delta"] = delta
        return frame(None, orjson.dumps(obj))

    def _add_usage(self, usage: dict[str, Any]) -> None:
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.usage[name] = self.usage.get(name, 0) + int(usage.get(name) or 0)

    def end(self, stop_reason: Optional[str] = None) -> bytes:
        finish = stop_reason or self.finish_reason or "stop"
        if self.next_index == 0 and finish == "tool_calls":
            finish = "stop"  # the only calls were the gateway's
        out = frame(
            None, orjson.dumps(self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]))
        )
        if self.include_usage:
            out += frame(None, orjson.dumps(self._chunk([], usage=self.usage or None)))
        return out + b"data: [DONE]\n\n"

    def tool_started(self, call: PendingCall, tool_id: str) -> bytes:
        info = {"call_id": call.id, "name": call.name, "tool_id": tool_id, "input": call.input}
        return frame("tool_call.started", orjson.dumps(self._chunk([], type="tool_call.started", tool_call=info)))

    def tool_completed(self, result: "ToolResult") -> bytes:
        return frame(
            "tool_call.completed",
            orjson.dumps(self._chunk([], type="tool_call.completed", tool_call=completed_event(result))),
        )

    def error(self, status: int, message: str, code: Optional[str] = None) -> bytes:
        return frame(None, orjson.dumps(error_object("openai", status, message, code)))


FORMAT = OpenAITools()
