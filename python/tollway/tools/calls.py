"""Tool calls and their results, whatever the wire format.

The loop runs in the provider's shape: it reads the tool calls of a model turn
(from a whole response body through the format in ``tollway.providers.TOOL_FORMATS``,
or from what the stream teed), appends the assistant's message and the results to
the request, and asks again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.http.core import HTTPError
from tollway.providers import CANONICAL_TOOLS, ToolFormat
from tollway.providers.tool_format import PendingCall, parse_arguments

if TYPE_CHECKING:
    from tollway._core import StreamOutcome
    from tollway.tools.dispatch import ToolResult
    from tollway.tools.store import Tool

__all__ = ["PendingCall", "add_definitions", "calls_in_outcome", "result_blocks"]


def calls_in_outcome(outcome: "StreamOutcome") -> list[PendingCall]:
    """The tool calls a stream produced (assembled by the Rust tee, the same for both providers)."""
    return [
        PendingCall(
            c.get("id") or "",
            c.get("name") or "",
            parse_arguments(c.get("arguments") or "{}"),
            c.get("arguments") or "{}",
        )
        for c in orjson.loads(outcome.tool_calls_json or "[]")
    ]


def result_blocks(results: list["ToolResult"]) -> list[dict[str, Any]]:
    """Canonical tool_result blocks: what threads store."""
    return CANONICAL_TOOLS.result_blocks(results)


def add_definitions(fmt: ToolFormat, payload: dict[str, Any], tools: list["Tool"]) -> None:
    """Offer the registered tools to the model next to the request's own ones."""
    own = payload.get("tools") or []
    names = {fmt.definition_name(t) for t in own if isinstance(t, dict)}
    clash = sorted(names & {t.name for t in tools})
    if clash:
        raise HTTPError(400, f"the request's own tools and tool_ids both name {clash[0]!r}", param="tool_ids")
    payload["tools"] = list(own) + [fmt.definition(t) for t in tools]
