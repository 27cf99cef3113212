"""Who is calling: secret -> key, cached in memory, with the ledger kept in step."""

from __future__ import annotations

import asyncio
from typing import Optional

from tollway.http.core import HTTPError
from tollway.keys.secrets import hash_secret, secret_from_headers
from tollway.keys.store import ApiKey, KeyStore
from tollway.ledger import Ledger


class Authenticator:
    """Keys by secret hash. Every active key is loaded at start; keys minted or
    changed through this process update the cache at once (revocation holds from
    the very next request); keys created elsewhere are loaded on first use."""

    def __init__(self, store: KeyStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self._by_hash: dict[str, ApiKey] = {}
        self._hash_of: dict[str, str] = {}

    def preload(self) -> None:
        """Load every active key and rebuild the spend counters from the usage events."""
        spent = self.store.spent()
        for key, digest in self.store.all_active():
            self.remember(key, digest, spent_micros=spent.get(key.id, 0))

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
        if key.revoked_at is not None:
            raise HTTPError(401, "this API key has been revoked", code="invalid_api_key")
        return key

    async def key_by_id(self, key_id: str) -> ApiKey:
        """The active key ``key_id``, for a call no HTTP request carries (a job); 401 as for its secret."""
        digest = self._hash_of.get(key_id)
        key = self._by_hash.get(digest) if digest is not None else None
        if key is None:
            found = await asyncio.to_thread(self.store.by_id, key_id)
            key = self._load(found[1]) if found is not None else None
            if key is None:
                raise HTTPError(401, f"no API key {key_id!r}", code="invalid_api_key")
        if key.revoked_at is not None:
            raise HTTPError(401, "this API key has been revoked", code="invalid_api_key")
        return key

    def _load(self, digest: str) -> Optional[ApiKey]:
        key = self.store.by_hash(digest)
        if key is None:
            return None
        spent = None
        if key.revoked_at is None and key.id not in self._hash_of:  # created by another process
            spent = self.store.spent([key.id]).get(key.id, 0)
        self.remember(key, digest, spent_micros=spent)
        return key

    def remember(self, key: ApiKey, digest: Optional[str] = None, spent_micros: Optional[int] = None) -> None:
        """Put a new or changed key in the cache and keep the ledger in step: with
        ``spent_micros`` (a key this process has not counted yet) its counters are
        (re)built, otherwise only its cap changes."""
        digest = digest or self._hash_of.get(key.id)
        if digest is None:
            return
        self._by_hash[digest] = key
        self._hash_of[key.id] = digest
        if key.revoked_at is not None:
            return
        if spent_micros is not None:
            self.ledger.load(key.id, spent_micros, key.max_spend_micros)
        else:
            self.ledger.set_cap(key.id, key.max_spend_micros)
