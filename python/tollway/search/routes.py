"""GET /v1/search and GET /v1/search/status; the hooks that keep the index in step with the threads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.capabilities import Capability
from tollway.config import Settings
from tollway.http.core import Request, Response, json_response
from tollway.http.params import page_limit
from tollway.keys.auth import Authenticator
from tollway.search.service import Search
from tollway.store import Database

if TYPE_CHECKING:
    from tollway.keys import KeyStore
    from tollway.proxy.handler import Proxy


def capability(
    *, auth: Authenticator, settings: Settings, db: Database, store: "KeyStore", proxy: "Proxy"
) -> Capability:
    """Provides ``search`` (None when TOLLWAY_SEARCH=off: no routes, no hooks, nothing queued)."""
    cap = Capability()
    if not settings.search.enabled:
        cap.provides["search"] = None
        return cap
    search = Search(settings.search, db, settings.data_dir, store, proxy)
    routes = cap.routes

    @routes.route("GET", "/v1/search")
    async def search_messages(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        return json_response(200, await search.query(key, query, page_limit(query, 10)))

    @routes.route("GET", "/v1/search/status")
    async def search_status(request: Request) -> Response:
        key = await auth.admin(request.headers)
        return json_response(200, await search.status(key))

    cap.hooks.message_stored.append(search.on_stored)
    cap.hooks.thread_deleted.append(search.on_deleted)
    cap.on_startup.append(search.start)
    cap.on_shutdown.append(search.stop)
    cap.provides["search"] = search
    return cap
