"""Per-user API keys: minted by an admin key, capped in micro-dollars, stored only as hashes."""

from tollway.keys.secrets import generate_secret, hash_secret
from tollway.keys.store import ApiKey, KeyStore

__all__ = ["ApiKey", "KeyStore", "generate_secret", "hash_secret"]
