"""Key policy routes: rotate a key, credit it, read one's own quota, the account's time zone.

- ``POST /v1/keys/:id/rotate`` ``{"grace_seconds"}`` -> a new secret (shown once); the old
  one keeps working for the grace period. Same key id, limits and usage.
- ``POST /v1/keys/:id/credit`` ``{"amount_usd", "period"?}`` (``Idempotency-Key`` honoured)
  and ``GET /v1/keys/:id/credits``.
- ``GET /v1/key``: the calling key's own limits, spend per window, rate-limit state and
  allowed models (never another key's, never a secret).
- ``GET`` / ``PATCH /v1/account`` ``{"timezone"}``: the zone of the day/week/month windows.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, idempotency_key, json_object
from tollway.keys.auth import Authenticator
from tollway.keys.routes import find_key
from tollway.keys.secrets import hash_secret
from tollway.keys.store import ApiKey, KeyStore
from tollway.ledger import Ledger, rollups
from tollway.ledger.writer import UsageWriter
from tollway.policy.credits import CreditStore
from tollway.policy.fields import usd_to_micros
from tollway.policy.service import Policy
from tollway.policy.windows import PERIODS, zone

MAX_GRACE_S = 30 * 24 * 3600


def capability(
    *,
    auth: Authenticator,
    store: KeyStore,
    ledger: Ledger,
    policy: Policy,
    credits: CreditStore,
    writer: UsageWriter,
) -> Capability:
    routes = Routes()

    async def admin(request: Request) -> ApiKey:
        return await auth.admin(request.headers)

    async def find(caller: ApiKey, key_id: str) -> ApiKey:
        return await find_key(store, caller, key_id)

    @routes.route("POST", "/v1/keys/{key_id}/rotate")
    async def rotate(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        body = json_object(request) if request.body else {}
        check_fields(body, {"grace_seconds"})
        grace = body.get("grace_seconds", 0)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_S:
            raise HTTPError(400, f"'grace_seconds' must be a number from 0 to {MAX_GRACE_S}", param="grace_seconds")
        key = await find(caller, key_id)
        if key.revoked_at is not None:
            raise HTTPError(409, "a revoked key cannot be rotated", code="key_revoked")
        done = await asyncio.to_thread(store.rotate, caller.account_id, key_id, int(grace * 1000), auth.clock())
        if done is None:
            raise HTTPError(404, f"no API key with id {key_id!r}", code="not_found")
        key, secret = done
        auth.remember(key, hash_secret(secret))
        spent, reserved, _ = ledger.snapshot(key.id)
        return json_response(
            200, {**key.public(spent, reserved), "limits": auth.budgets.describe(key), "secret": secret}
        )

    @routes.route("POST", "/v1/keys/{key_id}/credit")
    async def credit(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"amount_usd", "period"})
        amount = usd_to_micros(body.get("amount_usd"), "amount_usd")
        if amount is None or amount <= 0:
            raise HTTPError(400, "'amount_usd' must be a positive number of US dollars", param="amount_usd")
        period = body.get("period", "total")
        if period not in PERIODS:
            raise HTTPError(400, f"'period' must be one of {', '.join(PERIODS)}", param="period")
        idem = idempotency_key(request)
        key = await find(caller, key_id)
        limited = key.max_spend_micros if period == "total" else key.limits.get(period)
        if limited is None:
            raise HTTPError(
                400, f"this key has no {period} limit to credit; set one first (PATCH 'limits')", param="period"
            )
        start = auth.budgets.current_start(key, period)
        entry, created = await asyncio.to_thread(
            credits.grant, caller.account_id, key.id, amount, period, start, caller.id, idem
        )
        if not created and (entry["key_id"], entry["amount_micros"], entry["period"]) != (key.id, amount, period):
            raise HTTPError(
                409,
                "this Idempotency-Key was used for a different credit (key, amount or period)",
                code="idempotency_key_reused",
            )
        if created:
            auth.budgets.granted(key.id, period, start, amount)
        return json_response(201 if created else 200, entry)

    @routes.route("GET", "/v1/keys/{key_id}/credits")
    async def list_credits(request: Request, key_id: str) -> Response:
        caller = await admin(request)
        key = await find(caller, key_id)
        entries = await asyncio.to_thread(credits.list, key.id)
        return json_response(200, {"object": "list", "data": entries, "has_more": False})

    @routes.route("GET", "/v1/key")
    async def own_key(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, self_view(key))

    def self_view(key: ApiKey) -> dict[str, Any]:
        spent, reserved, _ = ledger.snapshot(key.id)
        now = policy.clock()
        rates = [
            {"model": model, **policy.limiter.state(bucket, limits, now)}
            for model, bucket, limits in policy.rate_state_buckets(key)
        ]
        return {
            "object": "api_key_quota",
            "id": key.id,
            "name": key.name,
            "scope": key.scope,
            "end_user_id": key.end_user_id,
            "spent_micros": spent,
            "reserved_micros": reserved,
            "limits": auth.budgets.describe(key),
            "rate_limits": key.rate_limits,
            "model_limits": key.model_limits,
            "rate_limit_state": rates,
            "allowed_models": key.allowed_models,
            "expires_at": key.expires_at,
            "tags": key.tags,
        }

    @routes.route("GET", "/v1/account")
    async def get_account(request: Request) -> Response:
        caller = await admin(request)
        return json_response(200, await asyncio.to_thread(store.account, caller.account_id))

    @routes.route("PATCH", "/v1/account")
    async def patch_account(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"timezone", "name"})
        values: dict[str, Any] = {}
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
                raise HTTPError(400, "'name' must be a non-empty string of at most 200 characters", param="name")
            values["name"] = name
        if "timezone" in body:
            name = body["timezone"]
            if name is not None and (not isinstance(name, str) or len(name) > 64 or "\x00" in name):
                raise HTTPError(400, "'timezone' must be an IANA time zone name or null", param="timezone")
            try:
                zone(name)
            except ValueError as exc:
                raise HTTPError(400, str(exc), param="timezone") from None
            values["timezone"] = None if name in (None, "UTC", "Etc/UTC") else name
        then = None
        if "timezone" in values:  # the day rollups follow the zone, in the same transaction
            then = partial(rollups.set_zone, account_id=caller.account_id, name=values.pop("timezone"))
        account = await asyncio.to_thread(store.update_account, caller.account_id, values, then)
        if then is not None:
            await asyncio.to_thread(writer.flush)
            await asyncio.to_thread(auth.zone_changed, caller.account_id, then.keywords["name"])
        return json_response(200, account)

    return Capability(routes)
