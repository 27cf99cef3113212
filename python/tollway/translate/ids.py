"""Response ids in each provider's style, derived from the upstream id."""

from __future__ import annotations

import secrets
from typing import Any

_OPENAI_PREFIX = "chatcmpl-"
_ANTHROPIC_PREFIX = "msg_"
_KNOWN_PREFIXES = (_OPENAI_PREFIX, _ANTHROPIC_PREFIX, "resp_")


def _suffix(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        for prefix in _KNOWN_PREFIXES:
            if upstream_id.startswith(prefix) and len(upstream_id) > len(prefix):
                return upstream_id[len(prefix) :]
        return upstream_id
    return secrets.token_hex(12)


def anthropic_message_id(upstream_id: Any) -> str:
    """``chatcmpl-abc`` (or ``msg_abc``) -> ``msg_abc`` (random when absent)."""
    return _ANTHROPIC_PREFIX + _suffix(upstream_id)


def openai_completion_id(upstream_id: Any) -> str:
    """``msg_abc`` (or ``chatcmpl-abc``) -> ``chatcmpl-abc`` (random when absent)."""
    return _OPENAI_PREFIX + _suffix(upstream_id)


def tool_use_id() -> str:
    """A fresh Anthropic-style tool use id, for upstream calls that came without one."""
    return "toolu_" + secrets.token_hex(12)


def tool_call_id() -> str:
    """A fresh OpenAI-style tool call id, for upstream calls that came without one."""
    return "call_" + secrets.token_hex(12)
