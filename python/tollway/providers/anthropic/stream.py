"""Anthropic Messages streams <-> canonical stream events (providers/canonical.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import orjson

from tollway.errors import error_object
from tollway.providers import canonical as c
from tollway.providers.anthropic.convert import stop_reason, update_usage, usage_body, usage_of
from tollway.translate.ids import anthropic_message_id
from tollway.translate.sse import anthropic_event


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
            self._usage = usage_of(message.get("usage"))
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
            if (
                delta.get("type") == "input_json_delta"
                and isinstance(delta.get("partial_json"), str)
                and delta["partial_json"]
            ):
                return [c.ToolArgumentsDelta(index, delta["partial_json"])]
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                return [c.ThinkingDelta(index, delta["thinking"])]
            return []
        if kind == "content_block_stop" and isinstance(index, int):
            return [c.BlockStop(index)]
        if kind == "message_delta":
            update_usage(self._usage, payload.get("usage"))
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            reason = delta.get("stop_reason")
            if reason is None:
                return []
            stop = delta.get("stop_sequence")
            reason = stop_reason(reason)
            return [c.MessageDelta(reason, replace(self._usage), stop if isinstance(stop, str) else None)]
        if kind == "message_stop":
            self._ended = True
            return [c.MessageStop()]
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            kind = error.get("type") if isinstance(error.get("type"), str) else "api_error"
            message = (
                error.get("message")
                if isinstance(error.get("message"), str) and error["message"]
                else "upstream stream error"
            )
            return self._fail(c.Error(kind, message, kind))
        return []

    def finish(self) -> list[c.Event]:
        return [] if self._ended else self._fail(c.Error("api_error", c.EARLY_END))

    def _fail(self, error: c.Error) -> list[c.Event]:
        self._ended = True
        return [c.StreamError(error)]


class StreamEncoder:
    """Canonical events -> Anthropic SSE bytes, as the model ``model``."""

    def __init__(self, model: str) -> None:
        self.model = model

    def encode(self, event: c.Event) -> bytes:
        if isinstance(event, c.MessageStart):
            message = {
                "id": anthropic_message_id(event.id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
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
            return anthropic_event(error_object("anthropic", 500, event.error.message, kind=event.error.type))
        return anthropic_event({"type": "content_block_delta", "index": event.index, "delta": delta})
