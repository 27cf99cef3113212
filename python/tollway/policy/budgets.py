"""A key's money budgets in the ledger: its total cap and its day, week and month windows.

Budget ids: the key's id for the total (as before windows existed), and
``<key id>@<period>:<window start ms>`` for a window. Every key's three windows are
counted, limited or not, so a limit added later by PATCH starts from the window's
true spend. A request holds the same amount on all four budgets at once
(``Ledger.reserve_all``): it must fit every limited window, and it is charged to the
windows its start fell in, whenever it settles.

Budgets the key shares with others come after its own (``shared``: the account's
wallet, tollway.wallet): the same hold covers them too.

Windows are rolled lazily: the first call after a boundary creates the new window's
budget with nothing spent. That is exact because this process owns the ledger
(tollway.ledger.owner) and counted every call since it loaded the key; windows that
began before the key was loaded were loaded from the usage events (``started_at``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tollway.keys.store import ApiKey, KeyStore
from tollway.ledger import Ledger
from tollway.policy.credits import CreditStore, Grants
from tollway.policy.windows import UTC, WINDOWED, window, zone


@dataclass(slots=True)
class _Window:
    period: str
    start: int
    end: int
    budget: str


@dataclass(slots=True)
class _Tracked:
    key: ApiKey
    tz: dt.tzinfo
    windows: list[_Window]
    ids: list[str]  # [key id, day, week, month, *shared]
    next_end: int
    grants: Grants


def window_budget(key_id: str, period: str, start: int) -> str:
    return f"{key_id}@{period}:{start}"


def _no_shared(account_id: str) -> list[str]:
    return []


class KeyBudgets:
    def __init__(self, ledger: Ledger, store: KeyStore, credits: CreditStore, clock: Callable[[], int]) -> None:
        # The budgets of an account's keys besides their own (the wallet's); set by the gateway.
        self.shared: Callable[[str], list[str]] = _no_shared
        self.ledger = ledger
        self.store = store
        self.credits = credits
        self.clock = clock
        self._zones: dict[str, Optional[str]] = {}
        self._tracked: dict[str, _Tracked] = {}

    # ---- loading ------------------------------------------------------------
    def set_zones(self, zones: dict[str, Optional[str]]) -> None:
        self._zones.update(zones)

    def knows_zone(self, account_id: str) -> bool:
        return account_id in self._zones

    def zone_of(self, account_id: str) -> dt.tzinfo:
        name = self._zones.get(account_id)
        try:
            return zone(name)
        except ValueError:  # validated on write; a name dropped from the tz database falls back to UTC
            return UTC

    def load(self, keys: list[ApiKey], totals: Optional[dict[str, int]]) -> None:
        """(Re)build the budgets of ``keys`` from the database: totals given (None: keep the
        lifetime counters as they are, only their limits follow), the current windows' spend
        and every credit read here (synchronous: from a worker thread)."""
        if not keys:
            return
        now = self.clock()
        ids = [k.id for k in keys]
        grants = self.credits.grants(ids)
        by_start: dict[int, list[str]] = {}
        plans: dict[str, list[tuple[str, int, int]]] = {}
        for key in keys:
            tz = self.zone_of(key.account_id)
            plan = [(p, *window(p, now, tz)) for p in WINDOWED]
            plans[key.id] = plan
            for _period, start, _end in plan:
                by_start.setdefault(start, []).append(key.id)
        spent: dict[tuple[str, int], int] = {}
        for start, key_ids in by_start.items():
            for key_id, micros in self.store.spent_since(key_ids, start).items():
                spent[(key_id, start)] = micros
        for key in keys:
            total = None if totals is None else totals.get(key.id, 0)
            self._track(key, total, plans[key.id], spent, grants.get(key.id, {}))

    def _track(
        self,
        key: ApiKey,
        total: Optional[int],
        plan: list[tuple[str, int, int]],
        spent: dict[tuple[str, int], int],
        grants: Grants,
    ) -> None:
        old = self._tracked.get(key.id)
        if old is not None:
            for w in old.windows:
                self.ledger.forget(w.budget)
        windows = [_Window(p, s, e, window_budget(key.id, p, s)) for p, s, e in plan]
        tracked = _Tracked(
            key, self.zone_of(key.account_id), windows,
            [key.id] + [w.budget for w in windows] + self.shared(key.account_id),
            min(w.end for w in windows), grants,
        )  # fmt: skip
        if total is None:
            self.ledger.set_cap(key.id, self._limit(tracked, "total", None))
        else:
            self.ledger.load(key.id, total, self._limit(tracked, "total", None))
        for w in windows:
            self.ledger.load(w.budget, spent.get((key.id, w.start), 0), self._limit(tracked, w.period, w.start))
        self._tracked[key.id] = tracked

    def new_key(self, key: ApiKey) -> None:
        """A key just minted here: nothing spent anywhere."""
        now = self.clock()
        tz = self.zone_of(key.account_id)
        self._track(key, 0, [(p, *window(p, now, tz)) for p in WINDOWED], {}, {})

    def update(self, key: ApiKey) -> None:
        """The key's limits changed (PATCH): new limits on the same counters."""
        tracked = self._tracked.get(key.id)
        if tracked is None:
            return
        tracked.key = key
        self.ledger.set_cap(key.id, self._limit(tracked, "total", None))
        for w in tracked.windows:
            self.ledger.set_cap(w.budget, self._limit(tracked, w.period, w.start))

    def granted(self, key_id: str, period: str, start: Optional[int], micros: int) -> None:
        tracked = self._tracked.get(key_id)
        if tracked is None:
            return
        slot = (period, start)
        tracked.grants[slot] = tracked.grants.get(slot, 0) + micros
        self.update(tracked.key)

    def key_of(self, key_id: str) -> Optional[ApiKey]:
        """The key whose budgets are tracked under ``key_id`` (None when none are)."""
        tracked = self._tracked.get(key_id)
        return tracked.key if tracked is not None else None

    def forget(self, key_id: str) -> None:
        tracked = self._tracked.pop(key_id, None)
        if tracked is not None:
            for w in tracked.windows:
                self.ledger.forget(w.budget)

    def tracked(self, key_id: str) -> bool:
        return key_id in self._tracked

    def keys_of(self, account_id: str) -> list[ApiKey]:
        return [t.key for t in self._tracked.values() if t.key.account_id == account_id]

    # ---- the hot path ------------------------------------------------------
    def budget_ids(self, key: ApiKey, now: int) -> list[str]:
        """The budgets a call starting at ``now`` holds on (rolling windows past their end)."""
        tracked = self._tracked.get(key.id)
        if tracked is None:  # not loaded (cannot happen for a key the authenticator returned)
            return [key.id] + self.shared(key.account_id)
        if now >= tracked.next_end:
            self._roll(tracked, now)
        return tracked.ids

    def _roll(self, tracked: _Tracked, now: int) -> None:
        for i, w in enumerate(tracked.windows):
            if now < w.end:
                continue
            start, end = window(w.period, now, tracked.tz)
            fresh = _Window(w.period, start, end, window_budget(tracked.key.id, w.period, start))
            self.ledger.forget(w.budget)  # holds still on it keep it alive until they settle
            self.ledger.load(fresh.budget, 0, self._limit(tracked, w.period, start))
            tracked.windows[i] = fresh
            tracked.ids[i + 1] = fresh.budget
        tracked.next_end = min(w.end for w in tracked.windows)

    @staticmethod
    def _limit(tracked: _Tracked, period: str, start: Optional[int]) -> Optional[int]:
        key = tracked.key
        base = key.max_spend_micros if period == "total" else key.limits.get(period)
        if base is None:
            return None
        return base + tracked.grants.get((period, start), 0)

    # ---- reading -----------------------------------------------------------
    def window_of(self, key_id: str, budget_id: str) -> tuple[str, Optional[int]]:
        """(period, resets at or None) of one of the key's budgets."""
        tracked = self._tracked.get(key_id)
        if tracked is not None:
            for w in tracked.windows:
                if w.budget == budget_id:
                    return w.period, w.end
        return "total", None

    def describe(self, key: ApiKey) -> list[dict[str, Any]]:
        """The key's limited windows (and its total cap): limit, spent, held, remaining, reset."""
        tracked = self._tracked.get(key.id)
        if tracked is None:
            return []
        now = self.clock()
        if now >= tracked.next_end:
            self._roll(tracked, now)
        out = []
        entries = [("total", None, None, key.id)] + [(w.period, w.start, w.end, w.budget) for w in tracked.windows]
        for period, start, end, budget in entries:
            limit = self._limit(tracked, period, start)
            if limit is None:
                continue
            spent, reserved, _ = self.ledger.snapshot(budget)
            out.append(
                {
                    "period": period,
                    "max_spend_usd": limit / 1_000_000,
                    "max_spend_micros": limit,
                    "credit_micros": tracked.grants.get((period, start), 0),
                    "spent_micros": spent,
                    "reserved_micros": reserved,
                    "remaining_micros": max(0, limit - spent - reserved),
                    "window_start": start,
                    "resets_at": end,
                }
            )
        return out

    def current_start(self, key: ApiKey, period: str) -> Optional[int]:
        if period == "total":
            return None
        return window(period, self.clock(), self.zone_of(key.account_id))[0]
