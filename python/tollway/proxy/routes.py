"""POST /v1/chat/completions, POST /v1/messages and GET /v1/models (the other compatible routes: extras.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.http.core import AnyResponse, App, Request, Response
from tollway.proxy import extras
from tollway.proxy.handler import Proxy

if TYPE_CHECKING:
    from tollway.gateway import Gateway


def register(app: App, gw: "Gateway") -> Proxy:
    proxy = Proxy(gw)

    @app.route("POST", "/v1/chat/completions")
    async def chat_completions(request: Request) -> AnyResponse:
        return await proxy.handle(request, "openai")

    @app.route("POST", "/v1/messages")
    async def messages(request: Request) -> AnyResponse:
        return await proxy.handle(request, "anthropic")

    @app.route("GET", "/v1/models")
    @extras.in_client_shape
    async def models(request: Request) -> Response:
        await gw.auth.authenticate(request.headers)
        return extras.model_listing(gw, request)

    extras.register(app, gw, proxy)
    return proxy
