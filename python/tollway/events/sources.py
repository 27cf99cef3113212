"""The events the gateway notices itself (the others are emitted where their change is made:
key.revoked / key.rotated in tollway.keys.store, the top-ups in tollway.wallet):

- ``key.cap_exceeded``: the first request of a key refused by its cap or one of its windows,
  once per window (``Policy.cap_refused`` tells us; the event's dedup key is the key, the
  period and the window's start, so a second gateway process or a restart adds nothing).
- ``key.cap_warning``: a key's spend reaching each of ``cap_warning_percent`` of a cap or
  window limit, once per window (the usage writer's ``call_settled`` hook names the keys
  that spent; their budgets are read on the event loop, where the ledger's windows live).
- ``key.expiring``: a key whose ``expires_at`` is within ``key_expiring_hours``, once per
  key and expiry (a periodic look at the keys).
- ``wallet.low_balance``: a debit taking the balance under the threshold (``low_balance_usd``,
  else the auto-recharge threshold) from at or above it: once per crossing, written in the
  usage writer's transaction with the debit itself.

Events written outside a caller's transaction go through ``BackgroundWork`` (counted for
the drain) in a transaction of their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import func, select

from tollway.background import BackgroundWork, cancel_task
from tollway.events.config import EventsSettings
from tollway.events.outbox import emit
from tollway.keys.auth import Authenticator
from tollway.keys.store import ApiKey
from tollway.store import Database
from tollway.store.schema import api_keys, wallet_entries, wallets

log = logging.getLogger("tollway.events")
MAX_REMEMBERED = 100_000


def key_data(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.id, "name": key.name, "end_user_id": key.end_user_id}


class EventSources:
    def __init__(
        self,
        db: Database,
        auth: Authenticator,
        settings: EventsSettings,
        background: BackgroundWork,
        wake: Callable[[], None],
    ) -> None:
        self.db = db
        self.auth = auth
        self.settings = settings
        self.background = background
        self.wake = wake
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._sent: set[str] = set()  # dedup keys emitted (or being emitted) by this process
        self._task: Optional[asyncio.Task[None]] = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._expiring_loop(), name="tollway-events-expiring")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_task(task)
        self.loop = None

    # ---------------------------------------------------------------- helpers
    def _once(self, dedup_key: str) -> bool:
        if dedup_key in self._sent:
            return False
        if len(self._sent) > MAX_REMEMBERED:
            self._sent.clear()  # the database's unique dedup key still holds
        self._sent.add(dedup_key)
        return True

    def _write(self, account_id: str, type_: str, data: dict[str, Any], dedup_key: str) -> None:
        with self.db.engine.begin() as conn:
            emitted = emit(conn, account_id, type_, data, dedup_key=dedup_key)
        loop = self.loop
        if emitted and loop is not None:
            loop.call_soon_threadsafe(self.wake)

    def _submit(self, account_id: str, type_: str, data: dict[str, Any], dedup_key: str) -> None:
        if self._once(dedup_key):
            self.background.submit(self._write, account_id, type_, data, dedup_key)

    # ---------------------------------------------------------------- job.succeeded / job.failed
    def job_ended(self, conn: Any, job: Any) -> None:
        """(JobEngine.on_ended, in the transaction that ends the job: the event commits with the
        job's end, once.) The data is the job as ``GET /v1/jobs/{id}`` shows it."""
        if job.status not in ("succeeded", "failed"):
            return
        emitted = emit(conn, job.account_id, f"job.{job.status}", job.public(), dedup_key=f"job.{job.status}:{job.id}")
        loop = self.loop
        if emitted and loop is not None:
            loop.call_soon_threadsafe(self.wake)  # may come before the commit: the next poll finds it

    # ---------------------------------------------------------------- key.cap_exceeded
    def cap_refused(self, key: ApiKey, budget: str) -> None:
        """(Policy.cap_refused, on the event loop.)"""
        budgets = self.auth.budgets
        period, resets = budgets.window_of(key.id, budget)
        start = budgets.current_start(key, period) if period != "total" else None
        spent, _, cap = self.auth.ledger.snapshot(budget)
        data = {
            **key_data(key),
            "period": period,
            "window_start": start,
            "resets_at": resets,
            "max_spend_micros": cap,
            "spent_micros": spent,
        }
        self._submit(key.account_id, "key.cap_exceeded", data, f"key.cap_exceeded:{key.id}:{period}:{start or 0}")

    # ---------------------------------------------------------------- key.cap_warning
    def settled(self, conn: Any, rows: Sequence[dict[str, Any]]) -> None:
        """(call_settled, in the writer's thread.) Which keys spent: checked on the loop."""
        loop = self.loop
        keys = {r["key_id"] for r in rows if r.get("cost_micros", 0) > 0 and r.get("key_id")}
        if keys and loop is not None and self.settings.cap_warning_percent:
            loop.call_soon_threadsafe(self.check_warnings, keys)

    def check_warnings(self, key_ids: set[str]) -> None:
        for key_id in key_ids:
            key = self.auth.budgets.key_of(key_id)
            if key is None:
                continue
            for limit in self.auth.budgets.describe(key):
                cap, spent = limit["max_spend_micros"], limit["spent_micros"]
                if not cap:
                    continue
                for percent in self.settings.cap_warning_percent:
                    if spent * 100 < percent * cap:
                        continue
                    period, start = limit["period"], limit["window_start"]
                    data = {
                        **key_data(key),
                        "period": period,
                        "threshold_percent": percent,
                        "max_spend_micros": cap,
                        "spent_micros": spent,
                        "window_start": start,
                        "resets_at": limit["resets_at"],
                    }
                    dedup = f"key.cap_warning:{key.id}:{period}:{start or 0}:{percent}"
                    self._submit(key.account_id, "key.cap_warning", data, dedup)

    # ---------------------------------------------------------------- key.expiring
    async def _expiring_loop(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.expiring_once, self.auth.clock()):
                    self.wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the key.expiring check failed")
            await asyncio.sleep(self.settings.check_interval)

    def expiring_once(self, now: int) -> int:
        """Emit key.expiring for the keys expiring within the lead time; how many were new."""
        horizon = now + int(self.settings.key_expiring_hours * 3_600_000)
        k = api_keys.c
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(k.id, k.account_id, k.name, k.end_user_id, k.expires_at).where(
                    k.revoked_at.is_(None), k.expires_at.is_not(None), k.expires_at > now, k.expires_at <= horizon
                )
            ).all()
        new = 0
        for row in rows:
            dedup = f"key.expiring:{row.id}:{row.expires_at}"
            if dedup in self._sent:
                continue
            data = {"key_id": row.id, "name": row.name, "end_user_id": row.end_user_id, "expires_at": row.expires_at}
            with self.db.engine.begin() as conn:
                if emit(conn, row.account_id, "key.expiring", data, dedup_key=dedup):
                    new += 1
            self._once(dedup)
        return new

    # ---------------------------------------------------------------- wallet.low_balance
    def low_balance(self, conn: Any, rows: Sequence[dict[str, Any]]) -> None:
        """(call_settled, after the wallet's debit hook, in the same transaction.)"""
        event_ids = [r["event_id"] for r in rows if r.get("cost_micros", 0) > 0 and r.get("event_id")]
        if not event_ids:
            return
        w, e = wallets.c, wallet_entries.c
        debited = conn.execute(
            select(e.account_id, func.sum(e.amount_micros))
            .where(e.kind == "debit", e.usage_event_id.in_(event_ids))
            .group_by(e.account_id)
        ).all()
        for account_id, amount in debited:
            row = conn.execute(select(w.balance_micros, w.auto_recharge).where(w.account_id == account_id)).first()
            if row is None:
                continue
            threshold = self.settings.low_balance_micros
            if threshold is None and row.auto_recharge:
                threshold = row.auto_recharge.get("threshold_micros")
            before = row.balance_micros - int(amount)  # amount is negative: the debits
            if threshold is None or not (before >= threshold > row.balance_micros):
                continue
            data = {
                "balance_micros": row.balance_micros,
                "balance_usd": row.balance_micros / 1_000_000,
                "threshold_micros": threshold,
                "threshold_usd": threshold / 1_000_000,
            }
            emit(conn, account_id, "wallet.low_balance", data)
            loop = self.loop
            if loop is not None:
                loop.call_soon_threadsafe(self.wake)
