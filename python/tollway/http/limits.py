"""Every size, depth and range the gateway accepts at its edge, in one place.

The handlers check against these, the OpenAPI document publishes them, and the
README's "Limits and timeouts" table lists them.
"""

# Any JSON request body: deeper nesting is refused (400) before it is parsed. orjson
# serialises at most 255 levels, and whatever is stored is read back inside a few
# more levels (a list page, an export), so 64 leaves a wide margin on both sides.
MAX_JSON_DEPTH = 64
# A `metadata` object (keys, threads, thread messages), serialised.
MAX_METADATA_BYTES = 16 * 1024
# Names, end-user ids and other short strings that are stored.
MAX_NAME_CHARS = 200
# `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
MAX_TOKENS_LIMIT = 2**31 - 1
# `max_spend_usd`.
MAX_SPEND_USD = 10**9
# Unix milliseconds in queries (`from_ms`, `to_ms`): JavaScript's safe integers.
MAX_TIME_MS = 2**53
# Path parameters (ids) longer than this cannot name anything.
MAX_ID_CHARS = 200
