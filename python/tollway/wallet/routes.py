"""Wallet routes (admin keys; the wallet must be on: ``[wallet] enabled = true``).

- ``GET /v1/wallet``: balance, held by requests in flight, available, auto-recharge
  settings, the last top-ups.
- ``GET /v1/wallet/ledger?from_ms=&to_ms=&kind=&limit=&after=``: the entries, oldest
  first, in cursor pages (``after`` = the last entry's id).
- ``POST /v1/wallet/adjustments`` ``{"amount_usd", "reason"}``: an admin's correction or
  grant (negative to take money out), ``Idempotency-Key`` honoured.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from typing import Any, Optional

from tollway.capabilities import Capability, Routes
from tollway.hooks import Hooks
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, idempotency_key, json_object, page_limit, time_ms
from tollway.keys.auth import Authenticator
from tollway.keys.store import ApiKey
from tollway.ledger.writer import UsageWriter
from tollway.wallet.recharge import AutoRecharge
from tollway.wallet.service import Wallet
from tollway.wallet.store import KINDS, parse_entry_id

MAX_ADJUSTMENT_USD = Decimal(10) ** 7


def signed_usd_to_micros(value: Any, field: str, maximum: Decimal) -> int:
    message = f"'{field}' must be a number of US dollars from -{maximum} to {maximum}, not 0"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HTTPError(400, message, param=field)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise HTTPError(400, message, param=field) from None
    if not amount.is_finite() or abs(amount) > maximum:
        raise HTTPError(400, message, param=field)
    micros = int((amount * 1_000_000).to_integral_value())
    if micros == 0 or amount * 1_000_000 != micros:
        raise HTTPError(400, f"'{field}' must be a non-zero whole number of micro-dollars", param=field)
    return micros


def recharge_view(row: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A wallet row's auto-recharge settings and state, or None when it is off."""
    recharge = (row or {}).get("auto_recharge")
    if not row or not recharge:
        return None
    return {
        "threshold_usd": recharge["threshold_micros"] / 1_000_000,
        "recharge_to_usd": recharge["recharge_to_micros"] / 1_000_000,
        "monthly_max_usd": recharge["monthly_max_micros"] / 1_000_000,
        "consecutive_failures": row.get("recharge_failures", 0),
        "payment_method_saved": bool(row.get("payment_method_id")),
    }


async def wallet_admin(auth: Authenticator, wallet: Wallet, request: Request) -> ApiKey:
    """The calling admin key of a wallet route; a 400 ``wallet_disabled`` with the wallet off."""
    caller = await auth.admin(request.headers)
    if not wallet.enabled:
        raise HTTPError(
            400,
            "the wallet is off on this gateway: set [wallet] enabled = true (or TOLLWAY_WALLET=on)",
            code="wallet_disabled",
        )
    return caller


def capability(*, auth: Authenticator, wallet: Wallet, writer: UsageWriter, recharge: AutoRecharge) -> Capability:
    routes = Routes()
    hooks = Hooks()

    def debit(conn: Any, rows: Any) -> None:
        # Debits are written with their usage events, in the same transaction; the balance
        # they leave (settled in the ledger already) may call for an auto-recharge.
        debited = wallet.store.debit(conn, rows)
        if debited:
            recharge.poke(debited)

    if wallet.enabled:
        hooks.call_settled.append(debit)

    async def admin(request: Request) -> ApiKey:
        return await wallet_admin(auth, wallet, request)

    @routes.route("GET", "/v1/wallet")
    async def get_wallet(request: Request) -> Response:
        caller = await admin(request)
        return json_response(200, await view(caller.account_id))

    async def view(account_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(wallet.store.wallet, account_id)
        topups = await asyncio.to_thread(wallet.store.last_topups, account_id)
        return {
            "object": "wallet",
            "account_id": account_id,
            **wallet.balance(account_id),
            "auto_recharge": recharge_view(row),
            "last_topups": topups,
        }

    @routes.route("GET", "/v1/wallet/ledger")
    async def ledger_page(request: Request) -> Response:
        caller = await admin(request)
        query = request.query()
        check_fields(query, {"from_ms", "to_ms", "kind", "limit", "after"})
        from_ms = time_ms(query["from_ms"], "from_ms") if "from_ms" in query else None
        to_ms = time_ms(query["to_ms"], "to_ms") if "to_ms" in query else None
        limit = page_limit(query, 100, 1000)
        after = None
        if "after" in query:
            after = parse_entry_id(query["after"])
            if after is None:
                raise HTTPError(400, "'after' must be a wallet entry id (wle_...)", param="after")
        kinds = None
        if "kind" in query:
            kinds = query["kind"].split(",")
            if not kinds or any(k not in KINDS for k in kinds):
                raise HTTPError(400, f"'kind' must be one or more of {', '.join(KINDS)}", param="kind")
        await asyncio.to_thread(writer.flush)  # the debits of calls settled just now
        entries, has_more = await asyncio.to_thread(
            wallet.store.entries, caller.account_id, from_ms, to_ms, after, limit, kinds
        )
        return json_response(
            200,
            {
                "object": "list",
                "data": entries,
                "has_more": has_more,
                "next": entries[-1]["id"] if has_more else None,
            },
        )

    @routes.route("POST", "/v1/wallet/adjustments")
    async def adjust(request: Request) -> Response:
        caller = await admin(request)
        body = json_object(request)
        check_fields(body, {"amount_usd", "reason"})
        amount = signed_usd_to_micros(body.get("amount_usd"), "amount_usd", MAX_ADJUSTMENT_USD)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 400 or "\x00" in reason:
            raise HTTPError(400, "'reason' must be a non-empty string of at most 400 characters", param="reason")
        idem = idempotency_key(request)
        entry, created = await asyncio.to_thread(
            wallet.store.add,
            caller.account_id,
            "adjustment",
            amount,
            f"adjustment by {caller.id}: {reason}",
            key_id=caller.id,
            idempotency_key=idem,
        )
        if not created and (entry["kind"], entry["amount_micros"]) != ("adjustment", amount):
            raise HTTPError(
                409, "this Idempotency-Key was used for a different wallet entry", code="idempotency_key_reused"
            )
        if created:
            wallet.paid_in(caller.account_id, amount)
        return json_response(201 if created else 200, {**entry, "wallet": wallet.balance(caller.account_id)})

    return Capability(routes, hooks)
