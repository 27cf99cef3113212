"""Credit granted to a key: an entry per grant, raising the key's total limit or one window's."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from tollway.keys.secrets import new_id
from tollway.store import Database, key_credits, now_ms

# (period, window start or None for total) -> micros granted
Grants = dict[tuple[str, Optional[int]], int]


def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "key_credit",
        "key_id": row["key_id"],
        "amount_micros": row["amount_micros"],
        "amount_usd": row["amount_micros"] / 1_000_000,
        "period": row["period"],
        "window_start": row["window_start"],
        "granted_by": row["granted_by"],
        "created_at": row["created_at"],
    }


class CreditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def grant(
        self,
        account_id: str,
        key_id: str,
        amount_micros: int,
        period: str,
        window_start: Optional[int],
        granted_by: str,
        idempotency_key: Optional[str],
    ) -> tuple[dict[str, Any], bool]:
        """(the entry, whether it is new). With ``idempotency_key``, a second grant with the
        same key in the account returns the first entry and credits nothing."""
        if idempotency_key is not None:
            found = self._by_idempotency(account_id, idempotency_key)
            if found is not None:
                return found, False
        values = {
            "id": new_id("kcr_"),
            "account_id": account_id,
            "key_id": key_id,
            "amount_micros": amount_micros,
            "period": period,
            "window_start": window_start,
            "granted_by": granted_by,
            "idempotency_key": idempotency_key,
            "created_at": now_ms(),
        }
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(key_credits).values(**values))
        except IntegrityError:  # the same idempotency key, granted concurrently
            found = self._by_idempotency(account_id, idempotency_key or "")
            if found is None:
                raise
            return found, False
        return _entry(values), True

    def _by_idempotency(self, account_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(key_credits).where(
                    key_credits.c.account_id == account_id, key_credits.c.idempotency_key == idempotency_key
                )
            ).first()
        return _entry(row._mapping) if row is not None else None

    def list(self, key_id: str) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(key_credits)
                .where(key_credits.c.key_id == key_id)
                .order_by(key_credits.c.created_at.desc(), key_credits.c.id.desc())
            ).all()
        return [_entry(r._mapping) for r in rows]

    def grants(self, key_ids: Optional[list[str]] = None) -> dict[str, Grants]:
        """Per key, the credit granted per (period, window start) (what the limits are raised by)."""
        query = select(
            key_credits.c.key_id, key_credits.c.period, key_credits.c.window_start, key_credits.c.amount_micros
        )
        out: dict[str, Grants] = {}
        with self.db.engine.connect() as conn:
            if key_ids is None:
                rows = conn.execute(query).all()
            else:
                rows = []
                for i in range(0, len(key_ids), 500):
                    rows += conn.execute(query.where(key_credits.c.key_id.in_(key_ids[i : i + 500]))).all()
        for key_id, period, start, amount in rows:
            grants = out.setdefault(key_id, {})
            slot = (period, None if period == "total" else start)
            grants[slot] = grants.get(slot, 0) + int(amount)
        return out
