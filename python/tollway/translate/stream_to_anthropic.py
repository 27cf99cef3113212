"""An OpenAI ``chat.completion.chunk`` stream as Anthropic Messages stream events."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.errors import error_object, error_type, stream_error_type
from tollway.translate.ids import anthropic_message_id, tool_use_id
from tollway.translate.sse import anthropic_event
from tollway.translate.stop_reasons import stop_reason
from tollway.translate.usage import anthropic_usage

EARLY_END = "the upstream stream ended early; the response is incomplete"


class OpenAIToAnthropicStream:
    """Feed it the upstream's SSE events in order; send what it returns to the client.

    Emits ``message_start``, one ``content_block_*`` run per text or tool call,
    then ``message_delta`` (held back until OpenAI's trailing usage chunk or
    ``[DONE]``, so it carries the real usage) and ``message_stop``.
    """

    def __init__(self, model: str, input_tokens_hint: int = 0) -> None:
        self.model = model
        self.input_tokens_hint = input_tokens_hint
        self._started = False
        self._open: Optional[tuple[str, int]] = None  # ("text", -1) or ("tool", openai index)
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._finish_reason: Optional[str] = None
        self._usage: Any = None
        self._ended = False  # message_stop or error sent: nothing more to say

    def feed(self, event: Optional[str], data: str) -> bytes:
        """Translate one upstream event (``data`` is a chunk's JSON or ``[DONE]``)."""
        if self._ended:
            return b""
        if data.strip() == "[DONE]":
            return self._complete() if self._finish_reason is not None else b""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._error(error_type("anthropic", 502), "the upstream sent an invalid stream chunk")
        if not isinstance(chunk, dict):
            return self._error(error_type("anthropic", 502), "the upstream sent an invalid stream chunk")
        error = chunk.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": str(error)}
            message = error.get("message")
            return self._error(
                stream_error_type("anthropic", error, "openai"),
                message if isinstance(message, str) and message else "upstream stream error",
            )
        out = [self._start(chunk)]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    out.append(self._text(delta[key]))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.append(self._tool_call(call))
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]
            out.append(self._close_block())
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
            if self._finish_reason is not None:
                out.append(self._complete())
        return b"".join(out)

    def finish(self) -> bytes:
        """The upstream ended: an ``error`` event if it ended before its last chunk."""
        if self._ended:
            return b""
        return self._error(error_type("anthropic", 502), EARLY_END)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        usage = {
            "input_tokens": self.input_tokens_hint,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        message = {
            "id": anthropic_message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return anthropic_event({"type": "message_start", "message": message})

    def _open_block(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        closed = self._close_block()
        self._open = key
        index = self._blocks
        self._blocks += 1
        if key[0] == "tool":
            self._tool_blocks[key[1]] = index
        return closed + anthropic_event({"type": "content_block_start", "index": index, "content_block": block})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return anthropic_event({"type": "content_block_stop", "index": self._blocks - 1})

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open != ("text", -1):
            out = self._open_block(("text", -1), {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + anthropic_event({"type": "content_block_delta", "index": self._blocks - 1, "delta": delta})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        tool_index = call.get("index", 0)
        tool_index = tool_index if isinstance(tool_index, int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = b""
        if tool_index not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": call["id"] if isinstance(call.get("id"), str) and call["id"] else tool_use_id(),
                "name": function.get("name") if isinstance(function.get("name"), str) else "",
                "input": {},
            }
            out = self._open_block(("tool", tool_index), block)
        arguments = function.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            return out
        # OpenAI streams one call at a time; a late fragment of an earlier call still
        # goes to that call's block, which the SDKs accumulate by index.
        delta = {"type": "input_json_delta", "partial_json": arguments}
        index = self._tool_blocks[tool_index]
        return out + anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})

    def _complete(self) -> bytes:
        self._ended = True
        usage = anthropic_usage(self._usage)
        if self._usage is None:
            usage["input_tokens"] = self.input_tokens_hint
        delta = {"stop_reason": stop_reason(self._finish_reason), "stop_sequence": None}
        return (
            self._close_block()
            + anthropic_event({"type": "message_delta", "delta": delta, "usage": usage})
            + anthropic_event({"type": "message_stop"})
        )

    def _error(self, kind: str, message: str) -> bytes:
        self._ended = True
        return anthropic_event(error_object("anthropic", 500, message, kind=kind))
