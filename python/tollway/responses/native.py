"""POST /v1/responses to a provider that serves the Responses API: passed through natively.

Byte for byte when nothing needs changing, and capped, clamped and metered exactly as
chat completions: the same ``Proxy.prepare`` / ``Proxy.forward`` with the Responses
wire format's adapter (its endpoint, its ``max_output_tokens``, its usage). Cached
input tokens are recorded as cache reads and reasoning tokens as output, as for chat.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from tollway.config import ModelRoute
from tollway.capabilities import Capability, Routes
from tollway.http.core import AnyResponse, HTTPError, Request
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.proxy.checks import check_model_request
from tollway.providers import openai_responses

if TYPE_CHECKING:
    from tollway.proxy.handler import Proxy


async def passthrough(
    proxy: "Proxy",
    request: Request,
    key: ApiKey,
    route: ModelRoute,
    payload: dict[str, Any],
    raw: Optional[bytes],
    started: float,
) -> AnyResponse:
    """Forward a Responses request to ``route``'s provider in the Responses format.

    ``raw`` is the client's body when ``payload`` is exactly what it sent (forwarded
    unchanged unless the model is renamed or ``max_output_tokens`` clamped), else None.
    """
    stream = payload.get("stream") is True
    call = proxy.prepare(
        key, route, payload, raw, request.headers, request.request_id, stream, started, adapter=openai_responses.ADAPTER
    )
    return await proxy.forward(call, stream)


def capability(*, auth: Authenticator, proxy: "Proxy") -> Capability:
    """``POST /v1/responses`` for the models whose provider serves the Responses API."""
    routes = Routes()

    @routes.route("POST", "/v1/responses")
    async def responses(request: Request) -> AnyResponse:
        started = time.perf_counter()
        key = await auth.authenticate(request.headers)
        payload = request.json(allow_nul=True)
        if not isinstance(payload, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        check_model_request(payload)
        openai_responses.check_request(payload)
        route = proxy.route(payload.get("model"))
        if not route.responses:
            raise HTTPError(
                400,
                f"the model {payload.get('model')!r} is not served by a provider with the Responses API "
                "(set responses = true on its provider)",
                param="model",
            )
        return await passthrough(proxy, request, key, route, payload, request.body, started)

    return Capability(routes)
