"""One client stream out of the several model turns of a tool loop.

The client sees a single message in its own format: the text deltas of every
turn, its own tool calls, and the gateway's tool activity as events of their own
(``tool_call.started`` / ``tool_call.completed``). The calls of registered tools,
the intermediate stops and the repeated starts are left out; the final stop (and
usage, summed over the turns) comes once, at the very end.

Writers are fed the decoded SSE events of each turn in the client's format
(already translated when the model is the other provider's).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import orjson

from tollway.errors import error_object
from tollway.tools.dispatch import ToolResult
from tollway.tools.calls import PendingCall
from tollway.translate.sse import frame


class AnthropicLoopWriter:
    def __init__(self, registered: set[str]) -> None:
        self.registered = registered
        self.started = False
        self.next_index = 0
        self.index_map: dict[int, Optional[int]] = {}  # upstream block index -> ours (None: hidden)
        self.held_delta: Optional[dict[str, Any]] = None
        self.output_tokens = 0
        self.input_tokens: Optional[int] = None

    def begin_turn(self) -> None:
        self.index_map = {}
        self.held_delta = None

    def feed(self, event: Optional[str], data: str) -> bytes:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "message_start":
            if self.started:
                return b""
            self.started = True
            return frame("message_start", data.encode())
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            index = obj.get("index", 0)
            if block.get("type") == "tool_use" and block.get("name") in self.registered:
                self.index_map[index] = None
                return b""
            self.index_map[index] = self.next_index
            self.next_index += 1
            obj["index"] = self.index_map[index]
            return frame(kind, orjson.dumps(obj))
        if kind in ("content_block_delta", "content_block_stop"):
            ours = self.index_map.get(obj.get("index", 0))
            if ours is None:
                return b""
            obj["index"] = ours
            return frame(kind, orjson.dumps(obj))
        if kind == "message_delta":
            usage = obj.get("usage") or {}
            self.output_tokens += int(usage.get("output_tokens") or 0)
            self.held_delta = obj
            return b""
        if kind == "message_stop":
            return b""
        if kind == "error":
            return frame("error", data.encode())
        return frame(event or kind, data.encode())  # ping and anything new: as is

    def end(self, stop_reason: Optional[str] = None) -> bytes:
        """The final stop, once: the last turn's message_delta with the usage of all turns."""
        delta = self.held_delta or {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {}}
        if stop_reason is not None:
            delta.setdefault("delta", {})["stop_reason"] = stop_reason
        delta.setdefault("usage", {})["output_tokens"] = self.output_tokens
        return frame("message_delta", orjson.dumps(delta)) + frame("message_stop", b'{"type":"message_stop"}')

    def tool_started(self, call: PendingCall, tool_id: str) -> bytes:
        body = {"type": "tool_call.started", "call_id": call.id, "name": call.name, "tool_id": tool_id, "input": call.input}
        return frame("tool_call.started", orjson.dumps(body))

    def tool_completed(self, result: ToolResult) -> bytes:
        return frame("tool_call.completed", orjson.dumps(_completed(result)))

    def error(self, status: int, message: str, code: Optional[str] = None) -> bytes:
        return frame("error", orjson.dumps(error_object("anthropic", status, message, code)))


class OpenAILoopWriter:
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
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices, **extra}

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
        out = frame(None, orjson.dumps(self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])))
        if self.include_usage:
            out += frame(None, orjson.dumps(self._chunk([], usage=self.usage or None)))
        return out + b"data: [DONE]\n\n"

    def tool_started(self, call: PendingCall, tool_id: str) -> bytes:
        info = {"call_id": call.id, "name": call.name, "tool_id": tool_id, "input": call.input}
        return frame("tool_call.started", orjson.dumps(self._chunk([], type="tool_call.started", tool_call=info)))

    def tool_completed(self, result: ToolResult) -> bytes:
        return frame("tool_call.completed", orjson.dumps(self._chunk([], type="tool_call.completed", tool_call=_completed(result))))

    def error(self, status: int, message: str, code: Optional[str] = None) -> bytes:
        return frame(None, orjson.dumps(error_object("openai", status, message, code)))


def _completed(result: ToolResult) -> dict[str, Any]:
    return {
        "type": "tool_call.completed",
        "call_id": result.call_id,
        "name": result.tool_name,
        "tool_id": result.tool_id,
        "duration_ms": result.duration_ms,
        "is_error": result.is_error,
        "attempts": result.attempts,
    }
