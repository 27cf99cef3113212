"""Webhook signatures: how Tollway signs the tool calls it POSTs, and how a receiver checks them.

This module uses only the standard library, so a receiving app can import it (or copy
it) without the rest of Tollway.

Every webhook request carries::

    x-tollway-signature: t=1718000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
    x-tollway-delivery:  dlv_...   (one id per tool call, the same on its retries: dedupe on it)

``v1`` is the hex HMAC-SHA256, keyed with the tool's signing secret (the whole
``whsec_...`` string, UTF-8), of ``f"{t}.".encode() + raw_body``. Several ``v1=`` values
may be present (e.g. while a secret is being rotated); the request is authentic if any
one of them matches. ``t`` is the Unix time of signing, in seconds: a receiver rejects
requests older (or further in the future) than a tolerance, which bounds replays.

A receiver verifies the **raw body bytes**, exactly as received, before parsing them
(re-serialised JSON would not match)::

    from tollway.webhooks import WebhookVerificationError, construct_event

    SECRET = os.environ["TOLLWAY_WEBHOOK_SECRET"]      # the whsec_... shown when the tool was registered

    # Flask
    @app.post("/tools/lookup")
    def lookup():
        try:
            call = construct_event(SECRET, request.headers, request.get_data())
        except WebhookVerificationError:
            return {"error": "bad signature"}, 401
        result = do_lookup(**call["input"])
        return {"output": result}                      # or {"error": "message for the model"}

    # FastAPI / Starlette
    @app.post("/tools/lookup")
    async def lookup(request: Request):
        body = await request.body()
        if not verify(SECRET, request.headers, body):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        call = json.loads(body)
        ...

The body Tollway sends is a JSON object::

    {"tool_id": "tool_...", "tool_name": "lookup", "call_id": "call_...", "input": {...},
     "thread_id": "thread_..." (when the call belongs to a thread), "end_user_id": "..." (when known)}

and it expects a 2xx JSON object back: ``{"output": <any JSON>}`` on success, or
``{"error": "<message>"}`` to report a failure to the model. 5xx answers, timeouts and
connection failures are retried (3 attempts in all, same ``x-tollway-delivery``); other
answers are final.

**Standard Webhooks.** Every request (tool calls and account events alike) also carries the
`Standard Webhooks <https://www.standardwebhooks.com/>`_ headers::

    webhook-id:        msg_...  (tool calls: the x-tollway-delivery id; the same on every retry)
    webhook-timestamp: 1718000000
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>." + raw body>

keyed with the bytes the ``whsec_`` secret encodes (base64 after the prefix). During a
secret rotation ``webhook-signature`` holds two signatures, space-separated: one with the
new secret, one with the previous. Any Standard Webhooks library verifies them (e.g.
``standardwebhooks.Webhook(secret).verify(body, headers)``), and so does ``unwrap``::

    event = unwrap(SECRET, request.headers, request.get_data())   # raises WebhookVerificationError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Optional, Union

SIGNATURE_HEADER = "x-tollway-signature"
DELIVERY_HEADER = "x-tollway-delivery"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
# Standard Webhooks
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"

BodyLike = Union[bytes, bytearray, memoryview, str]

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookVerificationError",
    "ID_HEADER",
    "STANDARD_SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "construct_event",
    "secret_key",
    "sign",
    "standard_headers",
    "standard_signature",
    "unwrap",
    "verify",
]


class WebhookVerificationError(Exception):
    """The request is not an authentic, fresh Tollway webhook (or its body is not a JSON object)."""


def _body_bytes(body: BodyLike) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"body must be the raw request body (bytes), not {type(body).__name__}")


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: Optional[int] = None) -> str:
    """The ``x-tollway-signature`` header value for ``body``: ``t=<unix>,v1=<hex>``.

    ``timestamp`` defaults to now (Unix seconds)."""
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret must be a non-empty string")
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{SCHEME}={_digest(secret, t, _body_bytes(body))}"


def _header(headers: Any, name: str) -> Optional[str]:
    """``name`` from a case-insensitive mapping (Starlette, Werkzeug, httpx, http.server's
    Message), a plain dict with any capitalisation, or a list of (name, value) pairs."""
    if headers is None:
        return None
    value: Any = None
    items: Any = None
    if isinstance(headers, Mapping) or hasattr(headers, "get"):
        try:
            value = headers.get(name)
        except Exception:
            value = None
        if value is None:
            items = headers.items() if hasattr(headers, "items") else None
    elif isinstance(headers, (list, tuple)):
        items = headers
    if value is None and items is not None:
        for pair in items:
            try:
                key, candidate = pair
            except (TypeError, ValueError):
                continue
            if isinstance(key, (bytes, bytearray)):
                key = bytes(key).decode("latin-1")
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)):  # some frameworks give every value of a repeated header
        value = ",".join(str(v) for v in value)
    return value if isinstance(value, str) else None


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: Optional[int] = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookVerificationError("malformed signature header")
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                raise WebhookVerificationError("malformed timestamp in the signature header")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
        # other schemes (a future v2) are ignored
    if timestamp is None:
        raise WebhookVerificationError("no timestamp in the signature header")
    if not signatures:
        raise WebhookVerificationError(f"no {SCHEME} signature in the signature header")
    return timestamp, signatures


def _check(secret: str, headers: Any, body: BodyLike, tolerance_s: Optional[float], now: Optional[float]) -> None:
    if not isinstance(secret, str) or not secret:
        raise WebhookVerificationError("no signing secret configured")
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(header)
    if tolerance_s is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_s:
            raise WebhookVerificationError("timestamp outside the tolerance (a replay, or a skewed clock)")
    expected = _digest(secret, timestamp, _body_bytes(body)).encode("ascii")
    matched = False
    for candidate in signatures:
        # compare_digest on bytes: constant time whatever the input; non-ASCII never matches.
        if hmac.compare_digest(expected, candidate.encode("utf-8", "replace")):
            matched = True
    if not matched:
        raise WebhookVerificationError("signature mismatch")


def verify(
    secret: str,
    headers: Any,
    body: BodyLike,
    tolerance_s: Optional[float] = DEFAULT_TOLERANCE_S,
    now: Optional[float] = None,
) -> bool:
    """True iff ``headers`` carry a valid ``x-tollway-signature`` for ``body`` made with
    ``secret`` within ``tolerance_s`` seconds of ``now`` (default: the current Unix time;
    ``tolerance_s=None`` skips the age check).

    ``headers``: any mapping (case-insensitive ones like Starlette's/Werkzeug's/httpx's,
    or a plain dict in any capitalisation) or a list of (name, value) pairs. ``body``:
    the raw request body bytes. Never raises for a bad request: False on a missing or
    malformed header, a stale or future timestamp, or no matching signature."""
    try:
        _check(secret, headers, body, tolerance_s, now)
    except (WebhookVerificationError, TypeError, ValueError):
        return False
    return True


def construct_event(
    secret: str, headers: Any, body: BodyLike, tolerance_s: Optional[float] = DEFAULT_TOLERANCE_S
) -> dict[str, Any]:
    """Verify the request and return its parsed JSON body (the tool call).

    Raises ``WebhookVerificationError`` (with the reason) when the signature does not
    verify or the body is not a JSON object."""
    try:
        _check(secret, headers, body, tolerance_s, None)
    except (TypeError, ValueError) as exc:
        raise WebhookVerificationError(str(exc)) from None
    try:
        event = json.loads(_body_bytes(body))
    except ValueError:
        raise WebhookVerificationError("the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event


# ---------------------------------------------------------------- Standard Webhooks
def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for: the base64 after the prefix, decoded.

    Secrets made before Standard Webhooks signing (tool secrets of URL-safe base64) decode
    as URL-safe base64; a secret that is neither is used as its UTF-8 bytes."""
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret must be a non-empty string")
    text = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    padded = text + "=" * (-len(text) % 4)
    if padded.isascii():
        for alphabet in (b"+/", b"-_"):  # standard base64, then URL-safe
            try:
                key = base64.b64decode(padded.encode("ascii"), altchars=alphabet, validate=True)
            except (binascii.Error, ValueError):
                continue
            if key:
                return key
    return text.encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: BodyLike) -> str:
    """``v1,<base64 HMAC-SHA256 of "<msg_id>.<timestamp>." + body>`` keyed with ``secret``."""
    to_sign = f"{msg_id}.{int(timestamp)}.".encode() + _body_bytes(body)
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return f"{SCHEME},{base64.b64encode(digest).decode('ascii')}"


def standard_headers(secrets: Any, msg_id: str, body: BodyLike, timestamp: Optional[int] = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``: ``secrets`` is one secret or several
    (during a rotation: each signs, the signatures space-separated)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    if not keys:
        raise ValueError("at least one secret is needed")
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(t),
        STANDARD_SIGNATURE_HEADER: " ".join(standard_signature(k, msg_id, t, body) for k in keys),
    }


def unwrap(
    secret: str,
    headers: Any,
    body: BodyLike,
    tolerance_s: Optional[float] = DEFAULT_TOLERANCE_S,
    now: Optional[float] = None,
) -> dict[str, Any]:
    """Verify a Standard Webhooks request (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``) made with ``secret`` and return its JSON body: an account event
    (``{"type", "timestamp", "data"}``) or a tool call.

    Raises ``WebhookVerificationError`` on a missing header, a timestamp more than
    ``tolerance_s`` away from ``now`` (``None``: no age check), no matching ``v1``
    signature among the space-separated ones, or a body that is not a JSON object."""
    try:
        msg_id = _header(headers, ID_HEADER)
        stamp = _header(headers, TIMESTAMP_HEADER)
        signatures = _header(headers, STANDARD_SIGNATURE_HEADER)
        if not (msg_id and stamp and signatures):
            raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
        if not (stamp.isascii() and stamp.isdigit()):
            raise WebhookVerificationError("malformed webhook-timestamp")
        timestamp = int(stamp)
        if tolerance_s is not None:
            current = time.time() if now is None else now
            if abs(current - timestamp) > tolerance_s:
                raise WebhookVerificationError("timestamp outside the tolerance (a replay, or a skewed clock)")
        expected = standard_signature(secret, msg_id, timestamp, body).encode("ascii")
        matched = False
        for candidate in signatures.split(" "):
            if hmac.compare_digest(expected, candidate.encode("utf-8", "replace")):
                matched = True
        if not matched:
            raise WebhookVerificationError("signature mismatch")
        event = json.loads(_body_bytes(body))
    except (TypeError, ValueError) as exc:  # a body that is not bytes, a secret that is not a string, bad JSON
        raise WebhookVerificationError(str(exc) or "the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
