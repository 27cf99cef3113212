"""Tools, tool calls and their results in Anthropic Messages requests, responses and streams.

Also the canonical shape: threads store Anthropic content blocks (``result_blocks``,
``assistant_turn``), whatever the provider of the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional

import orjson

from tollway.errors import error_object
from tollway.providers.tool_format import PendingCall, completed_event
from tollway.translate.sse import frame

if TYPE_CHECKING:
    from tollway.tools.dispatch import ToolResult
    from tollway.tools.store import Tool


class AnthropicTools:
    kind = "anthropic"

    def definition(self, tool: "Tool") -> dict[str, Any]:
        return {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}

    def definition_name(self, entry: Any) -> Optional[str]:
        return entry.get("name") if isinstance(entry, dict) else None

    def calls_in_body(self, body: dict[str, Any]) -> list[PendingCall]:
        return [
            PendingCall(
                b.get("id", ""), b.get("name", ""), b.get("input") or {}, orjson.dumps(b.get("input") or {}).decode()
            )
            for b in body.get("content") or ()
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]

    def body_text(self, body: dict[str, Any]) -> str:
        return "".join(
            b.get("text", "") for b in body.get("content") or () if isinstance(b, dict) and b.get("type") == "text"
        )

    def assistant_turn(
        self, text: str, calls: Iterable[PendingCall], body: Optional[dict[str, Any]] = None
    ) -> dict[str, Any]:
        """From a whole body the content goes back as it came (thinking blocks and
        their signatures included, as the API requires when thinking uses tools)."""
        if body is not None:
            return {"role": "assistant", "content": body.get("content") or []}
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in calls]
        return {"role": "assistant", "content": blocks}

    def result_messages(self, results: list["ToolResult"]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.result_blocks(results)}]

    def result_blocks(self, results: list["ToolResult"]) -> list[dict[str, Any]]:
        """``tool_result`` blocks; also what threads store."""
        blocks = []
        for r in results:
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content_text()}
            if r.is_error:
                block["is_error"] = True
            blocks.append(block)
        return blocks

    def strip_calls(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
        content = [b for b in body.get("content") or () if not (b.get("type") == "tool_use" and b.get("name") in names)]
        body["content"] = content
        if body.get("stop_reason") == "tool_use" and not any(b.get("type") == "tool_use" for b in content):
            body["stop_reason"] = "end_turn"
        return body

    def forbid_tools(self, payload: dict[str, Any]) -> None:
        payload["tool_choice"] = {"type": "none"}

    def loop_writer(self, registered: set[str], model: str, request: dict[str, Any]) -> "AnthropicLoopWriter":
        return AnthropicLoopWriter(registered)  # Anthropic streams always carry usage


class AnthropicLoopWriter:
    """A looped stream as one Messages event stream (see ``tool_format.LoopWriter``)."""

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
        delta = self.held_delta or {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {},
        }
        if stop_reason is not None:
            delta.setdefault("delta", {})["stop_reason"] = stop_reason
        delta.setdefault("usage", {})["output_tokens"] = self.output_tokens
        return frame("message_delta", orjson.dumps(delta)) + frame("message_stop", b'{"type":"message_stop"}')

    def tool_started(self, call: PendingCall, tool_id: str) -> bytes:
        body = {
            "type": "tool_call.started",
            "call_id": call.id,
            "name": call.name,
            "tool_id": tool_id,
            "input": call.input,
        }
        return frame("tool_call.started", orjson.dumps(body))

    def tool_completed(self, result: "ToolResult") -> bytes:
        return frame("tool_call.completed", orjson.dumps(completed_event(result)))

    def error(self, status: int, message: str, code: Optional[str] = None) -> bytes:
        return frame("error", orjson.dumps(error_object("anthropic", status, message, code)))


FORMAT = AnthropicTools()
