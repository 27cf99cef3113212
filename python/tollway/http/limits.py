"""The documented limits on what the API accepts, in one place.

The handlers check them and the OpenAPI description (http/openapi.py) publishes
them, so a client reading /openapi.json knows what will be refused with a 400.
"""

from __future__ import annotations

MAX_JSON_DEPTH = 32  # nesting of arrays/objects in any JSON request body
MAX_METADATA_BYTES = 16 * 1024  # a ``metadata`` object, serialised as compact JSON (UTF-8)
MAX_NAME_CHARS = 200  # key names, end_user_id
MAX_TOKENS_LIMIT = 2**31 - 1  # max_tokens / max_completion_tokens
MAX_SPEND_USD = 10**9  # max_spend_usd
MAX_TIME_MS = 2**53  # from_ms / to_ms (Unix milliseconds; 2**53 is where JSON numbers stop being exact)

__all__ = ["MAX_JSON_DEPTH", "MAX_METADATA_BYTES", "MAX_NAME_CHARS", "MAX_SPEND_USD", "MAX_TIME_MS", "MAX_TOKENS_LIMIT"]
