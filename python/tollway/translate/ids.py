"""Response ids in each provider's style, derived from the upstream id."""

from __future__ import annotations

import secrets
from typing import Any

_OPENAI_PREFIX = "chatcmpl-"
_ANTHROPIC_PREFIX = "msg_"


def _suffix(upstream_id: Any, prefix: str) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id[len(prefix) :] if upstream_id.startswith(prefix) else upstream_id
    return secrets.token_hex(12)


def anthropic_message_id(openai_id: Any) -> str:
    """``chatcmpl-abc`` -> ``msg_abc`` (random when absent)."""
    return _ANTHROPIC_PREFIX + _suffix(openai_id, _OPENAI_PREFIX)


def openai_completion_id(anthropic_id: Any) -> str:
    """``msg_abc`` -> ``chatcmpl-abc`` (random when absent)."""
    return _OPENAI_PREFIX + _suffix(anthropic_id, _ANTHROPIC_PREFIX)


def tool_use_id() -> str:
    """A fresh Anthropic-style tool use id, for upstream calls that came without one."""
    return "toolu_" + secrets.token_hex(12)


def tool_call_id() -> str:
    """A fresh OpenAI-style tool call id, for upstream calls that came without one."""
    return "call_" + secrets.token_hex(12)
