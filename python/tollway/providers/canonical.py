"""The canonical model of a model call, shared by every wire format.

A cross-format call is source -> canonical -> target: each format's converters
(Messages: anthropic/convert.py, anthropic/stream.py; Chat: openai_chat/request.py,
openai_chat/convert.py, openai_chat/stream.py; Responses: openai_responses/) read
and write these types only, and formats.py is their table.

Content blocks are plain dicts in the shapes below (the shapes Anthropic uses,
which are also what thread history stores):

- ``{"type": "text", "text": str}``
- ``{"type": "image", "source": {"type": "base64", "media_type", "data"} | {"type": "url", "url"}}``
- ``{"type": "document", "source": {...}, "title"?: str}``
- ``{"type": "tool_use", "id": str, "name": str, "input": dict}``
- ``{"type": "tool_result", "tool_use_id": str, "content": str | [text/image blocks], "is_error"?: bool}``
- ``{"type": "thinking", "thinking": str, "signature"?: str}``

Usage counts: ``input`` excludes ``cache_read`` and ``cache_write`` (the whole
prompt is their sum); ``reasoning`` is part of ``output``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import orjson

Block = dict[str, Any]

# end_turn: the model finished; max_tokens: cut at the output limit; tool_use: it called
# tools; stop_sequence: a stop sequence matched; refusal: a safety refusal or content
# filter; pause_turn: a long server-side turn paused (continue it to go on).
STOP_REASONS = ("end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", "pause_turn")
EARLY_END = "the upstream stream ended early; the response is incomplete"


@dataclass(slots=True)
class Message:
    role: str  # "user" | "assistant"
    content: list[Block]


@dataclass(slots=True)
class Tool:
    name: str
    input_schema: dict[str, Any]
    description: Optional[str] = None
    strict: Optional[bool] = None


@dataclass(slots=True)
class ToolChoice:
    type: str  # "auto" | "any" (must call one) | "none" | "tool" (must call ``name``)
    name: Optional[str] = None
    disable_parallel: bool = False


@dataclass(slots=True)
class ResponseFormat:
    type: str  # "text" | "json_object" | "json_schema"
    schema: Optional[dict[str, Any]] = None
    name: Optional[str] = None
    strict: Optional[bool] = None


@dataclass(slots=True)
class Request:
    messages: list[Message]
    model: str = ""
    system: Optional[str] = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: Optional[ToolChoice] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: list[str] = field(default_factory=list)
    stream: Optional[bool] = None  # None: not said (the target's default)
    response_format: Optional[ResponseFormat] = None
    reasoning_effort: Optional[str] = None
    user: Optional[str] = None  # the end user, for the provider's abuse monitoring
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write


@dataclass(slots=True)
class Response:
    id: str
    model: str
    content: list[Block]
    stop_reason: str = "end_turn"
    stop_sequence: Optional[str] = None
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class Error:
    """An error in Anthropic's vocabulary of types (``invalid_request_error``,
    ``rate_limit_error``, ``api_error``, ``overloaded_error``...)."""

    type: str
    message: str
    code: Optional[str] = None


# ---- stream events, in the order a stream carries them ----------------------
@dataclass(slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class BlockStart:
    index: int
    block: Block  # text (text ""), tool_use (input {}), thinking (thinking "")


@dataclass(slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(slots=True)
class ToolArgumentsDelta:
    index: int
    partial_json: str


@dataclass(slots=True)
class ThinkingDelta:
    index: int
    thinking: str


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class MessageDelta:
    stop_reason: str
    usage: Usage  # the whole call's usage
    stop_sequence: Optional[str] = None


@dataclass(slots=True)
class MessageStop:
    pass


@dataclass(slots=True)
class StreamError:
    error: Error


Event = Union[
    MessageStart,
    BlockStart,
    TextDelta,
    ToolArgumentsDelta,
    ThinkingDelta,
    BlockStop,
    MessageDelta,
    MessageStop,
    StreamError,
]


def merge_messages(messages: list[Message]) -> list[Message]:
    """Consecutive same-role messages as one; tool results lead each user message."""
    merged: list[Message] = []
    for message in messages:
        if merged and merged[-1].role == message.role:
            merged[-1].content.extend(message.content)
        else:
            merged.append(Message(message.role, list(message.content)))
    for message in merged:
        if message.role == "user":
            message.content.sort(key=lambda block: 0 if block["type"] == "tool_result" else 1)
    return merged


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool call arguments (a JSON string) as a ``tool_use`` block's ``input`` object.

    Arguments that are not a JSON object (a model's malformed output) are kept,
    not lost, as ``{"_raw_arguments": "<text>"}``.
    """
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def text_of(blocks: list[Block]) -> str:
    return "".join(block["text"] for block in blocks if block.get("type") == "text")
