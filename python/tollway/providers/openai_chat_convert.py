"""OpenAI Chat Completions <-> the canonical model (providers/canonical.py).

The request side reuses the message, tool and tool-choice translation of
translate/request_to_openai.py (which reads blocks of the canonical shapes);
``response_format`` and ``reasoning_effort`` are carried as Chat fields.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import orjson

from tollway.providers import canonical as c
from tollway.providers.anthropic_convert import from_canonical as anthropic_body
from tollway.translate.error_bodies import anthropic_type_of_openai_error, openai_error_object, openai_error_type
from tollway.translate.errors import TranslationError
from tollway.translate.ids import tool_use_id
from tollway.translate.request_to_openai import anthropic_request_to_openai
from tollway.translate.stop_reasons import stop_reason

_EFFORTS = {"minimal", "low", "medium", "high"}


def from_canonical(request: c.Request, upstream_model: str) -> dict[str, Any]:
    """The Chat Completions body for a canonical Request."""
    plain = replace(request, response_format=None)
    body = anthropic_body(plain, upstream_model, 0)
    if request.max_tokens is None:
        body.pop("max_tokens")
    out = anthropic_request_to_openai(body, upstream_model)
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "output", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    if request.reasoning_effort in _EFFORTS:
        out["reasoning_effort"] = request.reasoning_effort
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_to_canonical(raw: Any) -> c.Usage:
    usage = raw if isinstance(raw, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = min(_count(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt)
    out_details = usage.get("completion_tokens_details")
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return c.Usage(prompt - cached, _count(usage.get("completion_tokens")), cached, 0, reasoning)


def response_to_canonical(body: Any) -> c.Response:
    """A ``chat.completion`` as a canonical Response."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("upstream chat.completion has no choices", "choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[c.Block] = []
    for key in ("content", "refusal"):
        text = message.get(key)
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"] if isinstance(call.get("id"), str) else tool_use_id(),
                    "name": function["name"] if isinstance(function.get("name"), str) else "",
                    "input": c.tool_input(function.get("arguments")),
                }
            )
    reason = stop_reason(choice.get("finish_reason")) or "end_turn"
    return c.Response(
        id=body["id"] if isinstance(body.get("id"), str) else "",
        model=body["model"] if isinstance(body.get("model"), str) else "",
        content=content,
        stop_reason=reason,
        usage=usage_to_canonical(body.get("usage")),
    )


def error_to_canonical(status: int, body: bytes) -> c.Error:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        return c.Error(anthropic_type_of_openai_error(error), error["message"], code)
    text = body.decode("utf-8", "replace").strip()
    return c.Error("api_error", text or f"upstream HTTP {status}")


def error_body(status: int, error: c.Error) -> bytes:
    kind = openai_error_type(status)
    if status == 429 and error.code == "billing_error":
        kind = "insufficient_quota"
    return orjson.dumps(openai_error_object(kind, error.message, error.code))


class StreamDecoder:
    """``chat.completion.chunk`` SSE events -> canonical events.

    The stop reason arrives before OpenAI's trailing usage chunk, so the
    MessageDelta is held back until that chunk (or ``[DONE]``).
    """

    def __init__(self) -> None:
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
            message = error.get("message") if isinstance(error.get("message"), str) and error["message"] else "upstream stream error"
            code = error.get("code") if isinstance(error.get("code"), str) else None
            return self._fail(c.Error(anthropic_type_of_openai_error(error), message, code))
        out: list[c.Event] = []
        if not self._started:
            self._started = True
            ident = chunk.get("id") if isinstance(chunk.get("id"), str) else ""
            model = chunk.get("model") if isinstance(chunk.get("model"), str) else ""
            out.append(c.MessageStart(ident, model))
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
        reason = stop_reason(self._finish) or "end_turn"
        return self._close() + [c.MessageDelta(reason, self._usage or c.Usage()), c.MessageStop()]

    def _fail(self, error: c.Error) -> list[c.Event]:
        self._ended = True
        return [c.StreamError(error)]
