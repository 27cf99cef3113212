"""POST /v1/chat/completions, POST /v1/messages and GET /v1/models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.http.core import AnyResponse, App, Request, Response, json_response
from tollway.proxy.handler import Proxy
from tollway.responses import native as responses_native

if TYPE_CHECKING:
    from tollway.gateway import Gateway


def register(app: App, gw: "Gateway") -> Proxy:
    proxy = Proxy(gw)
    responses_native.register(app, gw, proxy)

    @app.route("POST", "/v1/chat/completions")
    async def chat_completions(request: Request) -> AnyResponse:
        return await proxy.handle(request, "openai")

    @app.route("POST", "/v1/messages")
    async def messages(request: Request) -> AnyResponse:
        return await proxy.handle(request, "anthropic")

    @app.route("GET", "/v1/models")
    async def models(request: Request) -> Response:
        await gw.auth.authenticate(request.headers)
        routes = [gw.settings.models[name] for name in gw.settings.model_names]
        routes = [r for r in routes if gw.is_routable(r)]
        created = gw.started_at // 1000
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
    return proxy
