"""Anthropic ``stop_reason`` <-> OpenAI ``finish_reason``."""

from __future__ import annotations

from typing import Any, Optional

_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: Any) -> Optional[str]:
    """OpenAI finish_reason for an Anthropic stop_reason (None stays None; unknown -> stop)."""
    if stop_reason is None:
        return None
    return _TO_OPENAI.get(stop_reason, "stop")


def stop_reason(finish_reason: Any) -> Optional[str]:
    """Anthropic stop_reason for an OpenAI finish_reason (None stays None; unknown -> end_turn)."""
    if finish_reason is None:
        return None
    return _TO_ANTHROPIC.get(finish_reason, "end_turn")
