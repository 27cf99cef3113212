"""OpenAI ``chat.completion.chunk`` streams <-> canonical stream events (providers/canonical.py)."""

from __future__ import annotations

import time
from typing import Any, Optional

import orjson

from tollway.errors import error_object, stream_error_type
from tollway.providers import canonical as c
from tollway.providers.openai_chat.convert import finish_reason, stop_reason, usage_body, usage_to_canonical
from tollway.translate.ids import openai_completion_id, tool_call_id, tool_use_id
from tollway.translate.sse import OPENAI_DONE, openai_data


class StreamDecoder:
    """``chat.completion.chunk`` SSE events -> canonical events.

    The stop reason arrives before OpenAI's trailing usage chunk, so the
    MessageDelta is held back until that chunk (or ``[DONE]``).
    """

    def __init__(self, input_tokens_hint: int = 0) -> None:
        self.input_tokens_hint = input_tokens_hint  # the input count to report when the upstream sends none
        self._started = False
        self._open: Optional[int] = None  # the open block's index
        self._text_block: Optional[int] = None
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._finish: Optional[str] = None
        self._usage: Optional[c.Usage] = None
        self._ended = False

    def feed(self, event: Optional[str], data: str) -> list[c.Event]:
        if self._ended:
            return []
        if data.strip() == "[DONE]":
            return self._complete() if self._finish is not None else []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            return self._fail(c.Error("api_error", "the upstream sent an invalid stream chunk"))
        error = chunk.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": str(error)}
            message = (
                error.get("message")
                if isinstance(error.get("message"), str) and error["message"]
                else "upstream stream error"
            )
            code = error.get("code") if isinstance(error.get("code"), str) else None
            return self._fail(c.Error(stream_error_type("anthropic", error, "openai"), message, code))
        out: list[c.Event] = []
        if not self._started:
            self._started = True
            ident = chunk.get("id") if isinstance(chunk.get("id"), str) else ""
            model = chunk.get("model") if isinstance(chunk.get("model"), str) else ""
            out.append(c.MessageStart(ident, model, c.Usage(input=self.input_tokens_hint)))
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    out.extend(self._text(delta[key]))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.extend(self._tool_call(call))
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
            out.extend(self._close())
        if chunk.get("usage") is not None:
            self._usage = usage_to_canonical(chunk["usage"])
            if self._finish is not None:
                out.extend(self._complete())
        return out

    def finish(self) -> list[c.Event]:
        return [] if self._ended else self._fail(c.Error("api_error", c.EARLY_END))

    def _open_block(self, block: c.Block) -> list[c.Event]:
        out = self._close()
        self._open = self._blocks
        self._blocks += 1
        return out + [c.BlockStart(self._open, block)]

    def _close(self) -> list[c.Event]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        self._text_block = None
        return [c.BlockStop(index)]

    def _text(self, text: str) -> list[c.Event]:
        out: list[c.Event] = []
        if self._text_block is None or self._open != self._text_block:
            out = self._open_block({"type": "text", "text": ""})
            self._text_block = self._open
        return out + [c.TextDelta(self._text_block, text)]

    def _tool_call(self, call: dict[str, Any]) -> list[c.Event]:
        position = call.get("index", 0) if isinstance(call.get("index", 0), int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out: list[c.Event] = []
        if position not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": call["id"] if isinstance(call.get("id"), str) and call["id"] else tool_use_id(),
                "name": function.get("name") if isinstance(function.get("name"), str) else "",
                "input": {},
            }
            out = self._open_block(block)
            self._tool_blocks[position] = self._open
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(c.ToolArgumentsDelta(self._tool_blocks[position], arguments))
        return out

    def _complete(self) -> list[c.Event]:
        self._ended = True
        reason = stop_reason(self._finish)
        usage = self._usage if self._usage is not None else c.Usage(input=self.input_tokens_hint)
        return self._close() + [c.MessageDelta(reason, usage), c.MessageStop()]

    def _fail(self, error: c.Error) -> list[c.Event]:
        self._ended = True
        return [c.StreamError(error)]


class StreamEncoder:
    """Canonical events -> ``chat.completion.chunk`` SSE bytes, as the model ``model``.

    Text and tool_use blocks become ``content`` and ``tool_calls`` deltas; thinking
    blocks are skipped. With ``include_usage`` every chunk carries ``"usage": null``
    and a last chunk with no choices carries the usage, as OpenAI does.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self._id = openai_completion_id(None)
        self._created = int(time.time())
        self._started = False
        self._tool_calls: dict[int, int] = {}  # block index -> tool call index
        self._usage = c.Usage()
        self._ended = False

    def encode(self, event: c.Event) -> bytes:
        if self._ended:
            return b""
        if isinstance(event, c.MessageStart):
            self._id = openai_completion_id(event.id or None)
            self._usage = event.usage
            return self._ensure_started()
        if isinstance(event, c.StreamError):
            self._ended = True
            error = event.error
            return openai_data(
                error_object(
                    "openai",
                    500,
                    error.message,
                    code=error.code,
                    kind=stream_error_type("openai", {"type": error.type}, "anthropic"),
                )
            )
        out = self._ensure_started()
        if isinstance(event, c.BlockStart) and event.block.get("type") == "tool_use":
            call_index = len(self._tool_calls)
            self._tool_calls[event.index] = call_index
            call = {
                "index": call_index,
                "id": event.block.get("id") or tool_call_id(),
                "type": "function",
                "function": {"name": event.block.get("name", ""), "arguments": ""},
            }
            return out + self._chunk({"tool_calls": [call]})
        if isinstance(event, c.TextDelta):
            return out + self._chunk({"content": event.text})
        if isinstance(event, c.ToolArgumentsDelta) and event.index in self._tool_calls:
            call = {"index": self._tool_calls[event.index], "function": {"arguments": event.partial_json}}
            return out + self._chunk({"tool_calls": [call]})
        if isinstance(event, c.MessageDelta):
            self._usage = event.usage
            return out + self._chunk({}, finish_reason(event.stop_reason))
        if isinstance(event, c.MessageStop):
            self._ended = True
            if self.include_usage:
                out += self._chunk(None)
            return out + OPENAI_DONE
        return out

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
            chunk["usage"] = usage_body(self._usage) if delta is None else None
        return openai_data(chunk)

    def _ensure_started(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})
