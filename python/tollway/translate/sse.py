"""Server-sent event framing of each provider's streams."""

from __future__ import annotations

from typing import Any

import orjson

OPENAI_DONE = b"data: [DONE]\n\n"


def anthropic_event(data: dict[str, Any]) -> bytes:
    """``event: <type>`` + ``data: <json>``, as Anthropic frames every event."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def openai_data(data: dict[str, Any]) -> bytes:
    """``data: <json>``, as OpenAI frames every chunk."""
    return b"data: " + orjson.dumps(data) + b"\n\n"
