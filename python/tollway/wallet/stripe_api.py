"""The Stripe calls the wallet makes, with stripe-python (low rate: top-ups, recharges, exports).

Amounts: Stripe counts US cents, the wallet micro-dollars (1 cent = 10,000 micros). Every
object we create carries ``metadata.tollway_account_id`` (and ``tollway_kind``), which is
how a webhook's event finds its wallet. Calls are synchronous (run them in a thread) and
retried by stripe-python on network errors, each with an idempotency key of ours so a
retried create never makes a second object.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import stripe

from tollway.http.core import HTTPError
from tollway.wallet.config import WalletSettings

log = logging.getLogger("tollway.wallet")
MICROS_PER_CENT = 10_000
MIN_CHARGE_CENTS = 50  # Stripe's minimum charge in USD
MAX_CHARGE_CENTS = 99_999_999  # Stripe's maximum ($999,999.99)
NOT_CONFIGURED = "Stripe is not configured: set [stripe] secret_key (TOLLWAY_STRIPE_SECRET_KEY)"


class StripeNotConfigured(RuntimeError):
    pass


def refused(what: str, exc: stripe.StripeError) -> HTTPError:
    """The 502 of a call Stripe refused (logged; its user-facing message shown)."""
    log.warning("Stripe refused %s: %s", what, exc)
    return HTTPError(502, f"Stripe refused {what}: {getattr(exc, 'user_message', None) or exc}")


class StripeApi:
    def __init__(self, settings: WalletSettings) -> None:
        self.settings = settings
        self._client: Optional[stripe.StripeClient] = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.stripe_secret_key)

    def require(self) -> None:
        """A 400 ``stripe_not_configured`` unless a secret key is set."""
        if not self.configured:
            raise HTTPError(400, NOT_CONFIGURED, code="stripe_not_configured")

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            if not self.settings.stripe_secret_key:
                raise StripeNotConfigured(NOT_CONFIGURED)
            address = self.settings.stripe_api_base
            base = {"api": address, "meter_events": address} if address else None
            self._client = stripe.StripeClient(
                self.settings.stripe_secret_key, base_addresses=base, max_network_retries=2
            )  # type: ignore[arg-type]
        return self._client

    def create_customer(self, account_id: str, name: str) -> str:
        customer = self.client.v1.customers.create(
            params={"name": name[:200], "metadata": {"tollway_account_id": account_id}},
            options={"idempotency_key": f"tollway-customer-{account_id}"},
        )
        return customer.id

    def checkout_topup(
        self, account_id: str, customer_id: str, cents: int, success_url: str, cancel_url: str, request_key: str
    ) -> dict[str, Any]:
        metadata = {"tollway_account_id": account_id, "tollway_kind": "topup"}
        session = self.client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer": customer_id,
                "client_reference_id": account_id,
                "success_url": success_url,
                "cancel_url": cancel_url,
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": self.settings.currency,
                            "unit_amount": cents,
                            "product_data": {"name": "Prepaid balance top-up"},
                        },
                    }
                ],
                # Saved for auto-recharge (an off-session charge of the same card later).
                "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
                "metadata": metadata,
            },
            options={"idempotency_key": f"tollway-topup-{request_key}"},
        )
        return session.to_dict()

    def payment_method_of(self, payment_intent_id: str) -> Optional[str]:
        intent = self.client.v1.payment_intents.retrieve(payment_intent_id).to_dict()
        method = intent.get("payment_method")
        return method if isinstance(method, str) else (method or {}).get("id")

    def charge_off_session(
        self, account_id: str, customer_id: str, payment_method_id: str, cents: int, attempt_key: str
    ) -> dict[str, Any]:
        """An off-session PaymentIntent, confirmed at once: the intent (status ``succeeded``),
        or ``stripe.CardError`` / another ``stripe.StripeError``."""
        intent = self.client.v1.payment_intents.create(
            params={
                "amount": cents,
                "currency": self.settings.currency,
                "customer": customer_id,
                "payment_method": payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": "Prepaid balance auto-recharge",
                "metadata": {"tollway_account_id": account_id, "tollway_kind": "auto_recharge"},
            },
            options={"idempotency_key": f"tollway-recharge-{attempt_key}"},
        )
        return intent.to_dict()

    def meter_event(self, event_name: str, customer_id: str, value: int, identifier: str, timestamp_s: int) -> None:
        """One v2 meter event (``identifier``: Stripe keeps one event per identifier for 24 h)."""
        import datetime as dt

        self.client.v2.billing.meter_events.create(
            params={
                "event_name": event_name,
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                "timestamp": dt.datetime.fromtimestamp(timestamp_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
        )

    def invoice_item(
        self, customer_id: str, cents: int, description: str, metadata: dict[str, str], period: tuple[int, int]
    ) -> str:
        item = self.client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "amount": cents,
                "currency": self.settings.currency,
                "description": description[:500],
                "metadata": metadata,
                "period": {"start": period[0] // 1000, "end": period[1] // 1000},
            },
            options={"idempotency_key": f"tollway-ii-{metadata['tollway_key_id']}-{period[0]}-{period[1]}"},
        )
        return item.id

    def construct_event(self, payload: bytes, signature: Optional[str]) -> Any:
        """The verified event (stripe.Webhook.construct_event); raises ValueError (not JSON)
        or stripe.SignatureVerificationError (forged, or older than 5 minutes)."""
        secret = self.settings.stripe_webhook_secret
        if not secret:
            raise StripeNotConfigured("set [stripe] webhook_secret (or TOLLWAY_STRIPE_WEBHOOK_SECRET)")
        return stripe.Webhook.construct_event(payload, signature, secret)
