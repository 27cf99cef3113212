"""/v1/responses: the OpenAI Responses API on every provider.

POST creates a response: on a model whose provider speaks Responses the call
goes through natively (responses/native.py), on any other it is translated
(responses/translated.py). ``previous_response_id`` names a stored response
whose conversation goes before ``input``; the response is stored unless
``store`` is false. GET and DELETE /v1/responses/{id} and GET
/v1/responses/{id}/input_items read and erase stored responses, scoped like
threads: another key's response answers 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional

import orjson

from tollway._core import StreamOutcome
from tollway.capabilities import Capability, Routes
from tollway.config import ModelRoute
from tollway.http.core import AnyResponse, HTTPError, Request, Response, StreamResponse, json_response
from tollway.http.params import json_object, page_limit
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.providers import openai_responses
from tollway.providers.openai_responses.convert import input_items, new_id, to_canonical
from tollway.proxy.checks import check_model_request
from tollway.responses import native, translated
from tollway.responses.store import ResponseStore, Stored
from tollway.threads.store import ThreadStore
from tollway.tools import ToolStore
from tollway.tools.loop import max_turns_from, resolve_tools
from tollway.translate.errors import TranslationError

if TYPE_CHECKING:
    from tollway.background import BackgroundWork
    from tollway.proxy.handler import Origin, Proxy

log = logging.getLogger("tollway.responses")

# Refused on translated calls: only OpenAI's own service has them.
_UNSUPPORTED = {
    "background": "background responses are not supported",
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompts are not supported",
}


def speaks_responses(route: ModelRoute) -> bool:
    """Does the route's provider take Responses requests itself (then the call is passed through)?"""
    return route.responses


_NO_PREVIOUS = (b'"previous_response_id":null', b'"previous_response_id": null')


async def _with_previous(chunks: AsyncIterator[bytes], response_id: str) -> AsyncIterator[bytes]:
    """A passed-through stream whose response objects name ``response_id`` as their
    previous response again (the provider was sent the conversation instead of the id)."""
    named = b'"previous_response_id":' + orjson.dumps(response_id)
    keep = max(len(p) for p in _NO_PREVIOUS) - 1  # a match may straddle two chunks
    tail = b""
    async for chunk in chunks:
        buffer = tail + chunk
        for pattern in _NO_PREVIOUS:
            buffer = buffer.replace(pattern, named)
        if len(buffer) > keep:
            tail = buffer[-keep:]
            yield buffer[:-keep]
        else:
            tail = buffer
    if tail:
        yield tail


def _upstream_item(item: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A stored item as input for a provider that did not store it: our ids and statuses
    mean nothing there; reasoning items (bound to the provider's own store) are left out."""
    if item.get("type") == "reasoning":
        return None
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def _not_found(response_id: str) -> HTTPError:
    return HTTPError(404, f"No response found with id '{response_id}'.", code="response_not_found")


def _check(payload: dict[str, Any]) -> None:
    check_model_request(payload)
    store = payload.get("store")
    if store is not None and not isinstance(store, bool):
        raise HTTPError(400, "'store' must be a boolean", param="store")
    previous = payload.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise HTTPError(400, "'previous_response_id' must be a response id", param="previous_response_id")


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise HTTPError(400, "'order' must be 'asc' or 'desc'", param="order")
    limit = page_limit(query, 20)
    ordered = items if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise HTTPError(400, f"unknown cursor: no item {after!r} in this response", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": len(ordered) > limit,
    }


def capability(
    *, auth: Authenticator, threads: ThreadStore, tools: ToolStore, proxy: "Proxy", background: "BackgroundWork"
) -> Capability:
    """POST /v1/responses, and GET / DELETE /v1/responses/{id} (+ input_items)."""
    routes = Routes()
    store = ResponseStore(threads)

    async def previous_of(key: ApiKey, payload: dict[str, Any]) -> Optional[Stored]:
        if payload.get("previous_response_id") is None:
            return None
        previous = await asyncio.to_thread(store.get, key, payload["previous_response_id"])
        if previous is None:
            raise HTTPError(
                404,
                f"Previous response with id '{payload['previous_response_id']}' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        return previous

    def save(key: ApiKey, response: Any, items: list[dict[str, Any]], previous: Optional[Stored]) -> None:
        if (
            not isinstance(response, dict)
            or not isinstance(response.get("id"), str)
            or not isinstance(response.get("output"), list)
        ):
            log.warning("a response without an id or output was not stored")
            return
        try:
            store.save(key, response, items, previous)
        except Exception:  # the call is made and paid for: the client still gets its answer
            log.exception("could not store response %s", response["id"])

    async def native_call(
        request: "Origin", key: ApiKey, route: ModelRoute, payload: dict[str, Any], raw: Optional[bytes], started: float
    ) -> AnyResponse:
        """Passed through; Tollway's store stands in for the provider's: a previous response of
        ours is sent as input items, and the answer is stored (unless store is false)."""
        openai_responses.check_request(payload)
        previous = await previous_of(key, payload)
        record = payload.get("store") is not False
        try:
            items = input_items(payload.get("input", []))
        except TranslationError as exc:
            # Input the store cannot keep (an item type only the provider knows): the call
            # is still passed through, unstored; it cannot be continued from our store.
            if previous is not None:
                raise HTTPError(400, exc.message, param=exc.param) from None
            log.info("a Responses request with input the store cannot keep is passed through unstored: %s", exc.message)
            items, record = [], False
        if previous is not None:
            history = [
                i
                for i in (
                    _upstream_item(x) for x in previous.input_items() + list(previous.response.get("output") or [])
                )
                if i
            ]
            payload = {k: v for k, v in payload.items() if k != "previous_response_id"}
            payload["input"] = history + [i for i in (_upstream_item(x) for x in items) if i]
            raw = None
        stream = payload.get("stream") is True

        def settled(outcome: StreamOutcome) -> None:
            if outcome.final_response is not None:
                answer = orjson.loads(outcome.final_response)
                if previous is not None and isinstance(answer, dict):
                    answer["previous_response_id"] = previous.thread.id
                background.submit(save, key, answer, items, previous)

        response = await native.passthrough(
            proxy, request, key, route, payload, raw, started, settled if record and stream else None
        )
        ok = 200 <= response.status < 300
        if isinstance(response, StreamResponse):
            if ok and previous is not None:
                response.chunks = _with_previous(response.chunks, previous.thread.id)
            return response
        if ok:
            try:
                answer = orjson.loads(response.body)
            except orjson.JSONDecodeError:
                return response  # not a response object: passed on as the provider sent it, unstored
            if previous is not None and isinstance(answer, dict):
                answer["previous_response_id"] = previous.thread.id
                response.body = orjson.dumps(answer)
            if record:
                await asyncio.to_thread(save, key, answer, items, previous)
        return response

    async def stored(key: ApiKey, response_id: str) -> Stored:
        found = await asyncio.to_thread(store.get, key, response_id)
        if found is None:
            raise _not_found(response_id)
        return found

    @routes.route("POST", "/v1/responses")
    async def create(request: Request) -> AnyResponse:
        started = time.perf_counter()
        key = await auth.authenticate(request.headers)
        return await respond(request, key, json_object(request), request.body, started)

    async def respond(
        request: "Origin", key: ApiKey, payload: dict[str, Any], raw: Optional[bytes] = None, started: float = 0.0
    ) -> AnyResponse:
        """POST /v1/responses for ``key`` (also with no HTTP request: a job); ``raw``: the
        client's bytes when ``payload`` is exactly what it sent."""
        started = started or time.perf_counter()
        _check(payload)
        route = proxy.route(payload.get("model"), key)
        if speaks_responses(route):
            return await native_call(request, key, route, payload, raw, started)
        for name, message in _UNSUPPORTED.items():
            if payload.get(name) not in (None, False):
                raise HTTPError(400, message, param=name)
        loop_tools = None
        if "tool_ids" in payload:
            loop_tools = (await resolve_tools(tools, key, payload.pop("tool_ids")), max_turns_from(payload))
        previous = await previous_of(key, payload)
        try:
            items = input_items(payload.get("input", []))
            call_request = to_canonical(payload, previous.history() if previous else None)
        except TranslationError as exc:
            raise HTTPError(400, exc.message, param=exc.param) from None
        response_id = new_id("resp_")

        async def on_done(response: dict[str, Any]) -> None:
            if payload.get("store") is not False:
                await asyncio.to_thread(save, key, response, items, previous)

        return await translated.handle(
            proxy, request, key, route, payload, call_request, response_id, started, on_done, loop_tools
        )

    @routes.route("GET", "/v1/responses/{response_id}")
    async def retrieve(request: Request, response_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, (await stored(key, response_id)).response)

    @routes.route("DELETE", "/v1/responses/{response_id}")
    async def delete(request: Request, response_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        if not await asyncio.to_thread(store.delete, key, response_id):
            raise _not_found(response_id)
        return json_response(200, {"id": response_id, "object": "response", "deleted": True})

    @routes.route("GET", "/v1/responses/{response_id}/input_items")
    async def list_input_items(request: Request, response_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        found = await stored(key, response_id)
        return json_response(200, _page(found.input_items(), request.query()))

    return Capability(routes, provides={"respond": respond})
