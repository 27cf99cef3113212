"""/v1/threads: conversations held server-side.

A standard key sees only its own threads: those of its end user when the key was
minted with an ``end_user_id`` (stamped on every thread it creates, and not
overridable), otherwise those it created. An admin key sees every thread of its
account. A thread another key may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional

from tollway.capabilities import Capability, Routes
from tollway.config import Settings
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, json_object, metadata_object, page, page_limit
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.threads.store import UNSET, ThreadStore
from tollway.threads.turns import ThreadTurns
from tollway.tools import ToolStore

if TYPE_CHECKING:
    from tollway.background import BackgroundWork
    from tollway.proxy.handler import Proxy

_CREATE_FIELDS = {"end_user_id", "metadata", "system"}
_PATCH_FIELDS = {"metadata", "system"}


def _system(body: dict[str, Any]) -> Optional[str]:
    value = body.get("system")
    if value is not None and not isinstance(value, str):
        raise HTTPError(400, "'system' must be a string or null", param="system")
    return value


def _owner_filter(key: ApiKey) -> dict[str, Optional[str]]:
    """The listing filter that keeps a standard key to its own threads."""
    if key.is_admin:
        return {}
    if key.end_user_id is not None:
        return {"end_user_id": key.end_user_id}
    return {"key_id": key.id}


def capability(
    *,
    auth: Authenticator,
    threads: ThreadStore,
    tools: ToolStore,
    proxy: "Proxy",
    background: "BackgroundWork",
    settings: Settings,
) -> Capability:
    """The thread routes; provides ``turns`` (what runs a turn, also with no HTTP request)."""
    routes = Routes()
    store = threads
    turns = ThreadTurns(proxy, threads, tools, background, settings.thread_busy_wait)

    visible_thread = turns.visible_thread

    @routes.route("POST", "/v1/threads")
    async def create_thread(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        body = json_object(request) if request.body else {}
        check_fields(body, _CREATE_FIELDS)
        end_user_id = body.get("end_user_id")
        if end_user_id is not None and (not isinstance(end_user_id, str) or not end_user_id or len(end_user_id) > 200):
            raise HTTPError(
                400, "'end_user_id' must be a non-empty string of at most 200 characters", param="end_user_id"
            )
        if not key.is_admin and key.end_user_id is not None:
            if end_user_id is not None and end_user_id != key.end_user_id:
                raise HTTPError(
                    403,
                    "this key belongs to an end user; its threads are that end user's",
                    code="end_user_mismatch",
                    param="end_user_id",
                )
            end_user_id = key.end_user_id
        thread = await asyncio.to_thread(
            store.create_thread, key.account_id, key.id, end_user_id, metadata_object(body), _system(body)
        )
        return json_response(201, thread.public())

    @routes.route("GET", "/v1/threads")
    async def list_threads(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        filters: dict[str, Any] = _owner_filter(key)
        if key.is_admin and query.get("end_user_id"):
            filters["end_user_id"] = query["end_user_id"]
        try:
            items, more = await asyncio.to_thread(
                store.list_threads,
                key.account_id,
                limit=page_limit(query, 20),
                after=query.get("after") or None,
                **filters,
            )
        except ValueError as exc:
            raise HTTPError(400, str(exc), param="after") from None
        return json_response(200, page(items, more))

    @routes.route("GET", "/v1/threads/{thread_id}")
    async def get_thread(request: Request, thread_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, (await visible_thread(key, thread_id)).public())

    @routes.route("PATCH", "/v1/threads/{thread_id}")
    async def update_thread(request: Request, thread_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        body = json_object(request)
        check_fields(body, _PATCH_FIELDS)
        await visible_thread(key, thread_id)
        new_metadata = metadata_object(body) if "metadata" in body else None
        system = _system(body) if "system" in body else UNSET
        thread = await asyncio.to_thread(
            store.update_thread, key.account_id, thread_id, metadata=new_metadata, system=system
        )
        if thread is None:
            raise HTTPError(404, f"no thread {thread_id!r}", code="thread_not_found")
        return json_response(200, thread.public())

    @routes.route("DELETE", "/v1/threads/{thread_id}")
    async def delete_thread(request: Request, thread_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        await visible_thread(key, thread_id)
        await asyncio.to_thread(store.delete_thread, key.account_id, thread_id)
        return json_response(200, {"id": thread_id, "object": "thread.deleted", "deleted": True})

    @routes.route("POST", "/v1/threads/{thread_id}/messages")
    async def add_message(request: Request, thread_id: str):
        key = await auth.authenticate(request.headers)
        body = json_object(request)
        thread = await visible_thread(key, thread_id)
        return await turns.run(request, key, thread, body)

    @routes.route("GET", "/v1/threads/{thread_id}/messages")
    async def list_messages(request: Request, thread_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        await visible_thread(key, thread_id)
        query = request.query()
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise HTTPError(400, "'order' must be 'asc' or 'desc'", param="order")
        try:
            items, more = await asyncio.to_thread(
                store.list_messages,
                thread_id,
                order=order,
                limit=page_limit(query, 30),
                before=query.get("before") or None,
                after=query.get("after") or None,
            )
        except ValueError as exc:
            raise HTTPError(400, str(exc), param="before" if query.get("before") else "after") from None
        return json_response(200, page(items, more))

    @routes.route("GET", "/v1/threads/{thread_id}/export")
    async def export_thread(request: Request, thread_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        thread = await visible_thread(key, thread_id)
        messages = await asyncio.to_thread(store.all_messages, thread_id)
        return json_response(
            200,
            {"object": "thread.export", "thread": thread.public(), "messages": [m.public() for m in messages]},
        )

    return Capability(routes, provides={"turns": turns})
