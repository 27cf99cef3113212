"""Server-sent event framing of each provider's streams."""

from __future__ import annotations

from typing import Any, Optional

import orjson

OPENAI_DONE = b"data: [DONE]\n\n"


def frame(event: Optional[str], data: bytes) -> bytes:
    """One SSE event: ``event: <name>`` (when named) and ``data: <data>``."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"


def anthropic_event(data: dict[str, Any]) -> bytes:
    """``event: <type>`` + ``data: <json>``, as Anthropic frames every event."""
    return frame(data["type"], orjson.dumps(data))


def openai_data(data: dict[str, Any]) -> bytes:
    """``data: <json>``, as OpenAI frames every chunk."""
    return frame(None, orjson.dumps(data))
