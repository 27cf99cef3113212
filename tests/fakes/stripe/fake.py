"""``FakeStripe``: the running fake and its test controls (the same controls answer over HTTP
under ``/_fake/``, see controls.py, for a process that does not hold this object)."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional

from . import billing, checkout, payments
from .server import serve
from .store import Store
from .webhooks import Deliverer

DEFAULT_API_KEY = "sk_test_fake_tollway"
WAIT_S = 10.0


class FakeStripe:
    def __init__(self, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0) -> None:
        if not api_key.startswith("sk_test_"):
            raise ValueError("the fake is a test-mode account: its key starts with sk_test_")
        self.api_key = api_key
        self.store = Store()
        self.webhooks = Deliverer()
        self._server, self._thread = serve(self, host, port)
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.store.base_url = self.url

    # ---- running state changes like a request does ---------------------------------------
    def _mutate(self, fn: Callable[[], Any], wait: bool) -> Any:
        with self.store.lock:
            try:
                result = copy.deepcopy(fn())
            finally:
                done = self.webhooks.enqueue(self.store.take_pending())
        if wait and not self.webhooks.holding:
            done.wait(WAIT_S)
        return result

    # ---- webhooks ------------------------------------------------------------------------
    def add_webhook_endpoint(self, url: str, secret: Optional[str] = None, enabled_events=("*",)) -> str:
        """Deliver events to ``url``, signed with ``secret`` (a new ``whsec_...`` when None); returns it."""
        return self.webhooks.add_endpoint(url, secret, tuple(enabled_events))

    def deliveries(self, event_id: Optional[str] = None) -> list[dict[str, Any]]:
        return self.webhooks.records(event_id)

    def flush(self, timeout: float = WAIT_S) -> bool:
        return self.webhooks.flush(timeout)

    def hold_deliveries(self, holding: bool = True) -> None:
        self.webhooks.hold(holding)

    def replay(self, event_id: str) -> list[dict[str, Any]]:
        return self.webhooks.replay(self.event(event_id))

    def duplicate(self, event_id: str, copies: int = 2) -> list[dict[str, Any]]:
        return self.webhooks.duplicate(self.event(event_id), copies)

    def forged(self, event_id: str, mode: str = "tampered") -> list[dict[str, Any]]:
        return self.webhooks.forged(self.event(event_id), mode)

    def stale(self, event_id: str, age_s: int = 600) -> list[dict[str, Any]]:
        return self.webhooks.stale(self.event(event_id), age_s)

    # ---- events ----------------------------------------------------------------------------
    def event(self, event_id: str) -> dict[str, Any]:
        with self.store.lock:
            return copy.deepcopy(self.store.get(event_id, "evt_"))

    def events(self, type: Optional[str] = None) -> list[dict[str, Any]]:
        """Every event so far, oldest first (``type`` filters)."""
        with self.store.lock:
            return [copy.deepcopy(e) for e in self.store.events if type in (None, e["type"])]

    def last_event(self, type: str) -> dict[str, Any]:
        found = self.events(type)
        if not found:
            raise LookupError(f"no {type} event")
        return found[-1]

    # ---- payments ----------------------------------------------------------------------------
    def complete_checkout(self, session_id: str, email: Optional[str] = None, wait: bool = True) -> dict[str, Any]:
        """The buyer pays: PaymentIntent + Charge (+ saved card when setup_future_usage), then
        charge.succeeded, payment_intent.succeeded, checkout.session.completed (delivered before
        this returns when ``wait``)."""
        return self._mutate(lambda: checkout.session_complete(self.store, session_id, email), wait)

    def expire_checkout(self, session_id: str, wait: bool = True) -> dict[str, Any]:
        return self._mutate(lambda: checkout.session_expire(self.store, session_id), wait)

    def decline_next(
        self, count: int = 1, decline_code: str = "generic_decline", customer: Optional[str] = None
    ) -> None:
        """The next ``count`` confirmed PaymentIntents (of ``customer``, or anyone's) are declined."""
        if count < 1:
            raise ValueError("count must be at least 1")
        with self.store.lock:
            self.store.declines.append({"remaining": count, "decline_code": decline_code, "customer": customer})

    def refund(
        self,
        charge: Optional[str] = None,
        payment_intent: Optional[str] = None,
        amount: Optional[int] = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """A refund made outside the app (the Dashboard): refund.created + charge.refunded."""
        return self._mutate(
            lambda: payments.refund(
                self.store, charge=charge, payment_intent=payment_intent, amount=amount, reason="requested_by_customer"
            ),
            wait,
        )

    def fail_next(
        self, path: str, count: int = 1, status: int = 500, drop: bool = False, method: Optional[str] = "POST"
    ) -> None:
        """The next ``count`` API requests to ``path`` fail: answered ``status`` (500 ``api_error``,
        429 ``rate_limit``, 409 ``lock_timeout``; nothing runs), or with ``drop`` run normally and
        then lose their response (the connection closes unanswered), as after a network cut."""
        if count < 1 or not (drop or 400 <= status <= 599):
            raise ValueError("count must be at least 1 and status an HTTP error status")
        with self.store.lock:
            self.store.faults.append(
                {
                    "path": path,
                    "method": method,
                    "remaining": count,
                    "mode": "drop" if drop else "status",
                    "status": status,
                }
            )

    def object(self, oid: str) -> dict[str, Any]:
        with self.store.lock:
            obj = self.store.objects.get(oid)
            if obj is None:
                raise LookupError(oid)
            return copy.deepcopy(obj)

    # ---- metering ------------------------------------------------------------------------------
    def meter_events(self, event_name: Optional[str] = None, customer: Optional[str] = None) -> list[dict[str, Any]]:
        """Accepted meter events, oldest first: event_name, identifier, customer, value (int),
        payload, timestamp / created (unix seconds), via (v1 / v2 / stream)."""
        with self.store.lock:
            return [
                dict(r)
                for r in self.store.meter_events
                if event_name in (None, r["event_name"]) and customer in (None, r["customer"])
            ]

    def meter_totals(self, event_name: Optional[str] = None) -> dict[str, int]:
        with self.store.lock:
            return billing.meter_totals(self.store, event_name)

    def meter_rejected(self) -> list[dict[str, Any]]:
        """Stream events that the asynchronous validation dropped, with their error."""
        with self.store.lock:
            return copy.deepcopy(self.store.meter_rejected)

    def set_meter_duplicates(self, mode: str) -> None:
        """``error`` (default): a duplicate identifier gets 400; ``accept``: 200, counted once."""
        if mode not in ("error", "accept"):
            raise ValueError("mode is 'error' or 'accept'")
        self.store.meter_duplicates = mode

    def expire_meter_sessions(self) -> None:
        with self.store.lock:
            for entry in self.store.meter_sessions.values():
                entry["expires"] = time.time() - 1

    # ---- the rest ------------------------------------------------------------------------------
    def requests(self, path: Optional[str] = None) -> list[dict[str, Any]]:
        """API requests received (method, path, params, idempotency_key, stripe_version, status, replayed)."""
        with self.store.lock:
            return [copy.deepcopy(r) for r in self.store.requests if path in (None, r["path"])]

    def reset(self) -> None:
        """Forget every object, event, delivery and control (webhook endpoints stay)."""
        self.webhooks.reset()
        with self.store.lock:
            fresh = Store(self.url)
            fresh.lock = self.store.lock
            self.store.__dict__.update(fresh.__dict__)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.webhooks.close()

    def __enter__(self) -> "FakeStripe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_fake_stripe(api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0) -> FakeStripe:
    """A running fake Stripe on ``host`` and a free port; ``stop()`` it (or use ``with``)."""
    return FakeStripe(api_key, host, port)
