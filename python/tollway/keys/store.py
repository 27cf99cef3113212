"""Accounts and API keys in the database (synchronous; call from a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import func, insert, select, update

from tollway.keys.secrets import generate_secret, hash_secret, new_id
from tollway.store import Database, accounts, api_keys, now_ms, usage_events

SCOPES = ("standard", "admin")


@dataclass(slots=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    scope: str
    max_spend_micros: Optional[int]
    end_user_id: Optional[str]
    metadata: dict[str, Any]
    created_at: int
    revoked_at: Optional[int]
    secret_hint: str

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def public(self, spent_micros: int = 0, reserved_micros: int = 0) -> dict[str, Any]:
        cap = self.max_spend_micros
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "scope": self.scope,
            "max_spend_usd": None if cap is None else cap / 1_000_000,
            "max_spend_micros": cap,
            "spent_micros": spent_micros,
            "reserved_micros": reserved_micros,
            "end_user_id": self.end_user_id,
            "metadata": self.metadata,
            "secret_hint": self.secret_hint,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _row_to_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        scope=row.scope,
        max_spend_micros=row.max_spend_micros,
        end_user_id=row.end_user_id,
        metadata=row.metadata or {},
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        secret_hint=row.secret_hint,
    )


def _hint(secret: str) -> str:
    return secret[:8] + "..." + secret[-4:]


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- accounts -------------------------------------------------------
    def create_account(self, name: str) -> str:
        account_id = new_id("acct_")
        with self.db.engine.begin() as conn:
            conn.execute(insert(accounts).values(id=account_id, name=name, created_at=now_ms()))
        return account_id

    def first_account(self) -> Optional[str]:
        with self.db.engine.connect() as conn:
            return conn.execute(select(accounts.c.id).order_by(accounts.c.created_at, accounts.c.id).limit(1)).scalar()

    def has_admin_key(self) -> bool:
        with self.db.engine.connect() as conn:
            found = conn.execute(
                select(api_keys.c.id).where(api_keys.c.scope == "admin", api_keys.c.revoked_at.is_(None)).limit(1)
            ).first()
        return found is not None

    def ensure_admin(self, secret: Optional[str] = None) -> tuple[Optional[ApiKey], Optional[str]]:
        """Make sure an admin key exists.

        With ``secret``: an admin key with exactly that secret exists afterwards
        (idempotent; created in the first account). Without: when no admin key
        exists, create the account and a key. Returns (key, new secret or None).
        """
        if secret is not None:
            existing = self.by_hash(hash_secret(secret))
            if existing is not None:
                if not existing.is_admin or existing.revoked_at is not None:
                    raise ValueError("TOLLWAY_ADMIN_KEY names a key that is revoked or not an admin key")
                return existing, None
            account_id = self.first_account() or self.create_account("default")
            key = self._insert(account_id, "admin", "admin", None, None, {}, secret)
            return key, None
        if self.has_admin_key():
            return None, None
        account_id = self.first_account() or self.create_account("default")
        new_secret = generate_secret()
        return self._insert(account_id, "admin", "admin", None, None, {}, new_secret), new_secret

    def new_account(self, name: str) -> tuple[ApiKey, str]:
        """A new tenant: an account and its first admin key (secret returned once)."""
        account_id = self.create_account(name)
        secret = generate_secret()
        return self._insert(account_id, "admin", "admin", None, None, {}, secret), secret

    # ---- keys -----------------------------------------------------------
    def _insert(
        self,
        account_id: str,
        name: str,
        scope: str,
        cap_micros: Optional[int],
        end_user_id: Optional[str],
        metadata: dict[str, Any],
        secret: str,
    ) -> ApiKey:
        key = ApiKey(
            id=new_id("key_"),
            account_id=account_id,
            name=name,
            scope=scope,
            max_spend_micros=cap_micros,
            end_user_id=end_user_id,
            metadata=metadata,
            created_at=now_ms(),
            revoked_at=None,
            secret_hint=_hint(secret),
        )
        with self.db.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    account_id=account_id,
                    name=name,
                    scope=scope,
                    secret_hash=hash_secret(secret),
                    secret_hint=key.secret_hint,
                    max_spend_micros=cap_micros,
                    end_user_id=end_user_id,
                    metadata=metadata,
                    created_at=key.created_at,
                )
            )
        return key

    def mint(
        self,
        account_id: str,
        name: str,
        scope: str,
        cap_micros: Optional[int],
        end_user_id: Optional[str],
        metadata: dict[str, Any],
    ) -> tuple[ApiKey, str]:
        secret = generate_secret()
        return self._insert(account_id, name, scope, cap_micros, end_user_id, metadata, secret), secret

    def by_hash(self, secret_hash: str) -> Optional[ApiKey]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash)).first()
        return _row_to_key(row) if row else None

    def by_id(self, key_id: str) -> Optional[tuple[ApiKey, str]]:
        """The key ``key_id`` of any account, with its secret hash."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return (_row_to_key(row), row.secret_hash) if row else None

    def get(self, account_id: str, key_id: str) -> Optional[ApiKey]:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
            ).first()
        return _row_to_key(row) if row else None

    def list(self, account_id: str, limit: int, after: Optional[str]) -> tuple[list[ApiKey], bool]:
        query = select(api_keys).where(api_keys.c.account_id == account_id)
        if after:
            query = query.where(api_keys.c.id > after)
        query = query.order_by(api_keys.c.id).limit(limit + 1)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_row_to_key(r) for r in rows[:limit]], len(rows) > limit

    def first_admin(self, account_id: str) -> Optional[ApiKey]:
        """The account's oldest unrevoked admin key (what work the gateway does for the account is metered to)."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(api_keys)
                .where(
                    api_keys.c.account_id == account_id, api_keys.c.scope == "admin", api_keys.c.revoked_at.is_(None)
                )
                .order_by(api_keys.c.created_at, api_keys.c.id)
                .limit(1)
            ).first()
        return _row_to_key(row) if row else None

    def all_active(self) -> list[tuple[ApiKey, str]]:
        """Every unrevoked key with its secret hash (to warm the cache at start)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))).all()
        return [(_row_to_key(r), r.secret_hash) for r in rows]

    def update(self, account_id: str, key_id: str, values: dict[str, Any]) -> Optional[ApiKey]:
        if not values:
            return self.get(account_id, key_id)
        with self.db.engine.begin() as conn:
            conn.execute(
                update(api_keys).where(api_keys.c.id == key_id, api_keys.c.account_id == account_id).values(**values)
            )
        return self.get(account_id, key_id)

    def revoke(self, account_id: str, key_id: str) -> Optional[ApiKey]:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.account_id == account_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now_ms())
            )
        return self.get(account_id, key_id)

    def spent(self, key_ids: Optional[list[str]] = None) -> dict[str, int]:
        """Total settled spend per key, from the usage events (rebuilds the ledger at start)."""
        query = select(usage_events.c.key_id, func.sum(usage_events.c.cost_micros)).group_by(usage_events.c.key_id)
        if key_ids is not None:
            query = query.where(usage_events.c.key_id.in_(key_ids))
        with self.db.engine.connect() as conn:
            return {key_id: int(total or 0) for key_id, total in conn.execute(query)}
