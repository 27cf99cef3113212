"""The wallet's tables: an append-only ledger of entries per account, and its balance.

Every change of a balance is an entry (``wallet_entries``) written in the same
transaction as the balance (``wallets.balance_micros``), so the balance is always the
sum of the entries (``verify`` proves it). Kinds:

- ``topup`` (> 0): money paid in (a Stripe Checkout Session, an auto-recharge);
- ``debit`` (< 0): one per priced usage event, written in the usage writer's
  transaction (the ``call_settled`` hook), unique on the event: a batch written
  again or replayed from the crash journal debits once;
- ``refund`` (< 0): money paid back (Stripe ``charge.refunded``);
- ``adjustment`` (either sign): an admin's correction or grant.

A Stripe event credits once (``stripe_event_id`` unique); an ``Idempotency-Key``
once per account.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tollway.events.outbox import emit
from tollway.store import Database, now_ms, usage_events, wallet_entries, wallets

KINDS = ("topup", "debit", "refund", "adjustment")


def entry_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": f"wle_{row['id']}",
        "object": "wallet_entry",
        "kind": row["kind"],
        "amount_micros": row["amount_micros"],
        "amount_usd": row["amount_micros"] / 1_000_000,
        "cause": row["cause"],
        "key_id": row["key_id"],
        "usage_event_id": row["usage_event_id"],
        "stripe_object_id": row["stripe_object_id"],
        "stripe_event_id": row["stripe_event_id"],
        "created_at": row["created_at"],
    }


def topup_data(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``wallet.topup.succeeded`` event's data."""
    return {
        "entry_id": entry["id"],
        "amount_micros": entry["amount_micros"],
        "amount_usd": entry["amount_micros"] / 1_000_000,
        "cause": entry["cause"],
        "stripe_object_id": entry["stripe_object_id"],
    }


def parse_entry_id(value: str) -> Optional[int]:
    if not value.startswith("wle_") or not value[4:].isdigit() or len(value) > 24:
        return None
    found = int(value[4:])
    return found if found < 1 << 63 else None  # (an id the database's BIGINT can hold)


class WalletStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert = sqlite.insert if db.is_sqlite else postgresql.insert

    # ---- writing ------------------------------------------------------------
    def _add_to_balance(self, conn: Connection, account_id: str, micros: int, now: int) -> None:
        stmt = self._upsert(wallets).values(
            account_id=account_id, balance_micros=micros, recharge_failures=0, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_={"balance_micros": wallets.c.balance_micros + micros, "updated_at": now},
        )
        conn.execute(stmt)

    def add(
        self,
        account_id: str,
        kind: str,
        amount_micros: int,
        cause: str,
        *,
        key_id: Optional[str] = None,
        stripe_object_id: Optional[str] = None,
        stripe_event_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> tuple[dict[str, Any], bool]:
        """Append an entry and move the balance by it, in one transaction: (the entry, whether
        it is new). An entry with the same Stripe event, or the same idempotency key in the
        account, is not written again: the first one is returned."""
        if kind not in KINDS or kind == "debit":
            raise ValueError(f"not an entry kind written here: {kind!r}")
        found = self._existing(account_id, stripe_event_id, idempotency_key)
        if found is not None:
            return found, False
        now = now_ms()
        values = {
            "account_id": account_id,
            "kind": kind,
            "amount_micros": amount_micros,
            "cause": cause[:500],
            "key_id": key_id,
            "usage_event_id": None,
            "stripe_object_id": stripe_object_id,
            "stripe_event_id": stripe_event_id,
            "idempotency_key": idempotency_key,
            "created_at": now,
        }
        try:
            with self.db.engine.begin() as conn:
                new_id = conn.execute(insert(wallet_entries).values(**values)).inserted_primary_key[0]
                self._add_to_balance(conn, account_id, amount_micros, now)
                if kind == "topup":  # the account's event, committed with the credit (tollway.events)
                    emit(conn, account_id, "wallet.topup.succeeded", topup_data(entry_view({**values, "id": new_id})))
        except IntegrityError:  # the same event or idempotency key, written concurrently
            found = self._existing(account_id, stripe_event_id, idempotency_key)
            if found is None:
                raise
            return found, False
        return entry_view({**values, "id": new_id}), True

    def _existing(
        self, account_id: str, stripe_event_id: Optional[str], idempotency_key: Optional[str]
    ) -> Optional[dict[str, Any]]:
        e = wallet_entries.c
        with self.db.engine.connect() as conn:
            if stripe_event_id is not None:
                row = conn.execute(select(wallet_entries).where(e.stripe_event_id == stripe_event_id)).first()
                if row is not None:
                    return entry_view(row._mapping)
            if idempotency_key is not None:
                row = conn.execute(
                    select(wallet_entries).where(e.account_id == account_id, e.idempotency_key == idempotency_key)
                ).first()
                if row is not None:
                    return entry_view(row._mapping)
        return None

    def debit(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """The ``call_settled`` hook's work: one debit per priced usage event of ``rows`` (the
        events ``conn``, the usage writer's transaction, inserts: tollway.hooks), unique on
        the event. Returns micros debited per account."""
        now = now_ms()
        new = []
        per_account: dict[str, int] = {}
        for r in rows:
            if r["cost_micros"] <= 0 or not r.get("event_id"):
                continue
            new.append(
                {
                    "account_id": r["account_id"],
                    "kind": "debit",
                    "amount_micros": -r["cost_micros"],
                    "cause": f"{r['model']} request {r['request_id']}",
                    "key_id": r["key_id"],
                    "usage_event_id": r["event_id"],
                    "stripe_object_id": None,
                    "stripe_event_id": None,
                    "idempotency_key": None,
                    "created_at": r.get("created_at") or now,
                }
            )
            per_account[r["account_id"]] = per_account.get(r["account_id"], 0) + r["cost_micros"]
        if new:
            conn.execute(insert(wallet_entries), new)
            for account_id, micros in per_account.items():
                self._add_to_balance(conn, account_id, -micros, now)
        return per_account

    def save_settings(
        self, account_id: str, values: dict[str, Any], event: Optional[tuple[str, dict[str, Any]]] = None
    ) -> None:
        """Auto-recharge settings, Stripe customer, payment method (a wallet row is made if none);
        ``event``: (type, data) of an account event written in the same transaction."""
        now = now_ms()
        with self.db.engine.begin() as conn:
            self._add_to_balance(conn, account_id, 0, now)
            conn.execute(update(wallets).where(wallets.c.account_id == account_id).values(**values, updated_at=now))
            if event is not None:
                emit(conn, account_id, *event)

    # ---- reading ------------------------------------------------------------
    def wallet(self, account_id: str) -> Optional[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(wallets).where(wallets.c.account_id == account_id)).first()
        return dict(row._mapping) if row is not None else None

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per account: (money in: the sum of entries other than debits, money spent: the
        debits' sum as a positive number), from the entries."""
        e = wallet_entries.c
        debit = e.kind == "debit"
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(e.account_id, debit.label("is_debit"), func.sum(e.amount_micros)).group_by(e.account_id, debit)
            ).all()
        out: dict[str, list[int]] = {}
        for account_id, is_debit, total in rows:
            slot = out.setdefault(account_id, [0, 0])
            if is_debit:
                slot[1] += -int(total or 0)
            else:
                slot[0] += int(total or 0)
        return {a: (v[0], v[1]) for a, v in out.items()}

    def entries(
        self,
        account_id: str,
        from_ms: Optional[int],
        to_ms: Optional[int],
        after: Optional[int],
        limit: int,
        kinds: Optional[Iterable[str]] = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Entries oldest first (cursor: the last entry's id), and whether more follow."""
        e = wallet_entries.c
        query = select(wallet_entries).where(e.account_id == account_id)
        if from_ms is not None:
            query = query.where(e.created_at >= from_ms)
        if to_ms is not None:
            query = query.where(e.created_at < to_ms)
        if after is not None:
            query = query.where(e.id > after)
        if kinds is not None:
            query = query.where(e.kind.in_(list(kinds)))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(e.id).limit(limit + 1)).all()
        return [entry_view(r._mapping) for r in rows[:limit]], len(rows) > limit

    def last_topups(self, account_id: str, n: int = 5) -> list[dict[str, Any]]:
        e = wallet_entries.c
        query = (
            select(wallet_entries).where(e.account_id == account_id, e.kind == "topup").order_by(e.id.desc()).limit(n)
        )
        with self.db.engine.connect() as conn:
            return [entry_view(r._mapping) for r in conn.execute(query)]

    def topup_account(self, stripe_object_id: str) -> Optional[str]:
        """The account a Stripe payment (a PaymentIntent or Checkout Session id) topped up."""
        e = wallet_entries.c
        with self.db.engine.connect() as conn:
            return conn.execute(
                select(e.account_id).where(e.kind == "topup", e.stripe_object_id == stripe_object_id).limit(1)
            ).scalar()

    def refunded(self, charge_id: str) -> int:
        """Micros already refunded for a Stripe charge (a positive number)."""
        e = wallet_entries.c
        with self.db.engine.connect() as conn:
            total = conn.execute(
                select(func.sum(e.amount_micros)).where(e.kind == "refund", e.stripe_object_id == charge_id)
            ).scalar()
        return -int(total or 0)

    def recharged_since(self, account_id: str, since_ms: int) -> int:
        """Micros auto-recharged into the wallet since ``since_ms`` (for the monthly maximum)."""
        e = wallet_entries.c
        with self.db.engine.connect() as conn:
            total = conn.execute(
                select(func.sum(e.amount_micros)).where(
                    e.account_id == account_id, e.kind == "topup", e.created_at >= since_ms,
                    e.cause.like("auto-recharge%"),
                )
            ).scalar()  # fmt: skip
        return int(total or 0)

    def with_auto_recharge(self) -> dict[str, dict[str, Any]]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(wallets).where(wallets.c.auto_recharge.is_not(None))).all()
        return {r.account_id: dict(r._mapping) for r in rows if r.auto_recharge}

    def verify(self) -> list[str]:
        """Problems found (none: every balance is the sum of its entries, and every debit is
        exactly its usage event's cost, in the event's account)."""
        problems: list[str] = []
        e, u = wallet_entries.c, usage_events.c
        with self.db.engine.connect() as conn:
            sums = dict(conn.execute(select(e.account_id, func.sum(e.amount_micros)).group_by(e.account_id)).all())
            balances = dict(conn.execute(select(wallets.c.account_id, wallets.c.balance_micros)).all())
            for account_id in sorted(set(sums) | set(balances)):
                total, balance = int(sums.get(account_id) or 0), balances.get(account_id)
                if balance is None:
                    problems.append(f"account {account_id}: entries sum to {total} micros but it has no wallet row")
                elif int(balance) != total:
                    problems.append(f"account {account_id}: balance {balance} micros, its entries sum to {total}")
            mismatched = conn.execute(
                select(e.usage_event_id, e.amount_micros, u.cost_micros, e.account_id, u.account_id)
                .select_from(wallet_entries.outerjoin(usage_events, u.event_id == e.usage_event_id))
                .where(e.kind == "debit")
                .where((u.event_id.is_(None)) | (u.cost_micros != -e.amount_micros) | (u.account_id != e.account_id))
                .limit(100)
            ).all()
            for event_id, amount, cost, entry_account, event_account in mismatched:
                if cost is None:
                    problems.append(f"debit of {-amount} micros for usage event {event_id}, which does not exist")
                else:
                    problems.append(
                        f"debit of {-amount} micros ({entry_account}) for usage event {event_id} "
                        f"of {cost} micros ({event_account})"
                    )
        return problems
