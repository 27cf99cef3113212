"""GET /v1/models/{id}, POST /v1/messages/count_tokens and POST /v1/embeddings.

- A model is described in the caller SDK's shape (Anthropic's when it sends
  anthropic-version), as GET /v1/models does; so are its errors.
- count_tokens goes to the provider's own counting route when it has one (not
  metered: Anthropic does not charge for it), else it is our estimate, marked
  with ``x-tollway-estimated: true``.
- embeddings are held, capped and metered like a model call, on a model whose
  mode is "embedding", forwarded to its provider's embeddings route.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Optional

import orjson

from tollway.capabilities import Capability, Routes
from tollway.config import ModelRoute, Settings
from tollway.http.core import (
    AnyResponse,
    HTTPError,
    Request,
    Response,
    error_response,
    json_response,
    unrouted_shape,
)
from tollway.http.limits import MAX_TOKENS_LIMIT
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.policy.service import model_allowed
from tollway.providers import ADAPTERS
from tollway.providers.base import count_message_tokens, estimate_embedding_tokens
from tollway.proxy.checks import check_model_request
from tollway.proxy.handler import Call, Completed, Proxy
from tollway.proxy.headers import response_headers

ESTIMATED_HEADER = "x-tollway-estimated"
MAX_EMBEDDING_INPUTS = 2048  # items of one request's `input` (the OpenAI API's limit)
ENCODING_FORMATS = ("float", "base64")


def in_client_shape(handler: Callable[..., Awaitable[AnyResponse]]) -> Callable[..., Awaitable[AnyResponse]]:
    """Answer the handler's errors in the caller SDK's shape (Anthropic's when it sent anthropic-version)."""

    async def shaped(request: Request, **params: str) -> AnyResponse:
        try:
            return await handler(request, **params)
        except HTTPError as exc:
            return error_response(unrouted_shape(request.path, request.headers), exc)

    return shaped


def model_listing(
    settings: Settings,
    is_routable: Callable[[ModelRoute], bool],
    started_at: int,
    request: Request,
    key: ApiKey,
) -> Response:
    """Every routable model ``key`` may call, in the caller's shape."""
    adapter = ADAPTERS[unrouted_shape(request.path, request.headers)]
    created = started_at // 1000
    models = [settings.models[name] for name in settings.model_names]
    objects = [
        adapter.model_object(r.name, r, created) for r in models if is_routable(r) and model_allowed(key, r.name)
    ]
    return json_response(200, adapter.model_list(objects))


def capability(
    *, proxy: Proxy, auth: Authenticator, settings: Settings, is_routable: Callable[[ModelRoute], bool], started_at: int
) -> Capability:
    """GET /v1/models/{id}, POST /v1/messages/count_tokens, POST /v1/embeddings."""
    routes = Routes()

    @routes.route("GET", "/v1/models/{model_id:path}")
    @in_client_shape
    async def retrieve_model(request: Request, model_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        route = settings.models.get(model_id)
        if route is None or not is_routable(route) or not model_allowed(key, model_id):
            raise HTTPError(
                404,
                f"the model {model_id!r} does not exist or is not routable here",
                code="model_not_found",
                param="model",
            )
        adapter = ADAPTERS[unrouted_shape(request.path, request.headers)]
        return json_response(200, adapter.model_object(model_id, route, started_at // 1000))

    @routes.route("POST", "/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        payload = request.json(allow_nul=True)  # forwarded or counted, never stored
        _check_count_request(payload)
        route = proxy.route(payload["model"], key, priced=False)  # counting spends nothing
        adapter = ADAPTERS[route.provider.kind]
        url = adapter.count_tokens_url(route.provider)
        if url is None:
            return json_response(200, {"input_tokens": count_message_tokens(payload)}, [(ESTIMATED_HEADER, "true")])
        body = request.body
        if payload["model"] != route.upstream_model:
            body = orjson.dumps({**payload, "model": route.upstream_model})
        headers = adapter.headers(route.provider, request.headers)
        upstream = await proxy._send_with_retries(route, lambda: proxy.gw.client.send("POST", url, headers, body))
        return Response(upstream.status, upstream.body, response_headers(upstream.headers))

    @routes.route("POST", "/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        key = await auth.authenticate(request.headers)
        payload = request.json(allow_nul=True)  # forwarded, never stored
        done = await create_embeddings(proxy, key, payload, request.body, request.headers, request.request_id, started)
        return Response(done.status, done.body, done.headers)

    return Capability(routes)


async def create_embeddings(
    proxy: Proxy,
    key: ApiKey,
    payload: Any,
    raw: Optional[bytes],
    client_headers: dict[str, str],
    request_id: str,
    started: float,
) -> Completed:
    """One embeddings call for ``key``: checked (400/404), held (402), forwarded, settled and
    recorded. ``raw`` is the client's body when ``payload`` is exactly what it sent."""
    gw = proxy.gw
    inputs = _check_embeddings_request(payload)
    route = proxy.route(payload["model"], key, mode="embedding")
    adapter = ADAPTERS[route.provider.kind]
    url = adapter.embeddings_url(route.provider)
    if url is None:
        raise HTTPError(
            400,
            f"the model {route.name!r} is served by {route.provider.name!r}, which has no embeddings API",
            param="model",
        )
    body = (
        raw
        if raw is not None and payload["model"] == route.upstream_model
        else orjson.dumps({**payload, "model": route.upstream_model})
    )
    estimate = estimate_embedding_tokens(inputs)
    decision = gw.policy.admit(key, route, estimate, 0)  # no output tokens
    base = proxy.usage_base(key, route, request_id, decision.started_at)
    gw.journal.hold(base["event_id"], decision.hold, base, False, estimate)
    call = Call(
        route, adapter.kind, url, adapter.headers(route.provider, client_headers), body, False, decision.hold, None,
        estimate, base, started, gw.journal, decision.permit,
    )  # fmt: skip
    try:
        return await proxy.complete(call)
    except BaseException:
        call.release()  # a no-op once settled
        raise


def _check_count_request(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    check_model_request(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise HTTPError(400, "'messages' must be a non-empty list of message objects", param="messages")
    system = payload.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise HTTPError(400, "'system' must be a string or a list of content blocks", param="system")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise HTTPError(400, "'model' is required", param="model")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS_LIMIT


def _check_embeddings_request(payload: Any) -> list[Any]:
    """The request's inputs as a list (each a string or a list of token ids), once valid."""
    if not isinstance(payload, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise HTTPError(400, "'model' is required", param="model")
    raw = payload.get("input")
    if isinstance(raw, str):
        inputs: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(_is_token(t) for t in raw):
        inputs = [raw]
    elif (
        isinstance(raw, list)
        and raw
        and (
            all(isinstance(s, str) for s in raw)
            or all(isinstance(t, list) and t and all(_is_token(i) for i in t) for t in raw)
        )
    ):
        inputs = raw
    else:
        raise HTTPError(
            400,
            "'input' must be a string, a list of strings, a list of token ids or a list of lists of token ids (none empty)",
            param="input",
        )
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise HTTPError(400, f"'input' may hold at most {MAX_EMBEDDING_INPUTS} items", param="input")
    if any(item == "" for item in inputs):
        raise HTTPError(400, "'input' cannot contain an empty string", param="input")
    encoding = payload.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise HTTPError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and not (_is_token(dimensions) and dimensions >= 1):
        raise HTTPError(400, f"'dimensions' must be an integer from 1 to {MAX_TOKENS_LIMIT}", param="dimensions")
    return inputs
