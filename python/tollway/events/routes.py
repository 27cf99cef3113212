"""/v1/webhook-endpoints: an account's event endpoints (admin keys only), and the events
capability (the sender, the event sources, their hooks).

- ``POST /v1/webhook-endpoints`` ``{"url", "events": [...], "description"?}`` -> the
  endpoint with its signing ``secret`` (shown only here and on rotation).
- ``GET /v1/webhook-endpoints``, ``GET /v1/webhook-endpoints/:id``.
- ``PATCH /v1/webhook-endpoints/:id`` ``{"url"?, "description"?, "events"?, "disabled"?,
  "rotate_secret"?, "rotation_grace_seconds"?}``: re-enabling resumes its pending deliveries;
  a rotation signs with both secrets for the grace period (default 24 h).
- ``DELETE /v1/webhook-endpoints/:id``.
- ``GET /v1/webhook-endpoints/:id/deliveries``: newest first, each with its attempts.
- ``POST /v1/webhook-endpoints/:id/deliveries/:delivery_id/redeliver``: again, due now.
- ``POST /v1/webhook-endpoints/:id/test``: a ``webhook.test`` event to this endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from tollway.background import BackgroundWork
from tollway.capabilities import Capability, Routes
from tollway.config import Settings
from tollway.events.outbox import EVENT_TYPES
from tollway.events.sender import Sender
from tollway.events.sources import EventSources
from tollway.events.store import DEFAULT_ROTATION_GRACE_MS, EndpointStore
from tollway.hooks import Hooks
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, json_object, page_limit
from tollway.jobs.engine import JobEngine
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.outbound import DestinationRefused, check_destination
from tollway.policy.service import Policy
from tollway.store import Database

MAX_URL = 2048
MAX_DESCRIPTION = 1000
MAX_GRACE_S = 7 * 24 * 3600
_CREATE = {"url", "events", "description"}
_PATCH = {"url", "events", "description", "disabled", "rotate_secret", "rotation_grace_seconds"}


def validate_url(value: Any) -> str:
    message = "'url' must be an absolute http:// or https:// URL"
    if not isinstance(value, str) or len(value) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in value):
        raise HTTPError(400, f"{message} of at most {MAX_URL} characters", param="url")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise HTTPError(400, message, param="url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.fragment:
        raise HTTPError(400, f"{message}, without a #fragment", param="url")
    return value


def validate_events(value: Any) -> list[str]:
    message = f"'events' must be a non-empty list of event types ({', '.join(EVENT_TYPES)}) or [\"*\"]"
    if not isinstance(value, list) or not value or len(value) > len(EVENT_TYPES) + 1:
        raise HTTPError(400, message, param="events")
    for item in value:
        if not isinstance(item, str) or (item != "*" and item not in EVENT_TYPES):
            raise HTTPError(400, f"{message}; got {item!r}" if isinstance(item, str) else message, param="events")
    return sorted(set(value), key=value.index)


def validate_description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or "\x00" in value:
        raise HTTPError(
            400, f"'description' must be a string of at most {MAX_DESCRIPTION} characters", param="description"
        )
    return value


def capability(
    *,
    settings: Settings,
    db: Database,
    auth: Authenticator,
    policy: Policy,
    background: BackgroundWork,
    jobs: JobEngine,
) -> Capability:
    routes = Routes()
    store = EndpointStore(db)
    sender = Sender(db, settings.events, settings.outbound)
    sources = EventSources(db, auth, settings.events, background, sender.wake)
    policy.cap_refused.append(sources.cap_refused)
    jobs.on_ended.append(sources.job_ended)
    hooks = Hooks(call_settled=[sources.settled])
    if settings.wallet.enabled:
        hooks.call_settled.append(sources.low_balance)  # after the wallet's debit (capabilities' order)

    async def admin(request: Request) -> ApiKey:
        return await auth.admin(request.headers, "managing webhook endpoints needs an admin key")

    async def allowed(url: str) -> None:
        try:
            await check_destination(url, settings.outbound)
        except DestinationRefused as exc:
            raise HTTPError(400, str(exc), code="destination_not_allowed", param="url") from None

    def not_found(endpoint_id: str) -> HTTPError:
        return HTTPError(404, f"no webhook endpoint {endpoint_id!r}", code="webhook_endpoint_not_found")

    async def found(key: ApiKey, endpoint_id: str) -> dict[str, Any]:
        endpoint = await asyncio.to_thread(store.get, key.account_id, endpoint_id)
        if endpoint is None:
            raise not_found(endpoint_id)
        return endpoint

    @routes.route("POST", "/v1/webhook-endpoints")
    async def create(request: Request) -> Response:
        key = await admin(request)
        body = json_object(request)
        check_fields(body, _CREATE)
        if body.get("url") is None:
            raise HTTPError(400, "'url' is required", param="url")
        if body.get("events") is None:
            raise HTTPError(400, "'events' is required", param="events")
        url = validate_url(body["url"])
        types = validate_events(body["events"])
        description = "" if body.get("description") is None else validate_description(body["description"])
        await allowed(url)
        endpoint, secret = await asyncio.to_thread(store.create, key.account_id, url, types, description)
        return json_response(201, {**endpoint, "secret": secret})

    @routes.route("GET", "/v1/webhook-endpoints")
    async def list_endpoints(request: Request) -> Response:
        key = await admin(request)
        query = request.query()
        check_fields(query, {"limit", "after"})
        limit = page_limit(query, 20, 100)
        try:
            items, has_more = await asyncio.to_thread(store.list, key.account_id, limit, query.get("after") or None)
        except ValueError as exc:
            raise HTTPError(400, str(exc), param="after") from None
        return json_response(200, _page(items, has_more))

    @routes.route("GET", "/v1/webhook-endpoints/{endpoint_id}")
    async def get_endpoint(request: Request, endpoint_id: str) -> Response:
        key = await admin(request)
        return json_response(200, await found(key, endpoint_id))

    @routes.route("PATCH", "/v1/webhook-endpoints/{endpoint_id}")
    async def patch_endpoint(request: Request, endpoint_id: str) -> Response:
        key = await admin(request)
        body = json_object(request)
        check_fields(body, _PATCH)
        changes: dict[str, Any] = {}
        if "url" in body:
            changes["url"] = validate_url(body["url"])
        if "events" in body:
            changes["events"] = validate_events(body["events"])
        if "description" in body:
            changes["description"] = validate_description(body["description"])
        if "disabled" in body:
            if not isinstance(body["disabled"], bool):
                raise HTTPError(400, "'disabled' must be true or false", param="disabled")
            changes["disabled"] = body["disabled"]
        rotate = body.get("rotate_secret", False)
        if not isinstance(rotate, bool):
            raise HTTPError(400, "'rotate_secret' must be true or false", param="rotate_secret")
        grace = body.get("rotation_grace_seconds", DEFAULT_ROTATION_GRACE_MS // 1000)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_S:
            raise HTTPError(
                400,
                f"'rotation_grace_seconds' must be a number from 0 to {MAX_GRACE_S}",
                param="rotation_grace_seconds",
            )
        if "rotation_grace_seconds" in body and not rotate:
            raise HTTPError(
                400, "'rotation_grace_seconds' goes with \"rotate_secret\": true", param="rotation_grace_seconds"
            )
        if "url" in changes:
            await allowed(changes["url"])
        done = await asyncio.to_thread(
            lambda: store.update(key.account_id, endpoint_id, changes, rotate_secret=rotate, grace_ms=int(grace * 1000))
        )
        if done is None:
            raise not_found(endpoint_id)
        endpoint, secret = done
        if changes.get("disabled") is False:
            sender.wake()
        return json_response(200, {**endpoint, "secret": secret} if secret else endpoint)

    @routes.route("DELETE", "/v1/webhook-endpoints/{endpoint_id}")
    async def delete_endpoint(request: Request, endpoint_id: str) -> Response:
        key = await admin(request)
        if not await asyncio.to_thread(store.delete, key.account_id, endpoint_id):
            raise not_found(endpoint_id)
        return json_response(200, {"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True})

    @routes.route("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries")
    async def deliveries(request: Request, endpoint_id: str) -> Response:
        key = await admin(request)
        query = request.query()
        check_fields(query, {"limit", "after"})
        limit = page_limit(query, 20, 100)
        try:
            got = await asyncio.to_thread(
                store.deliveries, key.account_id, endpoint_id, limit, query.get("after") or None
            )
        except ValueError as exc:
            raise HTTPError(400, str(exc), param="after") from None
        if got is None:
            raise not_found(endpoint_id)
        return json_response(200, _page(*got))

    @routes.route("POST", "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver")
    async def redeliver(request: Request, endpoint_id: str, delivery_id: str) -> Response:
        key = await admin(request)
        endpoint = await found(key, endpoint_id)
        if endpoint["disabled"]:
            raise HTTPError(409, "the endpoint is disabled: enable it first", code="webhook_endpoint_disabled")
        before = await asyncio.to_thread(store.redeliver, key.account_id, endpoint_id, delivery_id)
        if before is None:
            raise HTTPError(404, f"no delivery {delivery_id!r} of this endpoint", code="delivery_not_found")
        sender.wake()
        return json_response(
            202, {"id": delivery_id, "object": "webhook_delivery", "state": "pending", "previous_state": before}
        )

    @routes.route("POST", "/v1/webhook-endpoints/{endpoint_id}/test")
    async def send_test(request: Request, endpoint_id: str) -> Response:
        key = await admin(request)
        endpoint = await found(key, endpoint_id)
        if endpoint["disabled"]:
            raise HTTPError(409, "the endpoint is disabled: enable it first", code="webhook_endpoint_disabled")
        done = await asyncio.to_thread(store.send_test, key.account_id, endpoint_id)
        if done is None or done[1] is None:
            raise not_found(endpoint_id)
        sender.wake()
        return json_response(202, {"object": "webhook_test", "event_id": done[0], "delivery_id": done[1]})

    async def start() -> None:
        await sender.start()
        await sources.start()

    async def stop() -> None:
        await sources.stop()
        await sender.stop()

    return Capability(routes, hooks, provides={"event_sender": sender}, on_startup=[start], on_shutdown=[stop])


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }
