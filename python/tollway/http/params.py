"""Checks shared by the management routes (/v1/keys, /v1/threads, /v1/tools): bodies and list pages."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import orjson

from tollway.http.core import HTTPError, Request
from tollway.http.limits import MAX_METADATA_BYTES, MAX_TIME_MS


def json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


def check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HTTPError(
            400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}", param=unknown[0]
        )


def idempotency_key(request: Request, max_length: int = 255) -> Optional[str]:
    """The request's ``Idempotency-Key`` header (None without one): 1 to ``max_length``
    characters, no NUL, else a 400."""
    idem = request.headers.get("idempotency-key")
    if idem is not None and (not idem.strip() or len(idem) > max_length or "\x00" in idem):
        raise HTTPError(400, f"the Idempotency-Key header must be 1 to {max_length} characters")
    return idem


def metadata_object(body: dict[str, Any]) -> dict[str, Any]:
    """The body's ``metadata`` object ({} when absent or null)."""
    value = body.get("metadata", {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPError(400, "'metadata' must be a JSON object", param="metadata")
    size = len(orjson.dumps(value))
    if size > MAX_METADATA_BYTES:
        raise HTTPError(
            400, f"'metadata' is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are accepted", param="metadata"
        )
    return value


def page_limit(query: dict[str, str], default: int, maximum: int = 100) -> int:
    message = f"'limit' must be an integer from 1 to {maximum}"
    try:
        limit = int(query.get("limit", default))
    except ValueError:
        raise HTTPError(400, message, param="limit") from None
    if not 1 <= limit <= maximum:
        raise HTTPError(400, message, param="limit")
    return limit


def page(items: Iterable[Any], has_more: bool) -> dict[str, Any]:
    """One page of a list: ``data`` (each item's ``public()``), ``has_more`` and the edge ids for cursors."""
    data = [item.public() for item in items]
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def time_ms(value: str, name: str) -> int:
    """A query parameter holding a Unix time in milliseconds, 0 to MAX_TIME_MS (else a 400 naming it)."""
    message = f"'{name}' must be a Unix time in milliseconds, from 0 to {MAX_TIME_MS}"
    try:
        ms = int(value)
    except ValueError:
        raise HTTPError(400, message, param=name) from None
    if not 0 <= ms <= MAX_TIME_MS:
        raise HTTPError(400, message, param=name)
    return ms
