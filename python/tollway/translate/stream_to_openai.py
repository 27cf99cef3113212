"""An Anthropic Messages stream as OpenAI ``chat.completion.chunk`` events."""

from __future__ import annotations

import time
from typing import Any, Optional

import orjson

from tollway.errors import error_object, error_type, stream_error_type
from tollway.translate.ids import openai_completion_id, tool_call_id
from tollway.translate.sse import OPENAI_DONE, openai_data
from tollway.translate.stop_reasons import finish_reason
from tollway.translate.usage import openai_usage

EARLY_END = "the upstream stream ended early; the response is incomplete"


class AnthropicToOpenAIStream:
    """Feed it the upstream's SSE events in order; send what it returns to the client.

    Text and tool_use blocks become ``content`` and ``tool_calls`` deltas; thinking
    and server-tool blocks are skipped. With ``include_usage`` every chunk carries
    ``"usage": null`` and a last chunk with no choices carries the usage, as OpenAI does.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self._id = openai_completion_id(None)
        self._created = int(time.time())
        self._started = False
        self._tool_calls: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._usage: dict[str, Any] = {}
        self._ended = False  # [DONE] or an error sent: nothing more to say

    def feed(self, event: Optional[str], data: str) -> bytes:
        """Translate one upstream event."""
        if self._ended:
            return b""
        try:
            payload = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError:
            return self._error(error_type("openai", 502), "the upstream sent an invalid stream event")
        if not isinstance(payload, dict):
            return self._error(error_type("openai", 502), "the upstream sent an invalid stream event")
        kind = payload.get("type") or event
        if kind == "message_start":
            return self._message_start(payload.get("message"))
        if kind == "content_block_start":
            return self._block_start(payload.get("index"), payload.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(payload.get("index"), payload.get("delta"))
        if kind == "message_delta":
            return self._message_delta(payload.get("delta"), payload.get("usage"))
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            message = error.get("message")
            return self._error(
                stream_error_type("openai", error, "anthropic"),
                message if isinstance(message, str) and message else "upstream stream error",
                error.get("type") if isinstance(error.get("type"), str) else None,
            )
        return b""  # ping, content_block_stop, unknown events

    def finish(self) -> bytes:
        """The upstream ended: an error chunk if it ended before ``message_stop``."""
        if self._ended:
            return b""
        return self._error(error_type("openai", 502), EARLY_END)

    def _chunk(self, delta: Optional[dict[str, Any]], finish: Optional[str] = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = openai_usage(self._usage) if delta is None else None
        return openai_data(chunk)

    def _ensure_started(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _message_start(self, message: Any) -> bytes:
        if isinstance(message, dict):
            self._id = openai_completion_id(message.get("id"))
            if isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
        return self._ensure_started()

    def _block_start(self, index: Any, block: Any) -> bytes:
        if not isinstance(block, dict):
            return b""
        out = self._ensure_started()
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            out += self._chunk({"content": block["text"]})
        elif block.get("type") == "tool_use" and isinstance(index, int):
            call_index = len(self._tool_calls)
            self._tool_calls[index] = call_index
            tool_input = block.get("input")
            call = {
                "index": call_index,
                "id": block["id"] if isinstance(block.get("id"), str) else tool_call_id(),
                "type": "function",
                "function": {
                    "name": block.get("name") if isinstance(block.get("name"), str) else "",
                    "arguments": orjson.dumps(tool_input).decode() if tool_input else "",
                },
            }
            out += self._chunk({"tool_calls": [call]})
        return out

    def _block_delta(self, index: Any, delta: Any) -> bytes:
        if not isinstance(delta, dict):
            return b""
        out = self._ensure_started()
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            out += self._chunk({"content": delta["text"]})
        elif delta.get("type") == "input_json_delta" and isinstance(index, int) and index in self._tool_calls:
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                call = {"index": self._tool_calls[index], "function": {"arguments": fragment}}
                out += self._chunk({"tool_calls": [call]})
        return out

    def _message_delta(self, delta: Any, usage: Any) -> bytes:
        if isinstance(usage, dict):
            self._usage.update({key: value for key, value in usage.items() if value is not None})
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if reason is None:
            return b""
        return self._ensure_started() + self._chunk({}, finish_reason(reason))

    def _message_stop(self) -> bytes:
        self._ended = True
        out = self._ensure_started()
        if self.include_usage:
            out += self._chunk(None)
        return out + OPENAI_DONE

    def _error(self, kind: str, message: str, code: Optional[str] = None) -> bytes:
        self._ended = True
        return openai_data(error_object("openai", 500, message, code, kind=kind))
