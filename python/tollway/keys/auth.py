"""Who is calling: secret -> key, cached in memory, with the key's budgets kept in step.

A key is refused when it is revoked (401), past its ``expires_at`` (401
``key_expired``), or ``disabled`` (403 ``key_disabled``), each from the very next
request after the change. After a rotation the previous secret keeps working until
the end of its grace period (``previous_secret_until``), then gets 401.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from tollway.http.core import HTTPError
from tollway.keys.secrets import hash_secret, secret_from_headers
from tollway.keys.store import ApiKey, KeyStore
from tollway.ledger import Ledger
from tollway.policy.budgets import KeyBudgets
from tollway.policy.credits import CreditStore


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Authenticator:
    """Keys by secret hash. Every active key is loaded at start; keys minted or
    changed through this process update the cache at once; keys created elsewhere
    are loaded on first use."""

    def __init__(
        self,
        store: KeyStore,
        ledger: Ledger,
        clock: Callable[[], int] = wall_clock_ms,
        credits: Optional[CreditStore] = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.budgets = KeyBudgets(ledger, store, credits or CreditStore(store.db), clock)
        self._by_hash: dict[str, ApiKey] = {}
        self._hash_of: dict[str, str] = {}  # key id -> its current secret's hash

    def preload(self) -> None:
        """Load every active key and rebuild its budgets from the usage events."""
        self.budgets.set_zones(self.store.zones())
        spent = self.store.spent()
        found = self.store.all_active()
        for key, digest in found:
            self._cache(key, digest)
        self.budgets.load([key for key, _ in found], spent)

    async def authenticate(self, headers: dict[str, str]) -> ApiKey:
        secret = secret_from_headers(headers)
        if secret is None:
            raise HTTPError(
                401, "missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'", code="missing_api_key"
            )
        digest = hash_secret(secret)
        key = self._by_hash.get(digest)
        if key is None:
            key = await asyncio.to_thread(self._load, digest)
            if key is None:
                raise HTTPError(401, "invalid API key", code="invalid_api_key")
        return self._usable(key, digest)

    def _usable(self, key: ApiKey, digest: Optional[str]) -> ApiKey:
        if key.revoked_at is not None:
            raise HTTPError(401, "this API key has been revoked", code="invalid_api_key")
        now = self.clock()
        if digest is not None and digest != self._hash_of.get(key.id):
            until = key.previous_secret_until
            if digest != key.previous_secret_hash or until is None or now >= until:
                raise HTTPError(
                    401, "this API key's secret was rotated and its grace period is over", code="invalid_api_key"
                )
        if key.expires_at is not None and now >= key.expires_at:
            raise HTTPError(401, "this API key has expired", code="key_expired")
        if key.disabled:
            raise HTTPError(403, "this API key is disabled", code="key_disabled")
        return key

    async def admin(self, headers: dict[str, str], message: str = "this endpoint needs an admin key") -> ApiKey:
        """The calling key, which must be an admin key (403 ``admin_key_required`` otherwise)."""
        key = await self.authenticate(headers)
        if not key.is_admin:
            raise HTTPError(403, message, code="admin_key_required")
        return key

    async def key_by_id(self, key_id: str) -> ApiKey:
        """The active key ``key_id``, for a call no HTTP request carries (a job); 401 as for its secret."""
        digest = self._hash_of.get(key_id)
        key = self._by_hash.get(digest) if digest is not None else None
        if key is None:
            found = await asyncio.to_thread(self.store.by_id, key_id)
            key = await asyncio.to_thread(self._load, found[1]) if found is not None else None
            if key is None:
                raise HTTPError(401, f"no API key {key_id!r}", code="invalid_api_key")
        return self._usable(key, None)

    def _load(self, digest: str) -> Optional[ApiKey]:
        found = self.store.by_hash(digest)
        if found is None:
            return None
        key, current = found
        fresh = key.revoked_at is None and not self.budgets.tracked(key.id)  # created by another process
        if fresh and not self.budgets.knows_zone(key.account_id):
            self.budgets.set_zones({key.account_id: (self.store.account(key.account_id) or {}).get("timezone")})
        self._cache(key, current)
        if fresh:
            self.budgets.load([key], self.store.spent([key.id]))
        return key

    def _cache(self, key: ApiKey, digest: str) -> None:
        old = self._by_hash.get(self._hash_of.get(key.id, ""))
        if old is not None and old.previous_secret_hash:
            self._by_hash.pop(old.previous_secret_hash, None)
        self._by_hash[digest] = key
        self._hash_of[key.id] = digest
        if key.previous_secret_hash and key.previous_secret_until is not None:
            self._by_hash[key.previous_secret_hash] = key

    def minted(self, key: ApiKey, digest: str) -> None:
        """A key just minted by this process."""
        self._cache(key, digest)
        self.budgets.new_key(key)

    def remember(self, key: ApiKey, digest: Optional[str] = None) -> None:
        """A key changed through this process (PATCH, revoke, rotate): the cache and its limits follow."""
        digest = digest or self._hash_of.get(key.id)
        if digest is None:
            return
        self._cache(key, digest)
        if key.revoked_at is not None:
            self.budgets.forget(key.id)
        else:
            self.budgets.update(key)

    def zone_changed(self, account_id: str, name: Optional[str]) -> None:
        """The account's time zone changed: its keys' windows are rebuilt from the database
        (call after flushing the usage writer; from a worker thread)."""
        self.budgets.set_zones({account_id: name})
        self.budgets.load(self.budgets.keys_of(account_id), None)  # the lifetime counters stay as they are
