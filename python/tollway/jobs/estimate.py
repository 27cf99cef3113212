"""What a job's call will hold, worked out at submission exactly as the call path will: its
endpoint, its model's route (unknown model 404, a model the key may not call 403), the
input estimate of the body the provider will get and the output it asked for.

A thread turn's input is its history as the turn would fit it now (the thread may grow
before the job runs; the call then holds its own estimate, see README "Jobs")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import orjson

from tollway.config import ModelRoute
from tollway.http.core import HTTPError
from tollway.keys import ApiKey
from tollway.providers import ADAPTERS
from tollway.proxy.checks import check_model_request, token_count
from tollway.threads.history import REQUEST_OVERHEAD_TOKENS, tokens_of
from tollway.threads.turns import DEFAULT_CONTEXT_WINDOW, THREAD_FORMAT, TURN_FIELDS, user_content

if TYPE_CHECKING:
    from tollway.proxy.handler import Proxy
    from tollway.threads.turns import ThreadTurns

# The endpoints a job may run, and the wire format of each (ADAPTERS).
SHAPES = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic", "/v1/responses": "openai_responses"}
THREAD_ENDPOINT = re.compile(r"^/v1/threads/([A-Za-z0-9_-]{1,40})/messages$")
ENDPOINTS = (*SHAPES, "/v1/threads/{thread_id}/messages")


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: str
    shape: str  # the format of the body and of the result (a turn's: "thread")
    thread_id: Optional[str] = None

    @property
    def error_shape(self) -> str:
        return "anthropic" if self.endpoint == "/v1/messages" else "openai"


@dataclass(frozen=True, slots=True)
class Estimate:
    route: ModelRoute
    input_tokens: int
    max_tokens: Optional[int]
    min_output_tokens: int


def target_of(endpoint: Any) -> Target:
    if isinstance(endpoint, str):
        if endpoint in SHAPES:
            return Target(endpoint, SHAPES[endpoint])
        found = THREAD_ENDPOINT.match(endpoint)
        if found:
            return Target(endpoint, "thread", found.group(1))
    raise HTTPError(400, f"'endpoint' must be one of {', '.join(ENDPOINTS)}", param="endpoint")


async def estimate(proxy: "Proxy", turns: "ThreadTurns", key: ApiKey, target: Target, body: dict[str, Any]) -> Estimate:
    if body.get("stream") is True:
        raise HTTPError(
            400, "a job's call cannot stream: its result is stored whole (leave out 'stream')", param="stream"
        )
    if target.thread_id is not None:
        return await _turn(proxy, turns, key, target.thread_id, body)
    check_model_request(body)
    route = proxy.route(body.get("model"), key)
    adapter = ADAPTERS[target.shape]
    requested = adapter.requested_max_tokens(body)
    if requested is not None:
        token_count(requested, "max_tokens")
    raw = orjson.dumps(body)
    return Estimate(
        route, adapter.estimate_input_tokens(body, len(raw), route.context_window), requested, adapter.min_output_tokens
    )


async def _turn(proxy: "Proxy", turns: "ThreadTurns", key: ApiKey, thread_id: str, body: dict[str, Any]) -> Estimate:
    unknown = sorted(set(body) - TURN_FIELDS)
    if unknown:
        raise HTTPError(
            400, f"unknown field(s) in 'body': {', '.join(unknown)}; allowed: {', '.join(sorted(TURN_FIELDS))}",
            param=unknown[0],
        )  # fmt: skip
    check_model_request(body)
    thread = await turns.visible_thread(key, thread_id)
    route = proxy.route(body.get("model"), key)
    content = user_content(body.get("content"))
    max_tokens = token_count(body.get("max_tokens", route.max_output_tokens), "max_tokens")
    system = body.get("system", thread.system)
    if system is not None and not isinstance(system, (str, list)):
        raise HTTPError(400, "'system' must be a string or a list of text blocks", param="system")
    budget = (route.context_window or DEFAULT_CONTEXT_WINDOW) - max_tokens - REQUEST_OVERHEAD_TOKENS
    budget -= tokens_of(system) + tokens_of(body.get("tools"))
    fitted, _ = await turns.fitted(thread.id, content, budget, route, max_tokens)
    payload: dict[str, Any] = {"model": route.name, "max_tokens": max_tokens, "messages": fitted.messages}
    if system:
        payload["system"] = system
    adapter = ADAPTERS[THREAD_FORMAT]
    raw = orjson.dumps(payload)
    return Estimate(
        route,
        adapter.estimate_input_tokens(payload, len(raw), route.context_window),
        max_tokens,
        adapter.min_output_tokens,
    )
