"""Key secrets: shown once, stored as SHA-256."""

import hashlib
import secrets as _secrets

SECRET_PREFIX = "tw_live_"

# Where clients put the key, in order of preference.
_BEARER_HEADERS = ("authorization",)
_PLAIN_HEADERS = ("x-api-key", "api-key", "xi-api-key", "x-goog-api-key")


def generate_secret() -> str:
    """``tw_live_`` + 32 random bytes, URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + _secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return prefix + _secrets.token_hex(12)


def secret_from_headers(headers: dict[str, str]) -> str | None:
    """The presented key, from any of the headers the official SDKs use."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
    for name in _PLAIN_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    return None
