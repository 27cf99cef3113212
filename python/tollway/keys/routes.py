"""/v1/keys: mint, list, read, change and revoke keys (admin keys, inside their own account)."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, json_object, metadata_object
from tollway.keys.auth import Authenticator
from tollway.keys.secrets import hash_secret
from tollway.keys.store import SCOPES, ApiKey, KeyStore
from tollway.ledger import Ledger
from tollway.ledger.report import key_events
from tollway.ledger.writer import UsageWriter
from tollway.policy.fields import POLICY_FIELDS, parse_policy, usd_to_micros
from tollway.store import Database

_MINT_FIELDS = {"name", "scope", "max_spend_usd", "end_user_id", "metadata"} | POLICY_FIELDS
_PATCH_FIELDS = {"name", "max_spend_usd", "metadata"} | POLICY_FIELDS


def _string(body: dict[str, Any], field: str, *, required: bool = False, limit: int = 200) -> Optional[str]:
    value = body.get(field)
    if value is None:
        if required:
            raise HTTPError(400, f"'{field}' is required", param=field)
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise HTTPError(400, f"'{field}' must be a non-empty string of at most {limit} characters", param=field)
    return value


async def find_key(store: KeyStore, caller: ApiKey, key_id: str) -> ApiKey:
    """The key ``key_id`` of the caller's account, or 404."""
    key = await asyncio.to_thread(store.get, caller.account_id, key_id)
    if key is None:
        raise HTTPError(404, f"no API key with id {key_id!r}", code="not_found")
    return key


def capability(
    *, auth: Authenticator, store: KeyStore, ledger: Ledger, writer: UsageWriter, db: Database
) -> Capability:
    routes = Routes()

    async def admin(request: Request) -> ApiKey:
        return await auth.admin(request.headers)

    def public(key: ApiKey) -> dict[str, Any]:
        spent, reserved, _cap = ledger.snapshot(key.id)
        return {**key.public(spent, reserved), "limits": auth.budgets.describe(key)}

    def policy_values(body: dict[str, Any]) -> dict[str, Any]:
        """The key attributes a mint or PATCH body sets (``max_spend_micros`` among them)."""
        values, total = parse_policy(body, "max_spend_usd" in body)
        if total is not None:
            values["max_spend_micros"] = total[1]
        elif "max_spend_usd" in body:
            values["max_spend_micros"] = usd_to_micros(body["max_spend_usd"])
        return values

    async def find(caller: ApiKey, key_id: str) -> ApiKey:
        return await find_key(store, caller, key_id)

    @routes.route("POST", "/v1/keys")
    async def mint(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, _MINT_FIELDS)
        name = _string(body, "name", required=True)
        scope = body.get("scope", "standard")
        if scope not in SCOPES:
            raise HTTPError(400, f"'scope' must be one of {', '.join(SCOPES)}", param="scope")
        policy = policy_values(body)
        cap = policy.pop("max_spend_micros", None)
        end_user_id = _string(body, "end_user_id")
        metadata = metadata_object(body)
        key, secret = await asyncio.to_thread(
            store.mint, caller.account_id, name, scope, cap, end_user_id, metadata, policy
        )
        auth.minted(key, hash_secret(secret))
        return json_response(201, {**public(key), "secret": secret})

    @routes.route("GET", "/v1/keys")
    async def list_keys(request: Request) -> Response:
        caller = await admin(request)
        query = request.query()
        try:
            limit = int(query.get("limit", 50))
        except ValueError:
            raise HTTPError(400, "'limit' must be an integer", param="limit") from None
        if not 1 <= limit <= 500:
            raise HTTPError(400, "'limit' must be between 1 and 500", param="limit")
        keys, has_more = await asyncio.to_thread(store.list, caller.account_id, limit, query.get("after") or None)
        data = [public(k) for k in keys]
        return json_response(
            200,
            {"object": "list", "data": data, "has_more": has_more, "last_id": data[-1]["id"] if data else None},
        )

    @routes.route("GET", "/v1/keys/{key_id}")
    async def get_key(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        return json_response(200, public(await find(caller, key_id)))

    @routes.route("PATCH", "/v1/keys/{key_id}")
    async def patch_key(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, _PATCH_FIELDS)
        await find(caller, key_id)
        values: dict[str, Any] = {}
        if "name" in body:
            values["name"] = _string(body, "name", required=True)
        values.update(policy_values(body))
        if "metadata" in body:
            values["metadata"] = metadata_object(body)
        key = await asyncio.to_thread(store.update, caller.account_id, key_id, values)
        if key is None:
            raise HTTPError(404, f"no API key with id {key_id!r}", code="not_found")
        auth.remember(key)
        return json_response(200, public(key))

    @routes.route("DELETE", "/v1/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        await find(caller, key_id)
        key = await asyncio.to_thread(store.revoke, caller.account_id, key_id)
        if key is None:
            raise HTTPError(404, f"no API key with id {key_id!r}", code="not_found")
        auth.remember(key)
        return json_response(200, {"id": key.id, "object": "api_key", "deleted": True, "revoked_at": key.revoked_at})

    @routes.route("GET", "/v1/keys/{key_id}/usage")
    async def key_usage(request: Request, key_id: str) -> Response:
        caller = await auth.authenticate(request.headers)
        if not caller.is_admin and caller.id != key_id:
            raise HTTPError(403, "a standard key may read only its own usage", code="admin_key_required")
        key = await find(caller, key_id)
        await asyncio.to_thread(writer.flush)
        total, events = await asyncio.to_thread(key_events, db, key.id)
        _spent, reserved, limit = ledger.snapshot(key.id)
        cap = limit if key.revoked_at is None else key.max_spend_micros  # the cap with any credit granted
        return json_response(
            200,
            {
                "object": "key_usage",
                "key_id": key.id,
                "total_cost_micros": total,
                "max_spend_micros": cap,
                "reserved_micros": reserved,
                "remaining_micros": None if cap is None else max(0, cap - total - reserved),
                "limits": auth.budgets.describe(key),
                "events": events,
            },
        )

    return Capability(routes)
