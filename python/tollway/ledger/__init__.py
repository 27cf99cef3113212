"""Spend: the ledger that decides caps, the usage-event writer and the usage reports.

Every cap decision goes through a ``Ledger``: counters keyed by *budget* id (a key's
cap is the budget named by the key's id; an account's wallet and a key's period
windows come next), and holds that may span several budgets at once, atomically.
``LocalLedger`` (Rust, in this process) is the default; ``ReferenceLedger``
(tollway.ledger.reference, pure Python) is the reference a shared implementation
(Redis) is checked against: all of them pass tests/test_ledger_contract.py.
"""

from typing import Optional, Protocol, Sequence, Union

from tollway._core import Hold
from tollway._core import Ledger as LocalLedger


class HoldLike(Protocol):
    """A hold: a plain value the call path settles (``ledger.settlement``) or releases."""

    @property
    def micros(self) -> int: ...
    @property
    def budgets(self) -> list[str]: ...
    @property
    def done(self) -> bool: ...
    def settle(self, actual_micros: int) -> bool: ...
    def release(self) -> bool: ...


class Ledger(Protocol):
    def load(self, budget_id: str, spent_micros: int, limit_micros: Optional[int]) -> None: ...
    def set_cap(self, budget_id: str, limit_micros: Optional[int]) -> None: ...
    def forget(self, budget_id: str) -> None: ...
    def reserve(self, budget_id: str, min_micros: int, want_micros: int) -> Optional[HoldLike]: ...
    def reserve_all(self, budget_ids: Sequence[str], min_micros: int, want_micros: int) -> Union[HoldLike, str]: ...
    def snapshot(self, budget_id: str) -> tuple[int, int, Optional[int]]: ...


__all__ = ["Hold", "HoldLike", "Ledger", "LocalLedger"]
