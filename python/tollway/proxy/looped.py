"""Plain-route calls that carry ``tool_ids``: the gateway runs the tool loop.

The request may also carry its own ``tools``; those stay the client's to run and
come back to it as usual. Works on both routes, with a model of either provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.config import ModelRoute
from tollway.http.core import AnyResponse, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.proxy import translated
from tollway.tools.loop import ToolLoop, max_turns_from, resolve_tools

if TYPE_CHECKING:
    from tollway.proxy.handler import Origin, Proxy


async def handle(
    proxy: "Proxy",
    request: "Origin",
    shape: str,
    key: ApiKey,
    route: ModelRoute,
    payload: dict[str, Any],
    started: float,
) -> AnyResponse:
    tools = await resolve_tools(proxy.gw.tools, key, payload.pop("tool_ids"))
    max_turns = max_turns_from(payload)
    model = payload["model"]
    cross = route.wire != shape
    if cross:
        provider_payload = translated.to_provider(shape, route, payload)
        client_headers = translated.client_headers(request, route)
    else:
        provider_payload, client_headers = payload, request.headers
    loop = ToolLoop(proxy, key, route, provider_payload, tools, request.request_id, client_headers, started, max_turns)

    if provider_payload.get("stream") is True:
        factory = (lambda: translated.stream_translator(shape, route, model, payload)) if cross else None
        opened = await loop.open(shape, model, payload, factory)
        if isinstance(opened, StreamResponse):
            return opened
        body = translated.error_to_client(shape, route, opened.status, opened.body) if cross else opened.body
        return Response(opened.status, body, opened.headers)

    done, changed = await loop.complete()
    if not done.ok:
        body = translated.error_to_client(shape, route, done.status, done.body) if cross else done.body
        return Response(done.status, body, done.headers)
    body = orjson.dumps(changed) if changed is not None else done.body
    if cross:
        body = translated.response_to_client(shape, route, body, model)
    return Response(
        done.status,
        body,
        [(n, v) for n, v in done.headers if n != "content-type"] + [("content-type", "application/json")],
    )
