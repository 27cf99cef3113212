"""What every wire format offers the tool loop (``tollway.tools.loop``).

One implementation per format (``openai_chat/tools.py``, ``anthropic/tools.py``), registered
in ``tollway.providers.TOOL_FORMATS``. The loop itself stays format-neutral: it
asks the format how tools, calls and results look in its requests, responses
and streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Protocol

import orjson

if TYPE_CHECKING:
    from tollway.tools.dispatch import ToolResult
    from tollway.tools.store import Tool


@dataclass(slots=True)
class PendingCall:
    id: str
    name: str
    input: Any
    arguments: str  # the raw JSON text the model produced


def parse_arguments(arguments: str) -> Any:
    """A call's input from its JSON text (kept raw when the model produced no JSON)."""
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}


def completed_event(result: "ToolResult") -> dict[str, Any]:
    """The ``tool_call.completed`` information, the same in every format's stream."""
    return {
        "type": "tool_call.completed",
        "call_id": result.call_id,
        "name": result.tool_name,
        "tool_id": result.tool_id,
        "duration_ms": result.duration_ms,
        "is_error": result.is_error,
        "attempts": result.attempts,
    }


class LoopWriter(Protocol):
    """One client stream out of the several model turns of a tool loop.

    The client sees a single message in its own format: the text deltas of every
    turn, its own tool calls, and the gateway's tool activity as events of their own
    (``tool_call.started`` / ``tool_call.completed``). The calls of registered tools,
    the intermediate stops and the repeated starts are left out; the final stop (and
    usage, summed over the turns) comes once, at the very end.

    Writers are fed the decoded SSE events of each turn in the client's format
    (already translated when the model is the other provider's).
    """

    def begin_turn(self) -> None: ...

    def feed(self, event: Optional[str], data: str) -> bytes: ...

    def end(self, stop_reason: Optional[str] = None) -> bytes: ...

    def tool_started(self, call: PendingCall, tool_id: str) -> bytes: ...

    def tool_completed(self, result: "ToolResult") -> bytes: ...

    def error(self, status: int, message: str, code: Optional[str] = None) -> bytes: ...


class ToolFormat(Protocol):
    kind: str

    def definition(self, tool: "Tool") -> dict[str, Any]:
        """The registered tool as an entry of this format's request ``tools``."""

    def definition_name(self, entry: Any) -> Optional[str]:
        """The name of one of a request's own ``tools`` entries."""

    def calls_in_body(self, body: dict[str, Any]) -> list[PendingCall]:
        """The tool calls of a whole (non-stream) response."""

    def body_text(self, body: dict[str, Any]) -> str:
        """The text of a whole response."""

    def assistant_turn(
        self, text: str, calls: Iterable[PendingCall], body: Optional[dict[str, Any]] = None
    ) -> dict[str, Any]:
        """The assistant's message to append to the request before the results
        (from the whole response ``body`` when there is one)."""

    def result_messages(self, results: list["ToolResult"]) -> list[dict[str, Any]]:
        """The results, as the provider expects them right after the assistant's message."""

    def strip_calls(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
        """A whole response without the calls of the tools named in ``names``."""

    def forbid_tools(self, payload: dict[str, Any]) -> None:
        """Last allowed turn: the model must answer in text."""

    def loop_writer(self, registered: set[str], model: str, request: dict[str, Any]) -> LoopWriter:
        """The writer of a looped stream to a client of this format (``request``: the client's,
        for what it asked of the stream, e.g. usage)."""
