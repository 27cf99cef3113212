"""Billing routes (admin keys; Stripe must be configured): usage into the app's Stripe.

- ``POST /v1/billing/invoice-items`` ``{"from_ms", "to_ms", "margin_percent"?}``: one
  InvoiceItem per key of the caller's account with ``metadata.stripe_customer_id`` and
  spend in the period; idempotent per key and period (a second call makes nothing new).
- ``POST /v1/billing/meter-events``: send the usage events not sent yet as Stripe meter
  events now (also done every ``[stripe] meter_export_interval`` seconds when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any, Optional

import stripe

from tollway.billing.export import MAX_MARGIN, Exporter, parse_margin
from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.limits import MAX_TIME_MS
from tollway.http.params import check_fields, json_object
from tollway.keys.auth import Authenticator
from tollway.ledger.writer import UsageWriter
from tollway.store import Database
from tollway.wallet.stripe_api import StripeApi, refused

log = logging.getLogger("tollway.billing")


def margin(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return parse_margin(value)
    except ValueError:
        raise HTTPError(
            400, f"'margin_percent' must be a number from 0 to {MAX_MARGIN}", param="margin_percent"
        ) from None


def _time(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME_MS:
        raise HTTPError(400, f"'{name}' must be a Unix time in milliseconds, from 0 to {MAX_TIME_MS}", param=name)
    return value


def capability(*, auth: Authenticator, db: Database, stripe_api: StripeApi, writer: UsageWriter) -> Capability:
    routes = Routes()
    exporter = Exporter(db, stripe_api)
    task: list[Optional[asyncio.Task]] = [None]

    async def admin(request: Request) -> Any:
        caller = await auth.admin(request.headers)
        stripe_api.require()
        return caller

    async def call(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except stripe.StripeError as exc:
            raise refused("the export", exc) from None

    @routes.route("POST", "/v1/billing/invoice-items")
    async def invoice_items(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"from_ms", "to_ms", "margin_percent"})
        start, end = _time(body, "from_ms"), _time(body, "to_ms")
        if end <= start:
            raise HTTPError(400, "'to_ms' must be after 'from_ms'", param="to_ms")
        pct = margin(body.get("margin_percent"))
        await asyncio.to_thread(writer.flush)  # the period's last calls
        items = await call(exporter.invoice_items, caller.account_id, start, end, pct)
        return json_response(200, {"object": "list", "data": items, "has_more": False})

    @routes.route("POST", "/v1/billing/meter-events")
    async def meter_events(request: Request) -> Response:
        await admin(request)
        await asyncio.to_thread(writer.flush)
        result = await call(exporter.meter_events)
        return json_response(200, {"object": "billing.meter_export", **vars(result)})

    async def run_continuously() -> None:
        interval = stripe_api.settings.meter_export_interval
        while True:
            await asyncio.sleep(interval)
            try:
                result = await asyncio.to_thread(exporter.meter_events)
                if result.sent or result.skipped:
                    log.info("meter events: %d sent, %d already there, %d refused", result.sent, result.already,
                             result.skipped)  # fmt: skip
            except Exception:
                log.exception("meter-event export failed; trying again in %.0f s", interval)

    async def start() -> None:
        if stripe_api.configured and stripe_api.settings.meter_export_interval > 0:
            task[0] = asyncio.get_running_loop().create_task(run_continuously())

    async def stop() -> None:
        if task[0] is not None:
            task[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task[0]

    return Capability(routes, on_startup=[start], on_shutdown=[stop])
