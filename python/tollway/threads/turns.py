"""One turn of a thread: load the history that fits, call the model, persist both sides.

History is stored as canonical content blocks (providers/canonical.py: the
Anthropic shapes) and translated to the provider of whichever model the turn names. A turn is capped
and billed exactly like a direct call (it goes through the same ``Proxy``).
Streams reach the client as Anthropic SSE events; what the model produced is
taken from the stream itself (teed in Rust, never re-requested) and persisted
when the stream settles, also when the client went away midway.

Turns on one thread are serialised by a lease in the database (so also across
processes): a second turn waits for the running one to be persisted, up to
``TOLLWAY_THREAD_BUSY_WAIT`` seconds, and then gets 409 ``thread_busy``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import orjson

from tollway._core import StreamOutcome, UpstreamStream
from tollway.config import ModelRoute
from tollway.errors import provider_error
from tollway.http.core import SSE_HEADERS, AnyResponse, HTTPError, StreamResponse, json_response
from tollway.http.params import metadata_object
from tollway.keys import ApiKey
from tollway.keys.secrets import new_id
from tollway.providers import CANONICAL_TOOLS
from tollway.providers.formats import FORMATS
from tollway.proxy import translated
from tollway.proxy.checks import check_model_request, token_count
from tollway.proxy.handler import CLAMP_HEADER
from tollway.threads.history import REQUEST_OVERHEAD_TOKENS, fit, tokens_of
from tollway.threads.store import NewMessage, Thread, ThreadStore, visible
from tollway.tools import ToolStore
from tollway.tools.calls import result_blocks
from tollway.tools.loop import ToolLoop, max_turns_from, resolve_tools

if TYPE_CHECKING:
    from tollway.background import BackgroundWork
    from tollway.proxy.handler import Call, Completed, Origin, Proxy

log = logging.getLogger("tollway.threads")

LEASE_MS = 15 * 60 * 1000
DEFAULT_CONTEXT_WINDOW = 128_000
HISTORY_PAGE = 200
BUSY_POLL_S = 0.02
_PASSED = ("temperature", "top_p", "top_k", "stop_sequences", "tools", "tool_choice", "thinking")
TURN_FIELDS = {"model", "max_tokens", "content", "system", "stream", "metadata", "tool_ids", "max_tool_turns", *_PASSED}
_USER_BLOCKS = {"text", "image", "document", "tool_result"}
THREAD_FORMAT = "anthropic"  # turns are requested and answered in this format


def user_content(value: Any) -> list[dict[str, Any]]:
    """The new turn's content as content blocks (a string is one text block)."""
    if isinstance(value, str):
        if not value:
            raise HTTPError(400, "'content' must not be empty", param="content")
        return [{"type": "text", "text": value}]
    if not isinstance(value, list) or not value:
        raise HTTPError(400, "'content' must be a string or a non-empty list of content blocks", param="content")
    for i, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or kind not in _USER_BLOCKS:
            raise HTTPError(
                400, f"content[{i}] must be a block of type {', '.join(sorted(_USER_BLOCKS))}", param="content"
            )
        if kind == "text" and not isinstance(block.get("text"), str):
            raise HTTPError(400, f"content[{i}].text must be a string", param="content")
        if kind in ("image", "document") and not isinstance(block.get("source"), dict):
            raise HTTPError(400, f"content[{i}].source must be an object", param="content")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise HTTPError(400, f"content[{i}].tool_use_id must be a string", param="content")
    return value


def assistant_content(text: str, tool_calls_json: str) -> list[dict[str, Any]]:
    """What a stream produced, as content blocks: the text, then the tool calls."""
    blocks: list[dict[str, Any]] = []
    if text:
        blocks.append({"type": "text", "text": text})
    for call in orjson.loads(tool_calls_json or "[]"):
        try:
            arguments = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError:  # cut mid-arguments
            arguments = {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu_"),
                "name": call.get("name", ""),
                "input": arguments,
            }
        )
    return blocks


def upstream_error(status: int, body: bytes) -> HTTPError:
    """An upstream failure as our error, keeping the provider's status and message."""
    _, message = provider_error(body)
    return HTTPError(status, f"the upstream provider answered {status}: {message[:2000]}", code="upstream_error")


class Turn:
    """The state of one turn between its request and its persistence."""

    def __init__(self, turns: "ThreadTurns", thread: Thread, route: ModelRoute, user: NewMessage, lease: str) -> None:
        self.turns = turns
        self.thread = thread
        self.route = route
        self.user = user
        self.lease = lease
        self.context: dict[str, Any] = {}
        self.user_stored = False

    def finish_stream(self, outcome: StreamOutcome) -> None:
        """From the stream's settlement (any thread): persist on a worker thread."""
        self.turns.background.submit(self._persist_stream, outcome)

    def _persist_stream(self, outcome: StreamOutcome, left_out: frozenset = frozenset()) -> None:
        self.persist(self.from_outcome(outcome, left_out))

    def from_outcome(self, outcome: StreamOutcome, left_out: frozenset = frozenset()) -> NewMessage:
        """The reply a stream produced (the calls in ``left_out`` were not run: not stored)."""
        usage = outcome.usage
        stop = outcome.finish_reason
        if self.route.wire != THREAD_FORMAT and stop is not None:
            stop = FORMATS[self.route.wire].stop_reason_to_canonical(stop)
        metadata = {"context": self.context, "outcome": outcome.status}
        if usage.estimated:
            metadata["usage_estimated"] = True
        content = [b for b in assistant_content(outcome.text, outcome.tool_calls_json) if b.get("id") not in left_out]
        if stop == "tool_use" and not any(b["type"] == "tool_use" for b in content):
            stop = "end_turn"
        return NewMessage(
            "assistant",
            content,
            model=self.route.name,
            usage={
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_tokens,
                "cache_creation_input_tokens": usage.cache_write_tokens,
                "cost_micros": outcome.cost_micros,
            },
            stop_reason=stop if outcome.status == "ok" else None,
            metadata=metadata,
        )

    def persist(self, assistant: Optional[NewMessage], trailing: Optional[list[Any]] = None) -> list[Any]:
        """Store the user's message and (when anything was produced) the reply, with the results
        of registered tools it called next to the client's own (``trailing``), then free the thread."""
        store = self.turns.store
        try:
            messages = [] if self.user_stored else [self.user]
            messages += [assistant] if assistant is not None and assistant.content else []
            if trailing and messages and messages[-1] is assistant:
                messages.append(
                    NewMessage(
                        "user", result_blocks(trailing), metadata={"tool_results": [_result_meta(r) for r in trailing]}
                    )
                )
            stored = store.append_messages(self.thread.id, messages) if messages else []
            self.user_stored = True
            return stored
        except Exception:
            log.exception("could not persist a turn of thread %s", self.thread.id)
            raise
        finally:
            store.release_lease(self.thread.id, self.lease)


class LoopSteps:
    """Stores each step of a tool loop in order: the user's message with the first step,
    then the assistant's tool calls and their results; the end frees the thread."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn

    async def step(self, content: list[dict[str, Any]], results: list[Any]) -> None:
        turn = self.turn
        messages = [] if turn.user_stored else [turn.user]
        messages += [
            NewMessage(
                "assistant", content, model=turn.route.name, stop_reason="tool_use", metadata={"context": turn.context}
            ),
            NewMessage("user", result_blocks(results), metadata={"tool_results": [_result_meta(r) for r in results]}),
        ]
        await asyncio.to_thread(turn.turns.store.append_messages, turn.thread.id, messages)
        turn.user_stored = True

    async def finish(self, outcome: Optional[StreamOutcome], left_out: set[str], trailing: list[Any]) -> None:
        turn = self.turn
        assistant = turn.from_outcome(outcome, frozenset(left_out)) if outcome is not None else None
        await asyncio.to_thread(turn.persist, assistant, trailing)


def _result_meta(result: Any) -> dict[str, Any]:
    return {
        "call_id": result.call_id,
        "tool_id": result.tool_id,
        "is_error": result.is_error,
        "duration_ms": result.duration_ms,
        "attempts": result.attempts,
    }


class ThreadTurns:
    def __init__(
        self, proxy: "Proxy", store: ThreadStore, tools: ToolStore, background: "BackgroundWork", busy_wait: float
    ) -> None:
        self.proxy = proxy
        self.store = store
        self.tools = tools
        self.background = background  # where a stream's turn is persisted when it settles
        self.busy_wait = busy_wait  # seconds a turn waits for the one running on its thread

    async def visible_thread(self, key: ApiKey, thread_id: str) -> Thread:
        """The thread, if ``key`` may see it (threads.store.visible), else 404."""
        thread = visible(key, await asyncio.to_thread(self.store.get_thread, key.account_id, thread_id))
        if thread is None:
            raise HTTPError(404, f"no thread {thread_id!r}", code="thread_not_found")
        return thread

    async def fitted(
        self, thread_id: str, content: Any, budget: int, route: ModelRoute, max_tokens: int
    ) -> tuple[Any, int]:
        """The thread's latest messages that fit ``budget`` tokens with the new user ``content``
        (``history.fit``), and how many the thread holds; 400 when not even the new one fits."""
        history, total = await asyncio.to_thread(self._history, thread_id, budget)
        fitted = fit(history, {"role": "user", "content": content}, budget)
        if fitted is None:
            raise HTTPError(
                400,
                f"the new message, the system prompt and max_tokens ({max_tokens}) do not fit the context window of {route.name!r}",
                code="context_length_exceeded",
                param="max_tokens",
            )
        return fitted, total

    async def run(self, request: "Origin", key: ApiKey, thread: Thread, body: dict[str, Any]) -> AnyResponse:
        started = time.perf_counter()
        unknown = sorted(set(body) - TURN_FIELDS)
        if unknown:
            raise HTTPError(
                400,
                f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(TURN_FIELDS))}",
                param=unknown[0],
            )
        check_model_request(body)
        route = self.proxy.route(body.get("model"), key)
        content = user_content(body.get("content"))
        max_tokens = token_count(body.get("max_tokens", route.max_output_tokens), "max_tokens")
        system = body.get("system", thread.system)
        if system is not None and not isinstance(system, (str, list)):
            raise HTTPError(400, "'system' must be a string or a list of text blocks", param="system")
        stream = body.get("stream") is True
        metadata = metadata_object(body) if body.get("metadata") is not None else None

        lease = await self._acquire(thread.id)
        turn = Turn(self, thread, route, NewMessage("user", content, metadata=metadata), lease)
        handed_over = False
        try:
            payload = {k: body[k] for k in _PASSED if k in body}
            payload.update(model=route.name, max_tokens=max_tokens, stream=stream)
            if system:
                payload["system"] = system
            tools = await resolve_tools(self.tools, key, body["tool_ids"]) if "tool_ids" in body else []
            max_turns = max_turns_from({k: body[k] for k in ("max_tool_turns",) if k in body})
            budget = (route.context_window or DEFAULT_CONTEXT_WINDOW) - max_tokens - REQUEST_OVERHEAD_TOKENS
            budget -= (
                tokens_of(system)
                + tokens_of(payload.get("tools"))
                + tokens_of([CANONICAL_TOOLS.definition(t) for t in tools] or None)
            )
            fitted, total = await self.fitted(thread.id, content, budget, route, max_tokens)
            turn.context = {
                "messages_in_thread": total,
                "messages_sent": fitted.kept,
                "messages_dropped": total - fitted.kept,
                "truncated": fitted.kept < total,
            }
            payload["messages"] = fitted.messages
            if route.wire != THREAD_FORMAT:
                payload = translated.to_provider(THREAD_FORMAT, route, payload)
            if tools:
                loop = ToolLoop(
                    self.proxy,
                    key,
                    route,
                    payload,
                    tools,
                    request.request_id,
                    {},
                    started,
                    max_turns,
                    thread_id=thread.id,
                    steps=LoopSteps(turn),
                    run_mixed=True,
                )
                response = await (self._loop_stream(turn, loop) if stream else self._loop_complete(turn, loop))
                handed_over = True
                return response
            call = self.proxy.prepare(key, route, payload, None, {}, request.request_id, stream, started)
            try:
                if stream:
                    response = await self._stream(turn, call)
                else:
                    response = await self._complete(turn, call)
            except BaseException:
                call.release()
                raise
            handed_over = True
            return response
        finally:
            if not handed_over:
                await asyncio.to_thread(self.store.release_lease, thread.id, lease)

    async def _acquire(self, thread_id: str) -> str:
        """Wait (bounded) for the turn running on this thread to finish, then hold the thread."""
        lease = new_id("lease_")
        deadline = time.monotonic() + self.busy_wait
        while not await asyncio.to_thread(self.store.acquire_lease, thread_id, lease, LEASE_MS):
            if time.monotonic() >= deadline:
                raise HTTPError(
                    409,
                    "another turn of this thread is still in progress; send this one when it has finished",
                    code="thread_busy",
                )
            await asyncio.sleep(BUSY_POLL_S)
        return lease

    def _history(self, thread_id: str, budget: int) -> tuple[list[dict[str, Any]], int]:
        """The newest stored messages, page by page, until they surely exceed ``budget``."""
        total = self.store.count_messages(thread_id)
        loaded: list[dict[str, Any]] = []
        used, before = 0, None
        while used <= budget:
            page, more = self.store.list_messages(thread_id, order="desc", limit=HISTORY_PAGE, before=before)
            for message in page:
                item = {"role": message.role, "content": message.content}
                loaded.append(item)
                used += tokens_of(item)
            if not more or not page:
                break
            before = page[-1].id
        loaded.reverse()
        return loaded, total

    def _headers(self, turn: Turn) -> list[tuple[str, str]]:
        context = turn.context
        return [
            ("x-tollway-thread-id", turn.thread.id),
            ("x-tollway-context-messages", str(context["messages_sent"])),
            ("x-tollway-context-truncated", "true" if context["truncated"] else "false"),
        ]

    async def _complete(self, turn: Turn, call: "Call") -> AnyResponse:
        done = await self.proxy.complete(call)
        return await self._reply(turn, done, None, call.extra_headers)

    async def _loop_complete(self, turn: Turn, loop: ToolLoop) -> AnyResponse:
        done, changed = await loop.complete()
        extra = [h for h in done.headers if h[0] == CLAMP_HEADER] + [("x-tollway-tool-turns", str(loop.turns))]
        return await self._reply(turn, done, changed, extra, loop.trailing)

    async def _loop_stream(self, turn: Turn, loop: ToolLoop) -> AnyResponse:
        route = turn.route
        factory = (
            (lambda: translated.stream_translator(THREAD_FORMAT, route, route.name, {}))
            if route.wire != THREAD_FORMAT
            else None
        )
        opened = await loop.open(THREAD_FORMAT, turn.route.name, {}, factory)
        if not isinstance(opened, StreamResponse):
            raise upstream_error(opened.status, opened.body)
        opened.headers += self._headers(turn)
        return opened

    async def _reply(
        self,
        turn: Turn,
        done: "Completed",
        changed: Optional[dict[str, Any]],
        extra_headers: list[tuple[str, str]],
        trailing: Optional[list[Any]] = None,
    ) -> AnyResponse:
        if not done.ok:
            raise upstream_error(done.status, done.body)
        message = changed if changed is not None else orjson.loads(done.body)
        kind = turn.route.wire
        if kind != THREAD_FORMAT:
            message = FORMATS[THREAD_FORMAT].response_from_canonical(
                FORMATS[kind].response_to_canonical(message), turn.route.name
            )
        usage = dict(message.get("usage") or {})
        usage["cost_micros"] = done.cost_micros
        assistant = NewMessage(
            "assistant",
            [b for b in message.get("content") or [] if isinstance(b, dict)],
            model=turn.route.name,
            usage=usage,
            stop_reason=message.get("stop_reason"),
            metadata={"context": turn.context, "upstream_id": message.get("id")},
        )
        stored = await asyncio.to_thread(turn.persist, assistant, trailing)
        replies = [m for m in stored if m.role == "assistant"]
        if replies:
            reply = replies[-1].public()
        else:  # the model produced nothing to store
            reply = {
                "id": None,
                "object": "thread.message",
                "thread_id": turn.thread.id,
                "role": "assistant",
                "content": [],
                "model": turn.route.name,
                "usage": usage,
                "stop_reason": message.get("stop_reason"),
                "metadata": None,
                "created_at": None,
            }
        reply["context"] = turn.context
        return json_response(200, reply, self._headers(turn) + extra_headers)

    async def _stream(self, turn: Turn, call: "Call") -> AnyResponse:
        upstream = await self.proxy.open_stream(call, then=turn.finish_stream)
        if not isinstance(upstream, UpstreamStream):
            raise upstream_error(upstream.status, upstream.body)
        route = turn.route
        if route.wire == THREAD_FORMAT:
            chunks = upstream
        else:
            chunks = translated.translate_stream(
                upstream, translated.stream_translator(THREAD_FORMAT, route, route.name, {})
            )
        return StreamResponse(200, SSE_HEADERS + self._headers(turn) + call.extra_headers, chunks, upstream.close)
