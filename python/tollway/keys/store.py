"""Accounts and API keys in the database (synchronous; call from a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sqlalchemy import Connection, func, insert, or_, select, update

from tollway.events.outbox import emit
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
    # Key policy (tollway.policy; validated by tollway.policy.fields).
    limits: dict[str, int] = field(default_factory=dict)  # period (day|week|month) -> max spend, micros
    rate_limits: Optional[dict[str, int]] = None  # {"rpm", "tpm", "max_parallel"}
    model_limits: dict[str, dict[str, int]] = field(default_factory=dict)  # model or glob -> the same
    allowed_models: Optional[list[str]] = None  # names or globs; None: every model
    tags: list[str] = field(default_factory=list)
    expires_at: Optional[int] = None
    disabled: bool = False
    previous_secret_hash: Optional[str] = None
    previous_secret_until: Optional[int] = None

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
            "rate_limits": self.rate_limits,
            "model_limits": self.model_limits,
            "allowed_models": self.allowed_models,
            "tags": self.tags,
            "expires_at": self.expires_at,
            "disabled": self.disabled,
            "previous_secret_expires_at": self.previous_secret_until,
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
        limits={w["period"]: int(w["max_spend_micros"]) for w in (row.limits or [])},
        rate_limits=row.rate_limits or None,
        model_limits=row.model_limits or {},
        allowed_models=row.allowed_models,
        tags=list(row.tags or []),
        expires_at=row.expires_at,
        disabled=bool(row.disabled),
        previous_secret_hash=row.previous_secret_hash,
        previous_secret_until=row.previous_secret_until,
    )


def policy_columns(values: dict[str, Any]) -> dict[str, Any]:
    """ApiKey policy attributes -> their columns (``limits`` is stored as a list of windows)."""
    out = dict(values)
    if "limits" in out:
        out["limits"] = [{"period": p, "max_spend_micros": m} for p, m in sorted(out["limits"].items())] or None
    return out


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

    def account(self, account_id: str) -> Optional[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "object": "account",
            "name": row.name,
            "timezone": row.timezone or "UTC",
            "created_at": row.created_at,
        }

    def update_account(
        self, account_id: str, values: dict[str, Any], then: Optional[Callable[[Connection], None]] = None
    ) -> Optional[dict[str, Any]]:
        """Update the account's columns, and run ``then`` in the same transaction."""
        if values or then is not None:
            with self.db.engine.begin() as conn:
                if values:
                    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
                if then is not None:
                    then(conn)
        return self.account(account_id)

    def zones(self) -> dict[str, Optional[str]]:
        """Every account's time zone name (None: UTC)."""
        with self.db.engine.connect() as conn:
            return dict(conn.execute(select(accounts.c.id, accounts.c.timezone)).all())

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
            found = self.by_hash(hash_secret(secret))
            existing = found[0] if found is not None and found[1] == hash_secret(secret) else None
            if found is not None and existing is None:
                raise ValueError("TOLLWAY_ADMIN_KEY names a key's previous (rotated) secret")
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
        policy: Optional[dict[str, Any]] = None,
    ) -> ApiKey:
        policy = policy or {}
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
            **policy,
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
                    **policy_columns({"disabled": key.disabled, **policy}),
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
        policy: Optional[dict[str, Any]] = None,
    ) -> tuple[ApiKey, str]:
        secret = generate_secret()
        return self._insert(account_id, name, scope, cap_micros, end_user_id, metadata, secret, policy), secret

    def by_hash(self, secret_hash: str) -> Optional[tuple[ApiKey, str]]:
        """The key whose secret, or previous secret (rotation), hashes to ``secret_hash``, with its current hash."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(
                    or_(api_keys.c.secret_hash == secret_hash, api_keys.c.previous_secret_hash == secret_hash)
                )
            ).first()
        return (_row_to_key(row), row.secret_hash) if row else None

    def rotate(self, account_id: str, key_id: str, grace_ms: int, now: int) -> Optional[tuple[ApiKey, str]]:
        """A new secret for the key (returned once); the current one keeps working until ``now + grace_ms``."""
        secret = generate_secret()
        with self.db.engine.begin() as conn:
            row = conn.execute(
                select(api_keys.c.secret_hash).where(
                    api_keys.c.id == key_id, api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None)
                )
            ).first()
            if row is None:
                return None
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(
                    secret_hash=hash_secret(secret),
                    secret_hint=_hint(secret),
                    previous_secret_hash=row.secret_hash if grace_ms > 0 else None,
                    previous_secret_until=now + grace_ms if grace_ms > 0 else None,
                )
            )
            self._emit(conn, key_id, "key.rotated", previous_secret_expires_at=now + grace_ms if grace_ms > 0 else now)
        key = self.get(account_id, key_id)
        return (key, secret) if key is not None else None

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
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
                .values(**policy_columns(values))
            )
        return self.get(account_id, key_id)

    def revoke(self, account_id: str, key_id: str) -> Optional[ApiKey]:
        now = now_ms()
        with self.db.engine.begin() as conn:
            revoked = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.account_id == account_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            ).rowcount
            if revoked:
                self._emit(conn, key_id, "key.revoked", revoked_at=now)
        return self.get(account_id, key_id)

    def _emit(self, conn: Any, key_id: str, type_: str, **extra: Any) -> None:
        """The key's event (tollway.events), in the transaction of its change."""
        row = conn.execute(
            select(api_keys.c.account_id, api_keys.c.name, api_keys.c.end_user_id, api_keys.c.scope).where(
                api_keys.c.id == key_id
            )
        ).first()
        data = {"key_id": key_id, "name": row.name, "end_user_id": row.end_user_id, "scope": row.scope, **extra}
        emit(conn, row.account_id, type_, data)

    def spent_since(self, key_ids: list[str], start_ms: int) -> dict[str, int]:
        """Settled spend per key of the calls that started at or after ``start_ms`` (a window's spend)."""
        e = usage_events
        out: dict[str, int] = {}
        with self.db.engine.connect() as conn:
            for i in range(0, len(key_ids), 500):
                query = (
                    select(e.c.key_id, func.sum(e.c.cost_micros))
                    .where(e.c.key_id.in_(key_ids[i : i + 500]), e.c.started_at >= start_ms)
                    .group_by(e.c.key_id)
                )
                out.update({key_id: int(total or 0) for key_id, total in conn.execute(query)})
        return out

    def spent(self, key_ids: Optional[list[str]] = None) -> dict[str, int]:
        """Total settled spend per key, from the usage events (rebuilds the ledger at start)."""
        query = select(usage_events.c.key_id, func.sum(usage_events.c.cost_micros)).group_by(usage_events.c.key_id)
        if key_ids is not None:
            query = query.where(usage_events.c.key_id.in_(key_ids))
        with self.db.engine.connect() as conn:
            return {key_id: int(total or 0) for key_id, total in conn.execute(query)}
