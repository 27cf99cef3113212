"""The OpenAPI 3.1 description of every route, served at ``GET /openapi.json`` (no key needed).

One entry per (method, path) the gateway registers; tests/test_openapi.py fails
when a route has no entry here (or an entry has no route), and schemathesis runs
the gateway against this document (tests/test_schemathesis.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

from tollway import __version__
from tollway.capabilities import Capability, Routes
from tollway.http.core import Request, Response
from tollway.http.limits import MAX_TIME_MS
from tollway.http.openapi_schemas import SCHEMAS, Schema, ref

OPENAPI_PATH = "/openapi.json"
_NO_NUL = "^[^\\x00]*$"

# The error statuses a route of each kind can answer itself.
_AUTH = (401, 403)  # a missing / revoked key; a disabled one (PATCH /v1/keys/{id} {"disabled": true})
_ADMIN = (401, 403)
_BODY = (400, 413)
_POLICY = (402, 403, 429)  # spend limits, a model the key may not use (or a disabled key), rate limits


@dataclass(frozen=True)
class Op:
    summary: str
    ok: dict[int, str]  # status -> response schema name ("sse:NAME": JSON or an SSE stream; "csv:NAME": text/csv)
    errors: tuple[int, ...] = ()
    body: Optional[str] = None  # request schema name
    body_required: bool = True
    query: dict[str, Schema] = field(default_factory=dict)
    required_query: tuple[str, ...] = ()
    tag: str = "management"
    shape: str = "openai"  # error body: "openai" or "anthropic"
    provider: bool = False  # the provider's own status and error pass through (4XX/5XX)
    public: bool = False  # no key needed


def _limit(default: int, maximum: int) -> Schema:
    return {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}


_CURSOR: Schema = {"type": "string", "pattern": _NO_NUL, "description": "an id from the previous page"}
_TIME: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS, "description": "Unix time in milliseconds"}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", OPENAPI_PATH): Op("This OpenAPI 3.1 description", {200: "ProviderResponse"}, public=True, tag="meta"),
    # ---- model calls
    ("POST", "/v1/chat/completions"): Op(
        "OpenAI Chat Completions, capped and metered (any configured model; tool_ids runs registered tools)",
        {200: "sse:ProviderResponse"}, (*_AUTH, *_BODY, *_POLICY, 404), "ChatCompletionRequest",
        tag="models", provider=True,
    ),
    ("POST", "/v1/messages"): Op(
        "Anthropic Messages, capped and metered (any configured model; tool_ids runs registered tools)",
        {200: "sse:ProviderResponse"}, (*_AUTH, *_BODY, *_POLICY, 404), "MessagesRequest",
        tag="models", shape="anthropic", provider=True,
    ),
    ("GET", "/v1/models"): Op("The routable models", {200: "ModelList"}, _AUTH, tag="models"),
    ("GET", "/v1/models/{model_id}"): Op(
        "A routable model (its name may contain '/', sent percent-encoded or not)", {200: "Model"}, (*_AUTH, 404), tag="models"
    ),
    ("POST", "/v1/messages/count_tokens"): Op(
        "Count a Messages request's input tokens: the provider's count (Anthropic), else our estimate; not metered",
        {200: "InputTokens"}, (*_AUTH, *_BODY, 403, 404), "CountTokensRequest", tag="models", shape="anthropic", provider=True,
    ),
    ("POST", "/v1/embeddings"): Op(
        "OpenAI embeddings, capped and metered (a model of mode \"embedding\" on an OpenAI-kind provider)",
        {200: "EmbeddingList"}, (*_AUTH, *_BODY, *_POLICY, 404), "EmbeddingsRequest", tag="models", provider=True,
    ),
    ("POST", "/v1/responses"): Op(
        "OpenAI Responses on any configured model, capped and metered; stored unless store is false",
        {200: "sse:ResponseObject"}, (*_AUTH, *_BODY, *_POLICY, 404), "ResponsesRequest", tag="responses", provider=True,
    ),
    ("GET", "/v1/responses/{response_id}"): Op("Read a stored response", {200: "ResponseObject"}, (*_AUTH, 404), tag="responses"),
    ("DELETE", "/v1/responses/{response_id}"): Op(
        "Erase a stored response and its conversation", {200: "ResponseDeleted"}, (*_AUTH, 404), tag="responses"
    ),
    ("GET", "/v1/responses/{response_id}/input_items"): Op(
        "A page of a stored response's input items", {200: "ResponseItemList"}, (*_AUTH, 400, 404), tag="responses",
        query={"order": {"enum": ["asc", "desc"], "default": "desc"}, "limit": _limit(20, 100), "after": _CURSOR},
    ),
    # ---- keys
    ("POST", "/v1/keys"): Op("Mint a key (the secret is in this response only)", {201: "ApiKeyCreated"}, (*_ADMIN, *_BODY), "KeyCreate"),
    ("GET", "/v1/keys"): Op(
        "List the account's keys", {200: "ApiKeyList"}, (*_ADMIN, 400), query={"limit": _limit(50, 500), "after": _CURSOR}
    ),
    ("GET", "/v1/keys/{key_id}"): Op("Read a key", {200: "ApiKey"}, (*_ADMIN, 404)),
    ("PATCH", "/v1/keys/{key_id}"): Op("Change a key's name, limits, policy or metadata", {200: "ApiKey"}, (*_ADMIN, *_BODY, 404), "KeyUpdate"),
    ("DELETE", "/v1/keys/{key_id}"): Op("Revoke a key", {200: "ApiKeyRevoked"}, (*_ADMIN, 404)),
    ("GET", "/v1/keys/{key_id}/usage"): Op(
        "A key's spend and its last 100 usage events (a standard key: its own only)", {200: "KeyUsage"}, (*_ADMIN, 404)
    ),
    ("GET", "/v1/usage"): Op(
        "Spend by key and model, from_ms <= time < to_ms (default: this calendar month, UTC); group_by adds groups",
        {200: "Usage"}, (*_ADMIN, 400), query={
            "from_ms": _TIME, "to_ms": _TIME,
            "group_by": {"type": "string", "pattern": "^(key|end_user|model|tag|day)(,(key|end_user|model|tag|day))*$",
                         "description": "comma-separated, each once: key, end_user, model, tag, day"},
        },
    ),
    ("GET", "/v1/usage.csv"): Op(
        "The usage groups as CSV, streamed: a header row, then one row per group (group_by, default key,model): "
        "the group's columns, request_count, input_tokens, output_tokens, cost_micros, cost_usd (6 decimals)",
        {200: "csv:UsageCsv"}, (*_ADMIN, 400), query={
            "from_ms": _TIME, "to_ms": _TIME,
            "group_by": {"type": "string", "pattern": "^(key|end_user|model|tag|day)(,(key|end_user|model|tag|day))*$",
                         "description": "comma-separated, each once: key, end_user, model, tag, day"},
        },
    ),
    ("POST", "/v1/keys/{key_id}/rotate"): Op(
        "A new secret for the key (shown once); the old one works for grace_seconds more",
        {200: "ApiKeyCreated"}, (*_ADMIN, *_BODY, 404, 409), "KeyRotate", body_required=False,
    ),
    ("POST", "/v1/keys/{key_id}/credit"): Op(
        "Raise the key's total limit (or its current window's) by an amount; Idempotency-Key honoured",
        {201: "KeyCredit", 200: "KeyCredit"}, (*_ADMIN, *_BODY, 404, 409), "KeyCreditRequest",
    ),
    ("GET", "/v1/keys/{key_id}/credits"): Op("The credit granted to a key, newest first", {200: "KeyCreditList"}, (*_ADMIN, 404)),
    ("GET", "/v1/key"): Op(
        "The calling key's own limits, spend and resets per window, rate-limit state and allowed models",
        {200: "KeyQuota"}, _AUTH,
    ),
    ("GET", "/v1/account"): Op("The caller's account (its time zone)", {200: "Account"}, _ADMIN),
    ("PATCH", "/v1/account"): Op(
        "Set the account's name or time zone (the day / week / month windows follow it)",
        {200: "Account"}, (*_ADMIN, *_BODY), "AccountUpdate",
    ),
    # ---- threads
    ("POST", "/v1/threads"): Op(
        "Create a thread (a standard key minted for an end user stamps its end_user_id)",
        {201: "Thread"}, (*_ADMIN, *_BODY), "ThreadCreate", body_required=False, tag="threads",
    ),
    ("GET", "/v1/threads"): Op(
        "List the threads the key may see, newest first", {200: "ThreadList"}, (*_AUTH, 400), tag="threads",
        query={"limit": _limit(20, 100), "after": _CURSOR, "end_user_id": {"type": "string", "pattern": _NO_NUL, "description": "admin keys only"}},
    ),
    ("GET", "/v1/threads/{thread_id}"): Op("Read a thread", {200: "Thread"}, (*_AUTH, 404), tag="threads"),
    ("PATCH", "/v1/threads/{thread_id}"): Op(
        "Replace a thread's metadata and/or system prompt", {200: "Thread"}, (*_AUTH, *_BODY, 404), "ThreadUpdate", tag="threads"
    ),
    ("DELETE", "/v1/threads/{thread_id}"): Op("Erase a thread and its messages", {200: "ThreadDeleted"}, (*_AUTH, 404), tag="threads"),
    ("POST", "/v1/threads/{thread_id}/messages"): Op(
        "Send a user turn; the reply (JSON, or Anthropic SSE events with stream) is stored in the thread",
        {200: "sse:ThreadReply"}, (*_AUTH, *_BODY, *_POLICY, 404, 409), "ThreadTurn", tag="threads", provider=True,
    ),
    ("GET", "/v1/threads/{thread_id}/messages"): Op(
        "A page of a thread's messages", {200: "ThreadMessageList"}, (*_AUTH, 400, 404), tag="threads",
        query={"order": {"enum": ["asc", "desc"], "default": "asc"}, "limit": _limit(30, 100), "before": _CURSOR, "after": _CURSOR},
    ),
    # ---- search
    ("GET", "/v1/search"): Op(
        "Search the stored messages the key may see (hybrid: vectors and words), best first",
        {200: "SearchResults"}, (*_AUTH, 400, 502), tag="search",
        query={
            "q": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": _NO_NUL},
            "end_user_id": {"type": "string", "maxLength": 200, "pattern": _NO_NUL, "description": "admin keys only"},
            "thread_id": {"type": "string", "maxLength": 40, "pattern": _NO_NUL},
            "role": {"enum": ["user", "assistant", "tool"]},
            "model": {"type": "string", "maxLength": 200, "pattern": _NO_NUL},
            "from_ms": _TIME, "to_ms": _TIME, "limit": _limit(10, 100),
            "after": {"type": "string", "pattern": _NO_NUL, "description": "the 'next' of the previous page"},
        },
        required_query=("q",),
    ),
    ("GET", "/v1/search/status"): Op(
        "The search index: backlog, what is indexed, the embedder and index in use, a rebuild's progress",
        {200: "SearchStatus"}, _ADMIN, tag="search",
    ),
    # ---- jobs (tollway.jobs)
    ("POST", "/v1/jobs"): Op(
        "Queue a model call or thread turn to run in the background; its worst case is held now (402 if unaffordable); "
        "Idempotency-Key honoured",
        {202: "JobCreated"}, (*_AUTH, *_BODY, 402, 403, 404), "JobCreate", tag="jobs",
    ),
    ("GET", "/v1/jobs"): Op(
        "The key's jobs (an admin key: the account's), newest first, in cursor pages",
        {200: "JobList"}, (*_AUTH, 400), tag="jobs",
        query={"status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled", "expired"]},
               "limit": _limit(20, 100), "after": _CURSOR},
    ),
    ("GET", "/v1/jobs/{job_id}"): Op(
        "A job: its status, and its result or error once it ended", {200: "Job"}, (*_AUTH, 404), tag="jobs"
    ),
    ("POST", "/v1/jobs/{job_id}/cancel"): Op(
        "Cancel a queued or running job (its hold released); an ended job is answered as it is",
        {200: "Job"}, (*_AUTH, 404), tag="jobs",
    ),
    # ---- wallet (off unless [wallet] enabled = true: then 400 wallet_disabled)
    ("GET", "/v1/wallet"): Op(
        "The account's prepaid wallet: balance, held by requests in flight, auto-recharge, last top-ups",
        {200: "Wallet"}, (*_ADMIN, 400), tag="wallet",
    ),
    ("GET", "/v1/wallet/ledger"): Op(
        "The wallet's entries (top-ups, debits, refunds, adjustments), oldest first, in cursor pages",
        {200: "WalletLedger"}, (*_ADMIN, 400), tag="wallet",
        query={"from_ms": _TIME, "to_ms": _TIME, "kind": {"type": "string", "pattern": _NO_NUL},
               "limit": _limit(100, 1000), "after": _CURSOR},
    ),
    ("POST", "/v1/wallet/adjustments"): Op(
        "An admin's correction or grant to the wallet (negative to take money out); Idempotency-Key honoured",
        {201: "WalletEntry", 200: "WalletEntry"}, (*_ADMIN, *_BODY, 409), "WalletAdjustment", tag="wallet",
    ),
    ("POST", "/v1/wallet/topups"): Op(
        "A Stripe Checkout Session to top the wallet up by an amount (the webhook credits it once paid)",
        {201: "WalletTopup"}, (*_ADMIN, *_BODY, 502), "WalletTopupRequest", tag="wallet",
    ),
    ("PUT", "/v1/wallet/auto_recharge"): Op(
        "Auto-recharge on: below the threshold, charge the saved card up to recharge_to (at most monthly_max a month)",
        {200: "AutoRecharge"}, (*_ADMIN, *_BODY), "AutoRechargeRequest", tag="wallet",
    ),
    ("DELETE", "/v1/wallet/auto_recharge"): Op("Auto-recharge off", {200: "AutoRecharge"}, (*_ADMIN, 400), tag="wallet"),
    ("POST", "/v1/stripe/webhook"): Op(
        "Stripe's webhook (signed: Stripe-Signature): top-ups, payments and refunds into the wallet",
        {200: "StripeWebhookResult"}, (400, 413), "StripeEvent", public=True, tag="wallet",
    ),
    ("POST", "/v1/billing/invoice-items"): Op(
        "One Stripe InvoiceItem per key with metadata.stripe_customer_id and spend in the period; idempotent",
        {200: "InvoiceItemList"}, (*_ADMIN, *_BODY, 502), "InvoiceItemsRequest", tag="billing",
    ),
    ("POST", "/v1/billing/meter-events"): Op(
        "Send the usage events not sent yet to Stripe as meter events (identifier = usage event id)",
        {200: "MeterExport"}, (*_ADMIN, 400, 502), tag="billing",
    ),
    ("GET", "/v1/threads/{thread_id}/export"): Op("A thread and all its messages", {200: "ThreadExport"}, (*_AUTH, 404), tag="threads"),
    # ---- tools
    ("POST", "/v1/tools"): Op(
        "Register a webhook tool (the signing secret is in this response only)",
        {201: "ToolWithSecret"}, (*_ADMIN, *_BODY, 409), "ToolCreate", tag="tools",
    ),
    ("GET", "/v1/tools"): Op(
        "List the account's tools, oldest first", {200: "ToolList"}, (*_AUTH, 400), tag="tools",
        query={"limit": _limit(20, 100), "after": _CURSOR},
    ),
    ("GET", "/v1/tools/{tool_id}"): Op("Read a tool", {200: "Tool"}, (*_AUTH, 404), tag="tools"),
    ("PATCH", "/v1/tools/{tool_id}"): Op(
        "Change a tool (rotate_secret: a new signing secret, in this response only)",
        {200: "ToolUpdated"}, (*_ADMIN, *_BODY, 404, 409), "ToolUpdate", tag="tools",
    ),
    ("DELETE", "/v1/tools/{tool_id}"): Op("Delete a tool", {200: "ToolDeleted"}, (*_ADMIN, 404), tag="tools"),
}  # fmt: skip


def _event_operations() -> dict[tuple[str, str], Op]:
    from tollway.events.openapi import operations  # (it uses openapi_schemas, loaded above)

    return operations(Op, _ADMIN, _BODY, {"limit": _limit(20, 100), "after": _CURSOR})


OPERATIONS.update(_event_operations())


def _capability_operations() -> dict[tuple[str, str], Op]:
    from tollway.batches.openapi import batch_operations

    return batch_operations(Op, _AUTH, _BODY, _limit, _CURSOR)


OPERATIONS.update(_capability_operations())

_REASONS = {
    400: "Bad request: the body or a parameter is invalid (param names it), a NUL in the URL, or malformed HTTP framing",
    401: "Missing, invalid or revoked key",
    402: "The key's spending cap or one of its spend windows is reached (the message names it and when it resets)",
    403: "The key may not do this (admin key required, another end user's, a model outside allowed_models, disabled)",
    404: "No such resource (or one the key may not see)",
    408: "The request body stalled longer than TOLLWAY_BODY_TIMEOUT",
    409: "Conflict (a tool name taken; another turn of the thread in progress; an Idempotency-Key reused; a disabled webhook endpoint)",
    413: "The body is larger than the configured limit",
    429: "A rate limit of the key is reached: retry-after (and the SDKs' rate-limit headers) say when to retry",
    502: "A service the gateway depends on failed (the search embedder's provider)",
    "4XX": "The provider's own client error, passed through",
    "5XX": "The provider's own error (passed through), or 502/504: the provider unreachable or timed out",
}
_SSE_EVENT = {
    "type": "object",
    "description": "one server-sent event (the provider's, or Anthropic's events on thread turns)",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
    "additionalProperties": True,
}
_REQUEST_ID = {"x-request-id": {"required": True, "schema": {"type": "string"}, "description": "this request's id"}}


def _error_response(status: Any, shape: str) -> dict[str, Any]:
    name = "AnthropicError" if shape == "anthropic" else "OpenAIError"
    return {
        "description": _REASONS[status],
        "headers": _REQUEST_ID,
        "content": {"application/json": {"schema": ref(name)}},
    }


def _ok_response(status: int, name: str) -> dict[str, Any]:
    if name.startswith("csv:"):
        schema = {"type": "string", "description": "text/csv (RFC 4180, CRLF line ends), UTF-8"}
        return {"description": "OK", "headers": _REQUEST_ID, "content": {"text/csv": {"schema": schema}}}
    if name.startswith("jsonl:"):
        schema = {"type": "string", "description": "JSON Lines: one JSON object per line"}
        return {"description": "OK", "headers": _REQUEST_ID, "content": {"application/jsonl": {"schema": schema}}}
    stream = name.startswith("sse:")
    name = name.removeprefix("sse:")
    content: dict[str, Any] = {"application/json": {"schema": ref(name)}}
    if stream:
        content["text/event-stream"] = {"schema": _SSE_EVENT}
    return {
        "description": {201: "Created", 202: "Accepted"}.get(status, "OK"),
        "headers": _REQUEST_ID,
        "content": content,
    }


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace('.', '_')}",
        "summary": op.summary,
        "tags": [op.tag],
    }
    params = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\x00]+$" if name in _SLASHED else "^[^\\x00/]+$"}}
        for name in _path_params(path)
    ]  # fmt: skip
    params += [
        {"name": name, "in": "query", "required": name in op.required_query, "schema": schema}
        for name, schema in op.query.items()
    ]
    if params:
        out["parameters"] = params
    if op.body is not None:
        media, name = (
            ("multipart/form-data", op.body[10:]) if op.body.startswith("multipart:") else ("application/json", op.body)
        )
        out["requestBody"] = {"required": op.body_required, "content": {media: {"schema": ref(name)}}}
    responses: dict[str, Any] = {str(s): _ok_response(s, name) for s, name in op.ok.items()}
    # Any request may get a 400 (a NUL in its URL, malformed HTTP framing); one with a body a 408 (it stalled).
    always = {400, 408} if op.body is not None else {400}
    for status in sorted(set(op.errors) | always):
        responses[str(status)] = _error_response(status, op.shape)
    if op.provider:
        responses["4XX"] = _error_response("4XX", op.shape)
        responses["5XX"] = _error_response("5XX", op.shape)
    out["responses"] = responses
    out["security"] = [] if op.public else [{"bearer": []}, {"apiKey": []}]
    return out


_SLASHED = {"model_id"}  # path parameters that may contain "/" (the router's {name:path})


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in OPERATIONS."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tollway",
            "version": __version__,
            "description": (
                "Self-hosted gateway for LLM APIs: per-user keys with spend caps enforced before the upstream call, "
                "metering, threads and webhook tools. Errors are OpenAI error objects, except on /v1/messages and "
                "/v1/messages/count_tokens (Anthropic's); the /v1/models routes answer a request with an "
                "anthropic-version header in Anthropic's shape. Bad input is always a 4xx."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def capability() -> Capability:
    """Serve the document at GET /openapi.json (built once; no key needed)."""
    routes = Routes()
    body = orjson.dumps(document())

    @routes.route("GET", OPENAPI_PATH)
    async def openapi(request: Request) -> Response:
        return Response(200, body)

    return Capability(routes)
