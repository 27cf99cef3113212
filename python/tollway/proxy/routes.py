"""POST /v1/chat/completions, POST /v1/messages and GET /v1/models."""

from __future__ import annotations

from typing import Callable

from tollway.capabilities import Capability, Routes
from tollway.config import ModelRoute, Settings
from tollway.http.core import AnyResponse, Request, Response, json_response
from tollway.keys.auth import Authenticator
from tollway.proxy.handler import Proxy, Runtime


def capability(
    *, runtime: Runtime, auth: Authenticator, settings: Settings, is_routable: Callable[[ModelRoute], bool], started_at: int
) -> Capability:
    """The model routes; provides ``proxy`` (the call path, which threads and tools use)."""
    routes = Routes()
    proxy = Proxy(runtime)

    @routes.route("POST", "/v1/chat/completions")
    async def chat_completions(request: Request) -> AnyResponse:
        return await proxy.handle(request, "openai")

    @routes.route("POST", "/v1/messages")
    async def messages(request: Request) -> AnyResponse:
        return await proxy.handle(request, "anthropic")

    @routes.route("GET", "/v1/models")
    async def models(request: Request) -> Response:
        await auth.authenticate(request.headers)
        routes = [settings.models[name] for name in settings.model_names]
        routes = [r for r in routes if is_routable(r)]
        created = started_at // 1000
        if "anthropic-version" in request.headers:
            data = [
                {"type": "model", "id": r.name, "display_name": r.name, "created_at": "1970-01-01T00:00:00Z"}
                for r in routes
            ]
            return json_response(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        return json_response(
            200,
            {
                "object": "list",
                "data": [
                    {"id": r.name, "object": "model", "created": created, "owned_by": r.provider.name}
                    for r in routes
                ],
            },
        )

    return Capability(routes, provides={"proxy": proxy})
