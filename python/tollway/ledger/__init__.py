"""Spend: the per-key ledger that decides caps, the usage-event writer and the usage reports.

Every cap decision goes through a ``Ledger``. ``LocalLedger`` (the Rust one, lock-free
counters in this process) is the default; a shared implementation (Redis) can take its
place for several processes, as long as it keeps the same contract.
"""

from typing import Optional, Protocol

from tollway._core import Hold
from tollway._core import Ledger as LocalLedger


class Ledger(Protocol):
    def load(self, key_id: str, spent_micros: int, cap_micros: Optional[int]) -> None: ...
    def set_cap(self, key_id: str, cap_micros: Optional[int]) -> None: ...
    def forget(self, key_id: str) -> None: ...
    def reserve(self, key_id: str, min_micros: int, want_micros: int) -> Optional[Hold]: ...
    def snapshot(self, key_id: str) -> tuple[int, int, Optional[int]]: ...


__all__ = ["Hold", "Ledger", "LocalLedger"]
