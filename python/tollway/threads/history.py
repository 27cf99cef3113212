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
    """Indexes grouped so a tool-calling assistant message stays with the results that follow it."""
    units: list[list[int]] = []
    for i, message in enumerate(messages):
        if (
            units
            and message.get("role") == "user"
            and _blocks(message, "tool_result")
            and messages[units[-1][-1]].get("role") == "assistant"
            and _blocks(messages[units[-1][-1]], "tool_use")
        ):
            units[-1].append(i)
        else:
            units.append([i])
    return units


@dataclass(slots=True)
class Fitted:
    messages: list[dict[str, Any]]  # oldest first, ready to send
    kept: int  # stored messages that made it into the request (the new turn not counted)
    dropped: int  # older stored messages left out for lack of room


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
    return Fitted(sanitize(messages[i] for i in indexes), kept, len(history) - kept)


def _starts_badly(message: dict[str, Any]) -> bool:
    return message.get("role") != "user" or bool(_blocks(message, "tool_result"))


def sanitize(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop unanswered tool calls and orphan results, then merge consecutive same-role messages."""
    messages = list(messages)
    answered: set[str] = set()
    called: set[str] = set()
    for prev, message in zip([None, *messages], messages):
        if message.get("role") == "user" and prev is not None and prev.get("role") == "assistant":
            calls = {b.get("id") for b in _blocks(prev, "tool_use")}
            for block in _blocks(message, "tool_result"):
                if block.get("tool_use_id") in calls:
                    answered.add(block["tool_use_id"])
                    called.add(block["tool_use_id"])
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                b
                for b in content
                if not (isinstance(b, dict) and b.get("type") == "tool_use" and b.get("id") not in answered)
                and not (isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") not in called)
            ]
            if not content:
                continue
        if out and out[-1]["role"] == message["role"]:
            out[-1] = {"role": message["role"], "content": _as_list(out[-1]["content"]) + _as_list(content)}
        else:
            out.append({"role": message["role"], "content": content})
    return out


def _as_list(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)
