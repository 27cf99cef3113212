"""Cross-format calls on the plain routes.

``/v1/messages`` naming an OpenAI model, or ``/v1/chat/completions`` naming an
Anthropic one: the request goes from the client's format to canonical to the
provider's (providers/formats.py), is capped and billed like any other call
(usage is read from the provider's own format), and the response, the error or
the stream comes back the same way, so the caller's SDK sees its own format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson

from tollway._core import SseDecoder, UpstreamStream
from tollway.config import ModelRoute
from tollway.http.core import JSON_HEADERS, SSE_HEADERS, AnyResponse, HTTPError, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.providers.formats import FORMATS, StreamTranslator
from tollway.proxy.headers import response_headers
from tollway.translate import TranslationError

if TYPE_CHECKING:
    from tollway.proxy.handler import Origin, Proxy

# Provider headers that describe the provider's body, not ours.
_DROP = {"content-type", "openai-processing-ms", "openai-version"}


def to_provider(shape: str, route: ModelRoute, payload: dict[str, Any]) -> dict[str, Any]:
    """The client's request (format ``shape``) in the route's provider format; 400 when it cannot be expressed."""
    try:
        request = FORMATS[shape].request_to_canonical(payload)
        return FORMATS[route.wire].request_from_canonical(request, route)
    except TranslationError as exc:
        raise HTTPError(400, exc.message, param=exc.param) from None


def response_to_client(shape: str, route: ModelRoute, body: bytes, model: str) -> bytes:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPError(
            502, "the upstream provider returned a body that is not JSON", code="upstream_bad_response"
        ) from None
    if not isinstance(message, dict):
        raise HTTPError(502, "the upstream provider returned an unexpected body", code="upstream_bad_response")
    try:
        response = FORMATS[route.wire].response_to_canonical(message)
    except TranslationError as exc:
        raise HTTPError(
            502, f"the upstream provider returned an unexpected body: {exc}", code="upstream_bad_response"
        ) from None
    return orjson.dumps(FORMATS[shape].response_from_canonical(response, model))


def error_to_client(shape: str, route: ModelRoute, status: int, body: bytes) -> bytes:
    return FORMATS[shape].error_body(status, FORMATS[route.wire].error_to_canonical(status, body))


def stream_translator(shape: str, route: ModelRoute, model: str, payload: dict[str, Any]) -> StreamTranslator:
    return StreamTranslator(FORMATS[route.wire].stream_decoder(), FORMATS[shape].stream_encoder(model, payload))


def client_headers(request: "Origin", route: ModelRoute) -> dict[str, str]:
    """The client's headers, less those of other formats' SDKs (anthropic-version to OpenAI...)."""
    foreign = FORMATS[route.wire].foreign_header_prefix
    return {n: v for n, v in request.headers.items() if not n.startswith(foreign)}


async def translate_stream(upstream: UpstreamStream, translator: StreamTranslator) -> AsyncIterator[bytes]:
    """The upstream's chunks, decoded into SSE events and re-encoded in the client's format."""
    decoder = SseDecoder()
    async for chunk in upstream:
        out = b"".join([translator.feed(event, data) for event, data in decoder.feed(chunk)])
        if out:
            yield out
    tail = b"".join([translator.feed(event, data) for event, data in decoder.finish()]) + translator.finish()
    if tail:
        yield tail


def _headers(upstream: list[tuple[str, str]], content: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in response_headers(upstream) if n not in _DROP] + content


async def handle(
    proxy: "Proxy",
    request: "Origin",
    shape: str,
    key: ApiKey,
    route: ModelRoute,
    payload: dict[str, Any],
    started: float,
) -> AnyResponse:
    model = payload["model"]
    provider_payload = to_provider(shape, route, payload)
    stream = provider_payload.get("stream") is True
    call = proxy.prepare(
        key, route, provider_payload, None, client_headers(request, route), request.request_id, stream, started
    )
    try:
        if stream:
            upstream = await proxy.open_stream(call)
            if not isinstance(upstream, UpstreamStream):
                body = error_to_client(shape, route, upstream.status, upstream.body)
                return Response(upstream.status, body, _headers(upstream.headers, JSON_HEADERS))
            headers = _headers(upstream.headers, SSE_HEADERS) + call.extra_headers
            translator = stream_translator(shape, route, model, payload)
            return StreamResponse(upstream.status, headers, translate_stream(upstream, translator), upstream.close)
        done = await proxy.complete(call)
        if not done.ok:
            return Response(
                done.status, error_to_client(shape, route, done.status, done.body), _headers(done.headers, JSON_HEADERS)
            )
        return Response(
            done.status, response_to_client(shape, route, done.body, model), _headers(done.headers, JSON_HEADERS)
        )
    except BaseException:
        call.release()
        raise
