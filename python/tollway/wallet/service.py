"""The wallet on the call path: one budget per account in the ledger, held with the key's.

With the wallet on, every key's call holds on ``wallet:<account id>`` together with the
key's own budgets, in the one atomic reservation (``Ledger.reserve_all``), and settles
both to the actual cost (with the markup: it is in the price). The budget's limit is the
money paid in (top-ups, adjustments, less refunds), its spent the debits: so what is
available is the balance less what requests in flight hold, and a request the balance
cannot cover is refused (402 ``insufficient_balance``) before the upstream is called.

The in-memory budget is the authority while the gateway runs (this process owns the
ledger, tollway.ledger.owner); at start it is loaded from the entries, after the crash
journal's replay has written (and debited) what a crash left.
"""

from __future__ import annotations

import threading
from typing import Any

from tollway.ledger import Ledger
from tollway.wallet.store import WalletStore

PREFIX = "wallet:"


def budget_id(account_id: str) -> str:
    return PREFIX + account_id


class Wallet:
    def __init__(self, ledger: Ledger, store: WalletStore, enabled: bool) -> None:
        self.ledger = ledger
        self.store = store
        self.enabled = enabled
        self._paid_in: dict[str, int] = {}  # account -> money in (may be < 0 after a refund)
        self._lock = threading.Lock()

    # ---- the ledger's budget -------------------------------------------------
    def load(self) -> None:
        """Every wallet's budget from its entries (synchronous: at start)."""
        if not self.enabled:
            return
        for account_id, (paid_in, spent) in self.store.totals().items():
            with self._lock:
                self._paid_in[account_id] = paid_in
            self.ledger.load(budget_id(account_id), spent, max(0, paid_in))

    def budgets_for(self, account_id: str) -> list[str]:
        """The budgets a key of ``account_id`` holds on besides its own: its wallet's, or none."""
        if not self.enabled:
            return []
        with self._lock:
            if account_id not in self._paid_in:
                # An account with no entry yet (all were loaded at start): nothing paid in.
                self._paid_in[account_id] = 0
                self.ledger.load(budget_id(account_id), 0, 0)
        return [budget_id(account_id)]

    def paid_in(self, account_id: str, micros: int) -> None:
        """An entry other than a debit was written: move the budget's limit by it."""
        if not self.enabled:
            return
        self.budgets_for(account_id)
        with self._lock:
            total = self._paid_in[account_id] = self._paid_in[account_id] + micros
            self.ledger.set_cap(budget_id(account_id), max(0, total))

    # ---- reading -----------------------------------------------------------
    def balance(self, account_id: str) -> dict[str, Any]:
        """Balance (paid in less settled spend), held by requests in flight, and available."""
        spent, reserved, _ = self.ledger.snapshot(budget_id(account_id))
        with self._lock:
            paid_in = self._paid_in.get(account_id, 0)
        balance = paid_in - spent
        return {
            "balance_micros": balance,
            "balance_usd": balance / 1_000_000,
            "reserved_micros": reserved,
            "available_micros": max(0, balance - reserved),
        }
