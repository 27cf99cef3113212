"""The ledger in plain Python: the reference every implementation must agree with.

One lock over all budgets makes each operation trivially atomic; it is the
specification of ``tollway._core.Ledger`` (and of the Redis ledger to come), run by
the same contract tests, not a fast path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional, Sequence, Union


@dataclass
class _Budget:
    spent: int = 0
    reserved: int = 0
    limit: Optional[int] = None

    def available(self) -> int:
        if self.limit is None:
            return 1 << 63
        return max(0, self.limit) - self.spent - self.reserved


class ReferenceHold:
    """The same ``micros`` held on each of ``budgets``; settled or released exactly once."""

    __slots__ = ("_ledger", "_budgets", "micros", "budgets", "_done", "__weakref__")

    def __init__(self, ledger: "ReferenceLedger", budgets: list[_Budget], ids: list[str], micros: int) -> None:
        self._ledger = ledger
        self._budgets = budgets
        self.budgets = ids
        self.micros = micros
        self._done = False

    @property
    def key_id(self) -> str:
        return self.budgets[0]

    @property
    def done(self) -> bool:
        return self._done

    def _finish(self, spent: Optional[int]) -> bool:
        with self._ledger.lock:
            if self._done:
                return False
            self._done = True
            for budget in self._budgets:
                budget.reserved -= self.micros
                if spent is not None:
                    budget.spent += max(0, spent)
            return True

    def settle(self, actual_micros: int) -> bool:
        return self._finish(actual_micros)

    def release(self) -> bool:
        return self._finish(None)

    def __del__(self) -> None:  # a hold dropped without either is released
        try:
            self._finish(None)
        except Exception:
            pass


class ReferenceLedger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}

    def _budget(self, budget_id: str) -> _Budget:
        return self._budgets.setdefault(budget_id, _Budget())

    def load(self, budget_id: str, spent_micros: int, limit_micros: Optional[int]) -> None:
        with self.lock:
            budget = self._budget(budget_id)
            budget.spent, budget.limit = spent_micros, limit_micros

    def set_cap(self, budget_id: str, limit_micros: Optional[int]) -> None:
        with self.lock:
            self._budget(budget_id).limit = limit_micros

    def forget(self, budget_id: str) -> None:
        with self.lock:
            self._budgets.pop(budget_id, None)

    def reserve(self, budget_id: str, min_micros: int, want_micros: int) -> Optional[ReferenceHold]:
        found = self.reserve_all([budget_id], min_micros, want_micros)
        return found if isinstance(found, ReferenceHold) else None

    def reserve_all(self, budget_ids: Sequence[str], min_micros: int, want_micros: int) -> Union[ReferenceHold, str]:
        if not budget_ids:
            raise ValueError("a hold needs at least one budget")
        low = max(0, min_micros)
        micros = max(want_micros, low)
        ids = list(dict.fromkeys(budget_ids))
        with self.lock:
            budgets = [self._budget(i) for i in ids]
            for budget_id, budget in zip(ids, budgets, strict=True):
                if budget.available() < low:
                    return budget_id
                micros = min(micros, budget.available())
            for budget in budgets:
                budget.reserved += micros
        return ReferenceHold(self, budgets, ids, micros)

    def snapshot(self, budget_id: str) -> tuple[int, int, Optional[int]]:
        with self.lock:
            budget = self._budgets.get(budget_id)
            return (budget.spent, budget.reserved, budget.limit) if budget else (0, 0, None)
