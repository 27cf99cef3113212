"""Stripe's webhook events, after ``stripe.Webhook.construct_event`` verified them.

- ``checkout.session.completed`` (paid) and ``payment_intent.succeeded``: a top-up of the
  account in the object's ``metadata.tollway_account_id``, credited once per payment
  (the entry's idempotency key is the PaymentIntent's id: a Checkout payment sends both
  events, and an auto-recharge was credited when it succeeded), and once per event id.
  The session also saves the customer and the card for auto-recharge.
- ``charge.refunded``: the refunded amount not yet taken out (the charge carries the
  total refunded so far) leaves the wallet that the charge's payment topped up.
- Anything else, or an object of no account of ours: acknowledged, nothing changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from tollway.keys.store import KeyStore
from tollway.wallet.recharge import AutoRecharge, topup_key
from tollway.wallet.service import Wallet
from tollway.wallet.store import WalletStore
from tollway.wallet.stripe_api import MICROS_PER_CENT, StripeApi

log = logging.getLogger("tollway.wallet")


def _id(value: Any) -> Optional[str]:
    """An expandable field: the id, whether Stripe sent the id or the object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


class StripeEvents:
    def __init__(
        self, wallet: Wallet, store: WalletStore, keys: KeyStore, api: StripeApi, recharge: AutoRecharge
    ) -> None:
        self.wallet = wallet
        self.store = store
        self.keys = keys
        self.api = api
        self.recharge = recharge
        self._refunds = threading.Lock()  # one refund at a time: the "not yet taken out" is read, then written

    def handle(self, event: dict[str, Any]) -> str:
        """Apply one verified event (synchronous: from a worker thread); what was done, for the log."""
        kind = event.get("type")
        obj = (event.get("data") or {}).get("object") or {}
        if not isinstance(obj, dict) or not isinstance(event.get("id"), str):
            return "ignored (no object)"
        if kind == "checkout.session.completed":
            return self._checkout(event["id"], obj)
        if kind == "payment_intent.succeeded":
            return self._intent(event["id"], obj)
        if kind == "charge.refunded":
            return self._refund(event["id"], obj)
        return f"ignored ({kind})"

    def _account(self, obj: dict[str, Any]) -> Optional[str]:
        metadata = obj.get("metadata") or {}
        account_id = metadata.get("tollway_account_id") if isinstance(metadata, dict) else None
        if not isinstance(account_id, str) or not 0 < len(account_id) <= 40 or "\x00" in account_id:
            return None
        if self.keys.account(account_id) is None:
            return None
        return account_id

    def _credit(self, event_id: str, account_id: str, payment: str, cents: int, cause: str) -> str:
        if not isinstance(cents, int) or isinstance(cents, bool) or cents <= 0:
            return "ignored (no amount)"
        amount = cents * MICROS_PER_CENT
        entry, created = self.store.add(
            account_id, "topup", amount, cause,
            stripe_object_id=payment, stripe_event_id=event_id, idempotency_key=topup_key(payment),
        )  # fmt: skip
        if not created:
            return f"already credited ({entry['id']})"
        self.wallet.paid_in(account_id, amount)
        return f"credited {amount} micros to {account_id}"

    def _checkout(self, event_id: str, session: dict[str, Any]) -> str:
        account_id = self._account(session)
        if account_id is None or session.get("mode") != "payment":
            return "ignored (not a top-up)"
        if session.get("payment_status") != "paid":
            return "ignored (not paid yet)"
        intent = _id(session.get("payment_intent"))
        customer = _id(session.get("customer"))
        if customer is not None:
            values: dict[str, Any] = {"stripe_customer_id": customer}
            if intent is not None:
                try:
                    method = self.api.payment_method_of(intent)
                except Exception:  # the top-up still counts; auto-recharge finds no card
                    log.exception("could not read the payment method of %s", intent)
                    method = None
                if method:
                    values["payment_method_id"] = method
            self.store.save_settings(account_id, values)
            self.recharge.saved(account_id, self.store.wallet(account_id))
        return self._credit(
            event_id, account_id, intent or session["id"], session.get("amount_total"), f"top-up {session['id']}"
        )

    def _intent(self, event_id: str, intent: dict[str, Any]) -> str:
        account_id = self._account(intent)
        if account_id is None:
            return "ignored (not ours)"
        # An auto-recharge's event may come before its API response: named as the recharge would
        # name it (the monthly maximum counts these).
        metadata = intent.get("metadata") or {}
        kind = "auto-recharge" if metadata.get("tollway_kind") == "auto_recharge" else "payment"
        return self._credit(event_id, account_id, intent["id"], intent.get("amount_received"), f"{kind} {intent['id']}")

    def _refund(self, event_id: str, charge: dict[str, Any]) -> str:
        payment = _id(charge.get("payment_intent")) or charge.get("id")
        account_id = self.store.topup_account(payment) if isinstance(payment, str) else None
        if account_id is None:
            return "ignored (not a top-up of ours)"
        refunded = charge.get("amount_refunded")
        if not isinstance(refunded, int) or isinstance(refunded, bool) or refunded <= 0:
            return "ignored (nothing refunded)"
        with self._refunds:
            due = refunded * MICROS_PER_CENT - self.store.refunded(charge["id"])
            if due <= 0:
                return "already refunded"
            entry, created = self.store.add(
                account_id, "refund", -due, f"refund of {payment} (charge {charge['id']})",
                stripe_object_id=charge["id"], stripe_event_id=event_id,
            )  # fmt: skip
        if not created:
            return f"already refunded ({entry['id']})"
        self.wallet.paid_in(account_id, -due)
        return f"refunded {due} micros from {account_id}"
