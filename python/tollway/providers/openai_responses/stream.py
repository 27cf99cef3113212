"""Canonical stream events -> the typed Responses SSE events.

``response.created`` and ``response.in_progress`` first; per text block a
message item (``output_item.added``, ``content_part.added``,
``output_text.delta``..., ``output_text.done``, ``content_part.done``,
``output_item.done``); per tool call a ``function_call`` item with its
``function_call_arguments.delta``/``.done``; per thinking block a ``reasoning``
item; then ``response.completed`` (or ``response.incomplete``) carrying the whole
response and its usage. An upstream error is an ``error`` event followed by
``response.failed``. Every event has its ``sequence_number``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import orjson

from tollway.providers import canonical as c
from tollway.providers.openai_responses.convert import (
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    status_of,
)
from tollway.translate.sse import frame

# Anthropic error types (the canonical vocabulary) -> Responses error codes.
_CODES = {
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "server_error",
    "invalid_request_error": "invalid_prompt",
}


class _Item:
    __slots__ = ("output_index", "item_id", "block", "parts")

    def __init__(self, output_index: int, item_id: str, block: c.Block) -> None:
        self.output_index = output_index
        self.item_id = item_id
        self.block = block
        self.parts: list[str] = []


class StreamEncoder:
    """Feed it canonical events; send what it returns. ``final`` is the finished
    response object (completed or incomplete) once the stream ended well."""

    def __init__(self, request: dict[str, Any], response_id: str, model: str) -> None:
        self.request = request
        self.response_id = response_id
        self.model = model
        self.final: Optional[dict[str, Any]] = None
        self.created_at = int(time.time())
        self._sequence = 0
        self._created = False
        self._items: dict[int, _Item] = {}  # canonical block index -> item
        self._done: list[tuple[int, dict[str, Any]]] = []
        self._stop = "end_turn"
        self._usage: Optional[c.Usage] = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return frame(kind, orjson.dumps(data))

    def _response(
        self, status: str, incomplete: Optional[str] = None, error: Optional[dict[str, Any]] = None
    ) -> dict[str, Any]:
        output = [item for _, item in sorted(self._done, key=lambda pair: pair[0])]
        usage = self._usage if status != "in_progress" else None
        return response_object(
            self.request, self.response_id, self.model, output, status, usage, self.created_at, incomplete, error
        )

    def _start(self) -> bytes:
        if self._created:
            return b""
        self._created = True
        response = self._response("in_progress")
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def encode(self, event: c.Event) -> bytes:
        out = self._start()
        if isinstance(event, c.BlockStart):
            return out + self._block_start(event)
        if isinstance(event, (c.TextDelta, c.ToolArgumentsDelta, c.ThinkingDelta)):
            item = self._items.get(event.index)
            return out + (self._delta(item, event) if item is not None else b"")
        if isinstance(event, c.BlockStop):
            item = self._items.pop(event.index, None)
            return out + (self._block_stop(item) if item is not None else b"")
        if isinstance(event, c.MessageDelta):
            self._stop, self._usage = event.stop_reason, event.usage
            return out
        if isinstance(event, c.MessageStop):
            for index in list(self._items):
                out += self._block_stop(self._items.pop(index))
            status, incomplete = status_of(self._stop)
            self.final = self._response(status, incomplete)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            return out + self._event(kind, response=self.final)
        if isinstance(event, c.StreamError):
            code = _CODES.get(event.error.type, "server_error")
            failed = self._response("failed", error={"code": code, "message": event.error.message})
            out += self._event("error", code=code, message=event.error.message, param=None)
            return out + self._event("response.failed", response=failed)
        return out  # MessageStart: response.created already says it

    def _block_start(self, event: c.BlockStart) -> bytes:
        kind = event.block.get("type")
        output_index = len(self._done) + len(self._items)
        if kind == "text":
            item = _Item(output_index, new_id("msg_"), event.block)
            self._items[event.index] = item
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            return self._event(
                "response.output_item.added",
                output_index=output_index,
                item=message_item(item.item_id, "", "in_progress"),
            ) + self._event(
                "response.content_part.added",
                item_id=item.item_id,
                output_index=output_index,
                content_index=0,
                part=part,
            )
        if kind == "tool_use":
            item = _Item(output_index, new_id("fc_"), event.block)
            self._items[event.index] = item
            added = function_call_item(item.item_id, event.block, "", "in_progress")
            return self._event("response.output_item.added", output_index=output_index, item=added)
        if kind == "thinking":
            item = _Item(output_index, new_id("rs_"), event.block)
            self._items[event.index] = item
            added = {"id": item.item_id, "type": "reasoning", "summary": [], "content": []}
            return self._event("response.output_item.added", output_index=output_index, item=added)
        return b""

    def _delta(self, item: _Item, event: c.Event) -> bytes:
        at = {"item_id": item.item_id, "output_index": item.output_index}
        if isinstance(event, c.TextDelta) and item.block.get("type") == "text":
            item.parts.append(event.text)
            return self._event("response.output_text.delta", **at, content_index=0, delta=event.text, logprobs=[])
        if isinstance(event, c.ToolArgumentsDelta) and item.block.get("type") == "tool_use":
            item.parts.append(event.partial_json)
            return self._event("response.function_call_arguments.delta", **at, delta=event.partial_json)
        if isinstance(event, c.ThinkingDelta) and item.block.get("type") == "thinking":
            item.parts.append(event.thinking)
            return self._event("response.reasoning_text.delta", **at, content_index=0, delta=event.thinking)
        return b""

    def _block_stop(self, item: _Item) -> bytes:
        at = {"item_id": item.item_id, "output_index": item.output_index}
        whole = "".join(item.parts)
        kind = item.block.get("type")
        if kind == "text":
            done = message_item(item.item_id, whole)
            out = self._event("response.output_text.done", **at, content_index=0, text=whole, logprobs=[])
            out += self._event("response.content_part.done", **at, content_index=0, part=done["content"][0])
        elif kind == "tool_use":
            arguments = whole or "{}"
            done = function_call_item(item.item_id, item.block, arguments)
            out = self._event(
                "response.function_call_arguments.done", **at, name=item.block["name"], arguments=arguments
            )
        else:
            done = reasoning_item(item.item_id, whole)
            out = self._event("response.reasoning_text.done", **at, content_index=0, text=whole)
        self._done.append((item.output_index, done))
        return out + self._event("response.output_item.done", output_index=item.output_index, item=done)
