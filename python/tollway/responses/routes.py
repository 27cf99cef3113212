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
from typing import TYPE_CHECKING, Any, Optional

from tollway.config import ModelRoute
from tollway.http.core import AnyResponse, App, HTTPError, Request, Response, json_response
from tollway.http.params import json_object, page_limit
from tollway.keys import ApiKey
from tollway.providers.formats import RESPONSES_KINDS
from tollway.providers.openai_responses.convert import input_items, new_id, to_canonical
from tollway.proxy.checks import check_model_request
from tollway.responses import translated
from tollway.responses.store import ResponseStore, Stored
from tollway.tools.loop import max_turns_from, resolve_tools
from tollway.translate.errors import TranslationError

if TYPE_CHECKING:
    from tollway.gateway import Gateway
    from tollway.proxy.handler import Proxy

log = logging.getLogger("tollway.responses")

# Refused on translated calls: only OpenAI's own service has them.
_UNSUPPORTED = {
    "background": "background responses are not supported",
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompts are not supported",
}


def speaks_responses(route: ModelRoute) -> bool:
    """Does the route's provider take Responses requests itself (then the call is passed through)?"""
    return route.provider.kind in RESPONSES_KINDS


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


def register(app: App, gw: "Gateway", proxy: "Proxy") -> None:
    store = ResponseStore(gw.threads)

    async def stored(key: ApiKey, response_id: str) -> Stored:
        found = await asyncio.to_thread(store.get, key, response_id)
        if found is None:
            raise _not_found(response_id)
        return found

    @app.route("POST", "/v1/responses")
    async def create(request: Request) -> AnyResponse:
        started = time.perf_counter()
        key = await gw.auth.authenticate(request.headers)
        payload = json_object(request)
        _check(payload)
        route = proxy.route(payload.get("model"))
        if speaks_responses(route):
            from tollway.responses import native

            return await native.passthrough(proxy, request, key, route, payload, request.body, started)
        for name, message in _UNSUPPORTED.items():
            if payload.get(name) not in (None, False):
                raise HTTPError(400, message, param=name)
        loop_tools = None
        if "tool_ids" in payload:
            loop_tools = (await resolve_tools(gw, key, payload.pop("tool_ids")), max_turns_from(payload))
        previous: Optional[Stored] = None
        if payload.get("previous_response_id") is not None:
            previous = await asyncio.to_thread(store.get, key, payload["previous_response_id"])
            if previous is None:
                raise HTTPError(
                    404,
                    f"Previous response with id '{payload['previous_response_id']}' not found.",
                    code="previous_response_not_found",
                    param="previous_response_id",
                )
        try:
            items = input_items(payload.get("input", []))
            call_request = to_canonical(payload, previous.history() if previous else None)
        except TranslationError as exc:
            raise HTTPError(400, exc.message, param=exc.param) from None
        response_id = new_id("resp_")

        async def on_done(response: dict[str, Any]) -> None:
            if payload.get("store") is False:
                return
            try:
                await asyncio.to_thread(store.save, key, response, items, previous)
            except Exception:  # the call is made and paid for: the client still gets its answer
                log.exception("could not store response %s", response["id"])

        return await translated.handle(
            proxy, request, key, route, payload, call_request, response_id, started, on_done, loop_tools
        )

    @app.route("GET", "/v1/responses/{response_id}")
    async def retrieve(request: Request, response_id: str) -> Response:
        key = await gw.auth.authenticate(request.headers)
        return json_response(200, (await stored(key, response_id)).response)

    @app.route("DELETE", "/v1/responses/{response_id}")
    async def delete(request: Request, response_id: str) -> Response:
        key = await gw.auth.authenticate(request.headers)
        if not await asyncio.to_thread(store.delete, key, response_id):
            raise _not_found(response_id)
        return json_response(200, {"id": response_id, "object": "response", "deleted": True})

    @app.route("GET", "/v1/responses/{response_id}/input_items")
    async def list_input_items(request: Request, response_id: str) -> Response:
        key = await gw.auth.authenticate(request.headers)
        found = await stored(key, response_id)
        return json_response(200, _page(found.input_items(), request.query()))
