"""Auto-recharge: when a settled call takes a balance below its threshold, charge the saved
card once (an off-session PaymentIntent) up to ``recharge_to``, and credit it.

- **One in flight per account**, however many calls cross the threshold at once: a
  call settled while a recharge runs does not start another; after it ends the balance
  is looked at again (a burst that spent the recharge too triggers the next one).
- **Monthly maximum**: the recharges of the calendar month (UTC) never add up to more
  than ``monthly_max``; a recharge that would is not made.
- **Failures**: a declined charge (or any Stripe error) counts; after 3 in a row
  auto-recharge stops until its settings are saved again (which resets the count).
- Credited when the PaymentIntent comes back ``succeeded``, with the PaymentIntent id as
  the entry's idempotency key, so the ``payment_intent.succeeded`` webhook that follows
  credits nothing more.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from typing import Any, Callable, Iterable, Optional

import stripe

from tollway.wallet.service import Wallet
from tollway.wallet.store import WalletStore
from tollway.wallet.stripe_api import MAX_CHARGE_CENTS, MICROS_PER_CENT, MIN_CHARGE_CENTS, StripeApi

log = logging.getLogger("tollway.wallet")
MAX_FAILURES = 3


def month_start_utc(now_ms: int) -> int:
    t = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc)
    return int(dt.datetime(t.year, t.month, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def topup_key(stripe_object_id: str) -> str:
    """The idempotency key of the top-up entry for one Stripe payment: credited once."""
    return f"stripe:{stripe_object_id}"


class AutoRecharge:
    def __init__(self, wallet: Wallet, store: WalletStore, api: StripeApi, clock: Callable[[], int]) -> None:
        self.wallet = wallet
        self.store = store
        self.api = api
        self.clock = clock
        self._lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}  # account -> its wallets row (auto_recharge set)
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._attempts = 0
        self.threads: list[threading.Thread] = []

    def load(self) -> None:
        rows = self.store.with_auto_recharge()
        with self._lock:
            self._settings = rows

    def saved(self, account_id: str, row: Optional[dict[str, Any]]) -> None:
        with self._lock:
            if row and row.get("auto_recharge"):
                self._settings[account_id] = row
            else:
                self._settings.pop(account_id, None)
        if row and row.get("auto_recharge"):
            self.poke([account_id])  # already below the new threshold: recharge now

    def poke(self, accounts: Iterable[str]) -> None:
        """Calls of ``accounts`` settled: start a recharge where one is due and none runs."""
        for account_id in accounts:
            with self._lock:
                row = self._settings.get(account_id)
                if row is None or not self._due(account_id, row):
                    continue
                if account_id in self._running:
                    self._again.add(account_id)
                    continue
                self._running.add(account_id)
                self._attempts += 1
                attempt = self._attempts
            thread = threading.Thread(target=self._run, args=(account_id, attempt), daemon=True, name="recharge")
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()

    def _due(self, account_id: str, row: dict[str, Any]) -> bool:
        if row.get("recharge_failures", 0) >= MAX_FAILURES:
            return False
        return self.wallet.balance(account_id)["balance_micros"] < row["auto_recharge"]["threshold_micros"]

    def _run(self, account_id: str, attempt: int) -> None:
        try:
            self._recharge(account_id, attempt)
        except Exception:
            log.exception("auto-recharge of account %s failed", account_id)
        finally:
            with self._lock:
                self._running.discard(account_id)
                again = account_id in self._again
                self._again.discard(account_id)
            if again:
                self.poke([account_id])

    def _recharge(self, account_id: str, attempt: int) -> None:
        with self._lock:
            row = self._settings.get(account_id)
        if row is None:
            return
        settings = row["auto_recharge"]
        balance = self.wallet.balance(account_id)["balance_micros"]
        want = settings["recharge_to_micros"] - balance
        cents = min(MAX_CHARGE_CENTS, max(MIN_CHARGE_CENTS, -(-want // MICROS_PER_CENT)))
        month = self.store.recharged_since(account_id, month_start_utc(self.clock()))
        if month + cents * MICROS_PER_CENT > settings["monthly_max_micros"]:
            log.warning(
                "auto-recharge of account %s skipped: %d micros this month, the monthly maximum is %d",
                account_id, month, settings["monthly_max_micros"],
            )  # fmt: skip
            return
        if not row.get("stripe_customer_id") or not row.get("payment_method_id"):
            self._failed(account_id, "no saved payment method (top up once through Checkout first)")
            return
        try:
            intent = self.api.charge_off_session(
                # A key of its own per attempt (stripe-python reuses it for its own retries of
                # the call): after a restart, a counter would replay an earlier attempt's intent.
                account_id,
                row["stripe_customer_id"],
                row["payment_method_id"],
                cents,
                f"{account_id}-{attempt}-{secrets.token_hex(8)}",
            )
        except stripe.StripeError as exc:
            self._failed(account_id, f"{type(exc).__name__}: {getattr(exc, 'user_message', None) or exc}")
            return
        if intent.get("status") != "succeeded":
            self._failed(account_id, f"the payment is {intent.get('status')}")
            return
        amount = int(intent.get("amount_received") or intent.get("amount") or cents) * MICROS_PER_CENT
        entry, created = self.store.add(
            account_id, "topup", amount, f"auto-recharge {intent['id']}",
            stripe_object_id=intent["id"], idempotency_key=topup_key(intent["id"]),
        )  # fmt: skip
        if created:
            self.wallet.paid_in(account_id, amount)
        self._set_failures(account_id, 0)
        log.info("auto-recharged account %s by %d micros (%s)", account_id, amount, intent["id"])

    def _failed(self, account_id: str, why: str) -> None:
        with self._lock:
            row = self._settings.get(account_id)
            failures = (row or {}).get("recharge_failures", 0) + 1
        stopped = failures >= MAX_FAILURES
        event = ("wallet.topup.failed", {"kind": "auto_recharge", "reason": why[:500], "consecutive_failures": failures,
                                         "auto_recharge_stopped": stopped})  # fmt: skip
        self._set_failures(account_id, failures, event)
        log.warning(
            "auto-recharge of account %s failed (%d in a row%s): %s",
            account_id, failures, "; stopped until its settings are saved again" if stopped else "",
            why,
        )  # fmt: skip

    def _set_failures(self, account_id: str, failures: int, event: Optional[tuple[str, dict[str, Any]]] = None) -> None:
        self.store.save_settings(account_id, {"recharge_failures": failures}, event)
        with self._lock:
            row = self._settings.get(account_id)
            if row is not None:
                row["recharge_failures"] = failures

    def wait(self, timeout: float = 10.0) -> None:
        """Until no recharge runs (tests, shutdown)."""
        for thread in list(self.threads):
            thread.join(timeout)
