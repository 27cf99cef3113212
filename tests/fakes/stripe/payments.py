"""PaymentIntents (incl. off-session confirm=true charges of a saved card), Charges and Refunds.

A declined charge (the ``decline_next`` control) answers 402 with Stripe's card_error body
(``payment_intent`` inside it) and emits ``charge.failed`` + ``payment_intent.payment_failed``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from .errors import StripeError, invalid
from .forms import Params, merge_metadata
from .store import Store

CURRENCIES = ("usd", "eur", "gbp", "cad", "aud", "jpy", "chf")
MIN_AMOUNT = 50  # cents: Stripe's minimum charge in usd (amounts are in the currency's smallest unit)
MAX_AMOUNT = 99_999_999
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
}
_LIST = {"object": "list", "data": [], "has_more": False, "total_count": 0}


def new_intent(
    store: Store,
    *,
    amount: int,
    currency: str,
    customer: Optional[str],
    payment_method: Optional[str],
    metadata: dict[str, str],
    description: Optional[str],
    setup_future_usage: Optional[str],
    off_session: bool,
) -> dict[str, Any]:
    """A new PaymentIntent (``off_session`` is a confirm-time flag, not part of the object)."""
    pi = {
        "id": store.new_id("pi_"),
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "capture_method": "automatic_async",
        "client_secret": None,
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata,
        "next_action": None,
        "payment_method": payment_method,
        "payment_method_types": ["card"],
        "setup_future_usage": setup_future_usage,
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
    }
    pi["client_secret"] = f"{pi['id']}_secret_{store.new_id('')[-12:]}"
    store.add(pi)
    store.emit("payment_intent.created", pi)
    return pi


def _new_charge(store: Store, pi: dict[str, Any], failed: Optional[dict[str, Any]]) -> dict[str, Any]:
    ok = failed is None
    ch = {
        "id": store.new_id("ch_"),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": pi["amount"] if ok else 0,
        "amount_refunded": 0,
        "balance_transaction": store.new_id("txn_") if ok else None,
        "captured": ok,
        "created": int(time.time()),
        "currency": pi["currency"],
        "customer": pi["customer"],
        "description": pi["description"],
        "failure_code": None if ok else failed["code"],
        "failure_message": None if ok else failed["message"],
        "livemode": False,
        "metadata": dict(pi["metadata"]),
        "outcome": {
            "network_status": "approved_by_network" if ok else "declined_by_network",
            "reason": None if ok else failed["decline_code"],
            "risk_level": "normal",
            "seller_message": "Payment complete."
            if ok
            else "The bank did not return any further details with this decline.",
            "type": "authorized" if ok else "issuer_declined",
        },
        "paid": ok,
        "payment_intent": pi["id"],
        "payment_method": pi["payment_method"],
        "receipt_url": None,
        "refunded": False,
        "refunds": dict(_LIST, data=[], url=None),
        "status": "succeeded" if ok else "failed",
    }
    ch["refunds"]["url"] = f"/v1/charges/{ch['id']}/refunds"
    return store.add(ch)


def charge_intent(store: Store, pi: dict[str, Any], decline: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Confirm ``pi`` with its payment method: succeed, or fail with ``decline``."""
    if decline is None:
        ch = _new_charge(store, pi, None)
        pi.update(status="succeeded", amount_received=pi["amount"], latest_charge=ch["id"], last_payment_error=None)
        store.emit("charge.succeeded", ch)
        store.emit("payment_intent.succeeded", pi)
        return pi
    failed = {
        "code": "card_declined",
        "decline_code": decline["decline_code"],
        "message": DECLINE_MESSAGES.get(decline["decline_code"], "Your card was declined."),
    }
    ch = _new_charge(store, pi, failed)
    pm = store.objects.get(pi["payment_method"])
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": failed["decline_code"],
        "message": failed["message"],
        "charge": ch["id"],
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "payment_method": pm,
    }
    pi.update(status="requires_payment_method", latest_charge=ch["id"], last_payment_error=error)
    store.emit("charge.failed", ch)
    store.emit("payment_intent.payment_failed", pi)
    err = StripeError(
        402,
        "card_error",
        failed["message"],
        code="card_declined",
        decline_code=failed["decline_code"],
        charge=ch["id"],
        payment_intent=pi,
        payment_method=pm,
    )
    err.saved = True  # the endpoint ran: a retry with the same Idempotency-Key gets the same 402
    raise err


def _next_decline(store: Store, customer: Optional[str]) -> Optional[dict[str, Any]]:
    for i, d in enumerate(store.declines):
        if d["customer"] in (None, customer):
            d["remaining"] -= 1
            if d["remaining"] <= 0:
                store.declines.pop(i)
            return d
    return None


def intent_create(store: Store, q: Params) -> dict[str, Any]:
    amount = q.int("amount", required=True, min=1, max=MAX_AMOUNT)
    currency = q.str("currency", required=True, choices=CURRENCIES)
    assert amount is not None and currency is not None
    if amount < MIN_AMOUNT:
        raise invalid("Amount must be at least $0.50 usd", "amount", "amount_too_small")
    customer = q.str("customer")
    if customer is not None:
        store.get(customer, "cus_", "customer")
    method = q.str("payment_method")
    if method is not None:
        pm = store.get(method, "pm_", "payment_method")
        if pm["customer"] is not None and pm["customer"] != customer:
            raise invalid(
                f"The provided PaymentMethod belongs to a different Customer ({pm['customer']}).", "payment_method"
            )
        if pm["customer"] is None and customer is not None:
            raise invalid(
                "The provided PaymentMethod was previously used without being attached to a Customer or was "
                "detached from a Customer, and may not be used again.",
                "payment_method",
            )
    off = q.raw("off_session")
    if off in ("one_off", "recurring"):
        off_session = True
    else:
        off_session = bool(q.bool("off_session"))
    confirm = bool(q.bool("confirm"))
    if off_session and not confirm:
        raise invalid("off_session can only be used when confirm=true.", "off_session")
    if confirm and method is None:
        raise invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            "payment_method",
            "payment_intent_unexpected_state",
        )
    sfu = q.str("setup_future_usage", choices=("off_session", "on_session"))
    apm = q.hash("automatic_payment_methods")
    if apm is not None:
        apm.bool("enabled")
        apm.str("allow_redirects", choices=("always", "never"))
        apm.done()
    types = q.array("payment_method_types")
    if any(t != "card" for t in types):
        raise invalid("This fake Stripe implements only card payments.", "payment_method_types")
    pi_fields = dict(
        amount=amount,
        currency=currency,
        customer=customer,
        payment_method=method,
        metadata=merge_metadata({}, q.metadata()),
        description=q.str("description", max_len=1000),
        setup_future_usage=sfu,
        off_session=off_session,
    )
    q.str("receipt_email")
    q.str("statement_descriptor_suffix", max_len=22)
    q.done()
    pi = new_intent(store, **pi_fields)
    if confirm:
        charge_intent(store, pi, _next_decline(store, customer))
    return pi


def intent_confirm(store: Store, q: Params, pid: str) -> dict[str, Any]:
    pi = store.get(pid, "pi_")
    method = q.str("payment_method")
    q.bool("off_session")
    q.done()
    if method is not None:
        store.get(method, "pm_", "payment_method")
        pi["payment_method"] = method
    if pi["status"] not in ("requires_confirmation", "requires_payment_method") or pi["payment_method"] is None:
        raise invalid(
            f"This PaymentIntent's payment_method could not be confirmed because it has a status of {pi['status']}.",
            code="payment_intent_unexpected_state",
        )
    return charge_intent(store, pi, _next_decline(store, pi["customer"]))


def list_filtered(store: Store, q: Params, prefix: str, url: str, *fields: str) -> dict[str, Any]:
    wanted = {f: q.str(f) for f in fields}
    items = store.find(prefix, lambda o: all(v is None or o.get(f) == v for f, v in wanted.items()))
    page = store.page(items, q, url)
    q.done()
    return page


# ---- refunds -------------------------------------------------------------------------
def refund_create(store: Store, q: Params) -> dict[str, Any]:
    charge_id = q.str("charge")
    pi_id = q.str("payment_intent")
    amount = q.int("amount", min=1, max=MAX_AMOUNT)
    reason = q.str("reason", choices=("duplicate", "fraudulent", "requested_by_customer"))
    metadata = merge_metadata({}, q.metadata())
    q.done()
    return refund(store, charge=charge_id, payment_intent=pi_id, amount=amount, reason=reason, metadata=metadata)


def refund(
    store: Store,
    *,
    charge: Optional[str] = None,
    payment_intent: Optional[str] = None,
    amount: Optional[int] = None,
    reason: Optional[str] = None,
    metadata: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    if (charge is None) == (payment_intent is None):
        raise invalid("You must pass exactly one of charge or payment_intent.", "charge")
    if payment_intent is not None:
        pi = store.get(payment_intent, "pi_", "payment_intent")
        if pi["status"] != "succeeded" or pi["latest_charge"] is None:
            raise invalid(
                f"This PaymentIntent ({payment_intent}) does not have a successful charge to refund.",
                "payment_intent",
                "charge_not_refundable",
            )
        charge = pi["latest_charge"]
    ch = store.get(charge, "ch_", "charge")
    if ch["status"] != "succeeded":
        raise invalid(f"Charge {ch['id']} has not succeeded and cannot be refunded.", "charge", "charge_not_refundable")
    remaining = ch["amount"] - ch["amount_refunded"]
    if remaining <= 0:
        raise invalid(f"Charge {ch['id']} has already been refunded.", "charge", "charge_already_refunded")
    amount = remaining if amount is None else amount
    if amount > remaining:
        raise invalid(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            "amount",
            "amount_too_large",
        )
    re = {
        "id": store.new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": store.new_id("txn_"),
        "charge": ch["id"],
        "created": int(time.time()),
        "currency": ch["currency"],
        "metadata": metadata or {},
        "payment_intent": ch["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "status": "succeeded",
    }
    store.add(re)
    previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
    ch["amount_refunded"] += amount
    ch["refunded"] = ch["amount_refunded"] == ch["amount"]
    refunds = ch["refunds"]
    refunds["data"].insert(0, re)
    refunds["total_count"] = len(refunds["data"])
    store.emit("refund.created", re)
    store.emit("charge.refunded", ch, previous)
    return re
