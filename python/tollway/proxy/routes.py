"""POST /v1/chat/completions, POST /v1/messages and GET /v1/models (the other compatible routes: extras.py)."""

from __future__ import annotations

from typing import Callable

from tollway.capabilities import Capability, Routes
from tollway.config import ModelRoute, Settings
from tollway.http.core import AnyResponse, Request, Response
from tollway.keys.auth import Authenticator
from tollway.proxy import extras
from tollway.proxy.handler import Proxy, Runtime


def capability(
    *,
    runtime: Runtime,
    auth: Authenticator,
    settings: Settings,
    is_routable: Callable[[ModelRoute], bool],
    started_at: int,
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
    @extras.in_client_shape
    async def models(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        return extras.model_listing(settings, is_routable, started_at, request, key)

    return Capability(routes, provides={"proxy": proxy})
