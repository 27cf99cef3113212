"""Which part of a thread's history is sent with a turn.

As many of the most recent messages as fit the model's context window minus
``max_tokens`` (and minus the system prompt, the tools and the new turn), counted
with the same conservative token estimate the caps use. An assistant message
that calls tools and the user message carrying their results are kept or
dropped together, and the history never starts with an assistant message or with
tool results (both providers reject that). Tool calls that were never answered
(a stream cut mid tool call, a client that did not send the result) and results
without their call are left out of the request; the stored thread keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import orjson

from tollway.providers.base import estimate_input_tokens

REQUEST_OVERHEAD_TOKENS = 16


def tokens_of(value: Any) -> int:
    """Conservative token estimate of one message, a system prompt or a tools array."""
    if value is None:
        return 0
    if isinstance(value, dict) and "role" in value:
        return estimate_input_tokens({"messages": [value]}, len(orjson.dumps(value)))
    return estimate_input_tokens({}, len(orjson.dumps(value)))


def _blocks(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def _units(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Indexes grouped so a tool-calling assistant message stays with the results that follow
    it (in one user message, or in several in a row: the gateway's, then the client's)."""
    units: list[list[int]] = []
    for i, message in enumerate(messages):
        if (
            units
            and message.get("role") == "user"
            and _blocks(message, "tool_result")
            and messages[units[-1][0]].get("role") == "assistant"
            and _blocks(messages[units[-1][0]], "tool_use")
            and all(messages[j].get("role") == "user" and _blocks(messages[j], "tool_result") for j in units[-1][1:])
        ):
            units[-1].append(i)
        else:
            units.append([i])
    return units


@dataclass(slots=True)
class Fitted:
    messages: list[dict[str, Any]]  # oldest first, ready to send
    kept: int  # stored messages that made it into the request (the new turn not counted)


def fit(history: list[dict[str, Any]], new: dict[str, Any], budget: int) -> Optional[Fitted]:
    """The new turn plus the newest messages of ``history`` (oldest first) that fit ``budget`` tokens.

    The new turn is always sent (with the tool call it answers); None when even
    that does not fit.
    """
    messages = history + [new]
    units = _units(messages)
    last = units.pop()
    used = sum(tokens_of(messages[i]) for i in last)
    if used > budget:
        return None
    chosen: list[list[int]] = [last]
    for unit in reversed(units):
        cost = sum(tokens_of(messages[i]) for i in unit)
        if used + cost > budget:
            break
        chosen.append(unit)
        used += cost
    chosen.reverse()
    # Never start with the assistant or with tool results.
    while len(chosen) > 1 and _starts_badly(messages[chosen[0][0]]):
        chosen.pop(0)
    indexes = [i for unit in chosen for i in unit]
    kept = len(indexes) - 1
    return Fitted(sanitize(messages[i] for i in indexes), kept)


def _starts_badly(message: dict[str, Any]) -> bool:
    return message.get("role") != "user" or bool(_blocks(message, "tool_result"))


def sanitize(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge consecutive same-role messages (tool results first in a user message), then drop
    tool calls that the next message does not answer and results without their call."""
    merged = _merge(messages)
    answered: set[str] = set()
    for prev, message in zip([None, *merged], merged, strict=False):  # each message with the one before it
        if message["role"] == "user" and prev is not None and prev["role"] == "assistant":
            calls = {b.get("id") for b in _blocks(prev, "tool_use")}
            answered |= {b.get("tool_use_id") for b in _blocks(message, "tool_result")} & calls
    kept = []
    for message in merged:
        content = message["content"]
        if isinstance(content, list):
            content = [
                b
                for b in content
                if not (isinstance(b, dict) and b.get("type") == "tool_use" and b.get("id") not in answered)
                and not (
                    isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") not in answered
                )
            ]
            if not content:
                continue
        kept.append({"role": message["role"], "content": content})
    return _merge(kept)


def _merge(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if out and out[-1]["role"] == message["role"]:
            content = _as_list(out[-1]["content"]) + _as_list(message["content"])
            if message["role"] == "user":  # the providers want the tool results first
                content.sort(key=lambda b: not (isinstance(b, dict) and b.get("type") == "tool_result"))
            out[-1] = {"role": message["role"], "content": content}
        else:
            out.append({"role": message["role"], "content": message.get("content")})
    return out


def _as_list(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)
