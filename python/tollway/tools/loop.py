"""The tool loop: call the model; while it calls registered tools, run them and ask again.

Up to ``max_tool_turns`` model turns (default 8); on the last one the model is
told not to call tools, so it answers in text. Several calls in one turn run in
parallel. Every model turn goes through the proxy, so it is capped (the cap is
checked again before each turn: a loop that runs out of money stops with 402,
keeping what was produced), billed and recorded like any call. A turn that also
calls the request's own tools ends the loop: the response goes to the client with
its calls. The registered calls of that turn are left out and not run on the plain
routes (the client could not send their results back); in threads (``run_mixed``)
they run and their results are stored, to go with the client's results next turn.

The loop works in the provider's request shape, through its ``ToolFormat``. Threads pass a ``StepSink`` to
store every step (the assistant's calls, then the results) in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Optional, Protocol, Union

import orjson

from tollway._core import SseDecoder, StreamOutcome, UpstreamStream
from tollway.config import ModelRoute
from tollway.errors import provider_error
from tollway.http.core import SSE_HEADERS, HTTPError, StreamResponse
from tollway.keys import ApiKey
from tollway.providers import CANONICAL_TOOLS, TOOL_FORMATS, ToolFormat
from tollway.tools.calls import PendingCall, add_definitions, calls_in_outcome
from tollway.tools.dispatch import ToolResult
from tollway.tools.store import Tool, ToolStore

if TYPE_CHECKING:
    from tollway.proxy.handler import Call, Completed, Proxy, Runtime

log = logging.getLogger("tollway.tools")

DEFAULT_MAX_TOOL_TURNS = 8
MAX_TOOL_TURNS_LIMIT = 50
LOOP_DEADLINE_S = 600.0


class StepSink(Protocol):
    """Where a thread stores the steps of a loop (called on the event loop, in order)."""

    async def step(self, content: list[dict[str, Any]], results: list[ToolResult]) -> None:
        """A model turn that called registered tools (canonical content blocks), and their results."""

    async def finish(
        self, outcome: Optional[StreamOutcome], calls_left_out: set[str], trailing: list[ToolResult]
    ) -> None:
        """A streamed loop ended: ``outcome`` is its last model turn (None when none was
        streamed after the last step); the calls named in ``calls_left_out`` were not run;
        ``trailing`` are the results of registered calls made next to the client's own."""


def max_turns_from(payload: dict[str, Any]) -> int:
    value = payload.pop("max_tool_turns", DEFAULT_MAX_TOOL_TURNS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOOL_TURNS_LIMIT:
        raise HTTPError(
            400, f"'max_tool_turns' must be an integer from 1 to {MAX_TOOL_TURNS_LIMIT}", param="max_tool_turns"
        )
    return value


async def resolve_tools(store: ToolStore, key: ApiKey, tool_ids: Any) -> list[Tool]:
    if not isinstance(tool_ids, list) or not tool_ids or not all(isinstance(t, str) for t in tool_ids):
        raise HTTPError(400, "'tool_ids' must be a non-empty list of tool ids", param="tool_ids")
    if len(set(tool_ids)) != len(tool_ids):
        raise HTTPError(400, "'tool_ids' lists a tool twice", param="tool_ids")
    try:
        return await asyncio.to_thread(store.by_ids, key.account_id, tool_ids)
    except LookupError as exc:
        raise HTTPError(404, str(exc).strip("'\""), code="tool_not_found", param="tool_ids") from None


@dataclass
class ToolLoop:
    proxy: "Proxy"
    key: ApiKey
    route: ModelRoute
    payload: dict[str, Any]  # in the provider's shape, tools not yet added
    tools: list[Tool]
    request_id: str
    client_headers: dict[str, str]
    started: float
    max_turns: int
    thread_id: Optional[str] = None
    steps: Optional[StepSink] = None
    # A turn that calls both the client's tools and registered ones: run the registered
    # ones too and keep their results for the client's next turn (threads store them).
    run_mixed: bool = False
    trailing: list[ToolResult] = field(default_factory=list)
    turns: int = 0
    by_name: dict[str, Tool] = field(default_factory=dict)
    deadline: float = 0.0
    current: Optional[UpstreamStream] = None
    closed: bool = False
    last_outcome: Optional[StreamOutcome] = None
    left_out: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.route.wire not in TOOL_FORMATS:
            raise HTTPError(
                400,
                f"webhook tools (tool_ids) cannot run with {self.route.name!r}, which is called in the "
                f"{self.route.wire} format",
                param="tool_ids",
            )
        self.by_name = {t.name: t for t in self.tools}
        self.deadline = time.monotonic() + LOOP_DEADLINE_S
        add_definitions(self.fmt, self.payload, self.tools)

    @property
    def fmt(self) -> ToolFormat:
        return TOOL_FORMATS[self.route.wire]

    @property
    def gw(self) -> "Runtime":
        return self.proxy.gw

    def _prepare(self, stream: bool) -> "Call":
        self.turns += 1
        if self.turns == self.max_turns:
            self.fmt.forbid_tools(self.payload)
        try:
            return self.proxy.prepare(
                self.key, self.route, self.payload, None, self.client_headers, self.request_id, stream, self.started
            )
        except HTTPError as exc:
            if exc.status == 402 and self.turns > 1:
                exc.message += f" (the tool loop stopped before model turn {self.turns})"
            raise

    def _split(self, calls: list[PendingCall]) -> tuple[list[PendingCall], list[PendingCall]]:
        ours = [c for c in calls if c.name in self.by_name]
        return ours, [c for c in calls if c.name not in self.by_name]

    async def _dispatch(self, calls: list[PendingCall]) -> list[ToolResult]:
        dispatcher = self.gw.dispatcher
        return list(
            await asyncio.gather(
                *(
                    dispatcher.call(
                        self.by_name[c.name],
                        c.id,
                        c.input,
                        thread_id=self.thread_id,
                        end_user_id=self.key.end_user_id,
                        deadline=self.deadline,
                    )
                    for c in calls
                )
            )
        )

    async def _next_turn(
        self, text: str, calls: list[PendingCall], results: list[ToolResult], body: Optional[dict[str, Any]] = None
    ) -> None:
        assistant = self.fmt.assistant_turn(text, calls, body)
        if self.steps is not None:
            canonical = assistant if self.fmt is CANONICAL_TOOLS else CANONICAL_TOOLS.assistant_turn(text, calls)
            await self.steps.step(canonical["content"], results)
        self.payload["messages"] = (
            list(self.payload.get("messages") or []) + [assistant] + self.fmt.result_messages(results)
        )

    # ------------------------------------------------------------ whole responses
    async def complete(self) -> tuple["Completed", Optional[dict[str, Any]]]:
        """Run the loop without streaming. Returns the last model turn's response and,
        when the gateway changed it (calls of registered tools left out), its new body."""
        while True:
            call = self._prepare(False)
            try:
                done = await self.proxy.complete(call)
            except BaseException:
                call.release()
                raise
            done.headers.append(("x-tollway-tool-turns", str(self.turns)))
            if not done.ok:
                return done, None
            try:
                body = orjson.loads(done.body)
            except orjson.JSONDecodeError:  # not a model response: passed on as it came
                return done, None
            if not isinstance(body, dict):
                return done, None
            ours, theirs = self._split(self.fmt.calls_in_body(body))
            if not ours:
                return done, None
            if theirs and self.run_mixed:
                self.trailing = await self._dispatch(ours)
                return done, None
            if theirs or self.turns >= self.max_turns:
                return done, self.fmt.strip_calls(body, set(self.by_name))
            results = await self._dispatch(ours)
            await self._next_turn(self.fmt.body_text(body), ours, results, body)

    # ------------------------------------------------------------ streams
    async def open(
        self,
        client_shape: str,
        model: str,
        client_request: dict[str, Any],
        translator_factory: Optional[Callable[[], Any]],
    ) -> Union[StreamResponse, "Completed"]:
        """Open the first model turn (its errors are the response's), then stream the loop."""
        call = self._prepare(True)
        first = await self._open_turn(call)
        if not isinstance(first, tuple):
            return first
        writer = TOOL_FORMATS[client_shape].loop_writer(set(self.by_name), model, client_request)
        headers = SSE_HEADERS + call.extra_headers
        # The loop runs in a task of its own, so it ends (and is stored and billed)
        # whether or not the server notices that the client went away.
        # Bounded, so the loop reads its model turns only as fast as the client takes them.
        queue: asyncio.Queue[Optional[bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        self.gw.requests_open += 1
        asyncio.get_running_loop().create_task(self._drive(first, writer, client_shape, translator_factory, queue))
        return StreamResponse(200, headers, _drain(queue), self.close)

    async def _drive(
        self, first, writer, client_shape: str, translator_factory, queue: "asyncio.Queue[Optional[bytes]]"
    ) -> None:
        try:
            async for out in self._stream(first, writer, client_shape, translator_factory):
                if not self.closed:
                    await self._offer(queue, out)
        except ConnectionAbortedError:  # the client stopped reading: the model turn was cut
            self.close()
        except Exception:
            log.exception("the tool loop of request %s failed", self.request_id)
            if not self.closed:
                await self._offer(
                    queue, writer.error(500, "internal error in the tool loop; the request id is in x-request-id")
                )
        finally:
            await self._offer(queue, None, force=True)
            try:
                if self.steps is not None:
                    await self.steps.finish(self.last_outcome, self.left_out, self.trailing)
            finally:
                self.gw.requests_open -= 1

    async def _offer(self, queue: "asyncio.Queue[Optional[bytes]]", item: Optional[bytes], force: bool = False) -> None:
        """Queue ``item`` for the client; a client that takes nothing for the stall
        timeout is treated as gone (the loop stops, and still ends, stored and billed)."""
        if self.closed:  # the client is gone: only the end marker, if there is room
            if force and not queue.full():
                queue.put_nowait(item)
            return
        if not queue.full():
            queue.put_nowait(item)
            return
        try:
            await asyncio.wait_for(queue.put(item), self.gw.settings.client_stall_timeout)
        except TimeoutError:
            self.close()

    async def _open_turn(self, call: "Call") -> Union[tuple[UpstreamStream, list[StreamOutcome]], "Completed"]:
        box: list[StreamOutcome] = []
        try:
            upstream = await self.proxy.open_stream(call, then=box.append)
        except BaseException:
            call.release()
            raise
        if not isinstance(upstream, UpstreamStream):
            return upstream
        self.current = upstream
        if self.closed:
            upstream.close()
        return upstream, box

    def close(self) -> None:
        """The client went away: stop the model turn in flight; no further turn starts."""
        self.closed = True
        if self.current is not None:
            self.current.close()

    async def _stream(self, first, writer, client_shape: str, translator_factory) -> AsyncIterator[bytes]:
        upstream, box = first
        while True:
            writer.begin_turn()
            async for out in self._relay(upstream, writer, translator_factory):
                yield out
            outcome = box[0] if box else None
            self.last_outcome = outcome
            if outcome is None or outcome.status != "ok" or self.closed:
                yield writer.end()
                return
            ours, theirs = self._split(calls_in_outcome(outcome))
            if ours and theirs and self.run_mixed:
                for c in ours:
                    yield writer.tool_started(c, self.by_name[c.name].id)
                self.trailing = await self._dispatch(ours)
                for r in self.trailing:
                    yield writer.tool_completed(r)
                yield writer.end()
                return
            if not ours or theirs or self.turns >= self.max_turns:
                self.left_out = {c.id for c in ours}
                yield writer.end()
                return
            for c in ours:
                yield writer.tool_started(c, self.by_name[c.name].id)
            results = await self._dispatch(ours)
            for r in results:
                yield writer.tool_completed(r)
            await self._next_turn(outcome.text, ours, results)
            self.last_outcome = None
            if self.closed:
                return
            try:
                call = self._prepare(True)
                nxt = await self._open_turn(call)
            except HTTPError as exc:  # 402 before the next turn, or the upstream unreachable
                yield writer.error(exc.status, exc.message, exc.code)
                return
            if not isinstance(nxt, tuple):
                yield writer.error(
                    nxt.status,
                    f"the upstream provider answered {nxt.status}: {provider_error(nxt.body)[1][:500]}",
                    "upstream_error",
                )
                return
            upstream, box = nxt

    async def _relay(self, upstream: UpstreamStream, writer, translator_factory) -> AsyncIterator[bytes]:
        decoder = SseDecoder()
        translator = translator_factory() if translator_factory is not None else None
        again = SseDecoder() if translator is not None else None

        def events(chunk_events):
            if translator is None:
                return chunk_events
            text = b"".join(translator.feed(e, d) for e, d in chunk_events)
            return again.feed(text) if text else []

        async for chunk in upstream:
            out = b"".join(writer.feed(e, d) for e, d in events(decoder.feed(chunk)))
            if out:
                yield out
        tail = events(decoder.finish())
        if translator is not None:
            extra = translator.finish()
            tail = list(tail) + (again.feed(extra) if extra else []) + again.finish()
        out = b"".join(writer.feed(e, d) for e, d in tail)
        if out:
            yield out


_QUEUE_CHUNKS = 4  # each a coalesced read of a turn (at most about a stream window)


async def _drain(queue: "asyncio.Queue[Optional[bytes]]") -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item
