"""The wallet's Stripe routes.

- ``POST /v1/wallet/topups`` ``{"amount_usd", "success_url", "cancel_url"}`` (admin): a
  Stripe Checkout Session for the amount; pay at its ``url``, and the webhook credits it.
- ``PUT /v1/wallet/auto_recharge`` ``{"threshold_usd", "recharge_to_usd",
  "monthly_max_usd"}`` / ``DELETE`` (admin): auto-recharge on (saving resets its
  failure count) or off.
- ``POST /v1/stripe/webhook`` (no key: Stripe signs it): verified with
  ``stripe.Webhook.construct_event``; a forged or stale event is a 400 and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
import stripe

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, idempotency_key, json_object
from tollway.keys.auth import Authenticator
from tollway.keys.secrets import new_id
from tollway.keys.store import ApiKey, KeyStore
from tollway.policy.fields import usd_to_micros
from tollway.wallet.recharge import AutoRecharge
from tollway.wallet.routes import recharge_view, wallet_admin
from tollway.wallet.service import Wallet
from tollway.wallet.stripe_api import MAX_CHARGE_CENTS, MICROS_PER_CENT, MIN_CHARGE_CENTS, StripeApi, refused
from tollway.wallet.stripe_events import StripeEvents

log = logging.getLogger("tollway.wallet")
MAX_URL = 2048


def _cents(value: Any, field: str) -> int:
    micros = usd_to_micros(value, field)
    if micros is None or micros % MICROS_PER_CENT:
        raise HTTPError(400, f"'{field}' must be a number of US dollars in whole cents", param=field)
    cents = micros // MICROS_PER_CENT
    if not MIN_CHARGE_CENTS <= cents <= MAX_CHARGE_CENTS:
        raise HTTPError(400, f"'{field}' must be from $0.50 to $999,999.99 (Stripe's limits)", param=field)
    return cents


def _url(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or len(value) > MAX_URL or "\x00" in value:
        raise HTTPError(400, f"'{field}' must be an http(s) URL of at most {MAX_URL} characters", param=field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HTTPError(400, f"'{field}' must be an http(s) URL", param=field)
    return value


def _micros(body: dict[str, Any], field: str) -> int:
    micros = usd_to_micros(body.get(field), field)
    if micros is None:
        raise HTTPError(400, f"'{field}' is required: a number of US dollars", param=field)
    return micros


def capability(
    *, auth: Authenticator, store: KeyStore, wallet: Wallet, stripe_api: StripeApi, recharge: AutoRecharge
) -> Capability:
    routes = Routes()
    events = StripeEvents(wallet, wallet.store, store, stripe_api, recharge)

    async def admin(request: Request) -> ApiKey:
        return await wallet_admin(auth, wallet, request)

    @routes.route("POST", "/v1/wallet/topups")
    async def topup(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"amount_usd", "success_url", "cancel_url"})
        cents = _cents(body.get("amount_usd"), "amount_usd")
        success_url, cancel_url = _url(body, "success_url"), _url(body, "cancel_url")
        stripe_api.require()
        # (at most 200: ours, with the account id, must fit Stripe's 255)
        request_key = idempotency_key(request, 200) or new_id("top_")
        session = await asyncio.to_thread(
            _checkout, caller.account_id, cents, success_url, cancel_url, f"{caller.account_id}-{request_key}"
        )
        return json_response(
            201,
            {
                "object": "wallet_topup",
                "checkout_session_id": session["id"],
                "url": session.get("url"),
                "amount_usd": cents / 100,
                "amount_micros": cents * MICROS_PER_CENT,
                "status": session.get("status"),
            },
        )

    def _checkout(account_id: str, cents: int, success_url: str, cancel_url: str, key: str) -> Any:
        try:
            row = wallet.store.wallet(account_id) or {}
            customer = row.get("stripe_customer_id")
            if not customer:
                account = store.account(account_id) or {"name": account_id}
                customer = stripe_api.create_customer(account_id, account["name"])
                wallet.store.save_settings(account_id, {"stripe_customer_id": customer})
            return stripe_api.checkout_topup(account_id, customer, cents, success_url, cancel_url, key)
        except stripe.StripeError as exc:
            raise refused(f"a top-up of account {account_id}", exc) from None

    @routes.route("PUT", "/v1/wallet/auto_recharge")
    async def set_recharge(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"threshold_usd", "recharge_to_usd", "monthly_max_usd"})
        threshold = _micros(body, "threshold_usd")
        target = _micros(body, "recharge_to_usd")
        monthly = _micros(body, "monthly_max_usd")
        if target <= threshold:
            raise HTTPError(400, "'recharge_to_usd' must be more than 'threshold_usd'", param="recharge_to_usd")
        if monthly < MIN_CHARGE_CENTS * MICROS_PER_CENT:
            raise HTTPError(400, "'monthly_max_usd' must be at least $0.50", param="monthly_max_usd")
        stripe_api.require()
        settings = {"threshold_micros": threshold, "recharge_to_micros": target, "monthly_max_micros": monthly}
        await asyncio.to_thread(
            wallet.store.save_settings, caller.account_id, {"auto_recharge": settings, "recharge_failures": 0}
        )
        row = await asyncio.to_thread(wallet.store.wallet, caller.account_id)
        recharge.saved(caller.account_id, row)
        return json_response(200, {"object": "wallet.auto_recharge", "enabled": True, **(recharge_view(row) or {})})

    @routes.route("DELETE", "/v1/wallet/auto_recharge")
    async def stop_recharge(request: Request) -> Response:
        caller = await admin(request)
        await asyncio.to_thread(
            wallet.store.save_settings, caller.account_id, {"auto_recharge": None, "recharge_failures": 0}
        )
        recharge.saved(caller.account_id, None)
        return json_response(200, {"object": "wallet.auto_recharge", "enabled": False})

    @routes.route("POST", "/v1/stripe/webhook")
    async def webhook(request: Request) -> Response:
        if not wallet.enabled or not stripe_api.settings.stripe_webhook_secret:
            raise HTTPError(400, "Stripe webhooks are not configured on this gateway", code="stripe_not_configured")
        try:
            stripe_api.construct_event(request.body, request.headers.get("stripe-signature"))
            event = orjson.loads(request.body)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            log.warning("Stripe webhook refused: %s", exc)
            raise HTTPError(
                400, f"the Stripe signature or payload is invalid: {exc}", code="invalid_signature"
            ) from None
        if not isinstance(event, dict):
            raise HTTPError(400, "a Stripe event is a JSON object")
        done = await asyncio.to_thread(events.handle, event)
        log.info("Stripe event %s (%s): %s", event.get("id"), event.get("type"), done)
        return json_response(200, {"received": True, "result": done})

    return Capability(routes)
