"""The fields of a model request that the gateway itself acts on, checked before
anything is held or forwarded (the rest goes to the provider as it came)."""

from __future__ import annotations

from typing import Any

from tollway.http.core import HTTPError
from tollway.http.limits import MAX_ID_CHARS, MAX_TOKENS_LIMIT

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def token_count(value: Any, param: str) -> int:
    """A positive integer of at most MAX_TOKENS_LIMIT (400 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise HTTPError(400, f"'{param}' must be an integer from 1 to {MAX_TOKENS_LIMIT}", param=param)
    return value


def check_model_request(payload: dict[str, Any]) -> None:
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise HTTPError(400, "'stream' must be a boolean", param="stream")
    for name in TOKEN_FIELDS:
        value = payload.get(name)
        if value is not None:
            token_count(value, name)
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise HTTPError(400, "'stream_options' must be an object", param="stream_options")
    tools = payload.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise HTTPError(400, "'tools' must be a list of tool objects", param="tools")
    if "tool_ids" in payload:
        ids = payload["tool_ids"]
        if not isinstance(ids, list) or not ids or not all(_is_id(t) for t in ids):
            raise HTTPError(400, "'tool_ids' must be a non-empty list of tool ids", param="tool_ids")


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and "\x00" not in value
