"""Cross-shape calls on the plain routes.

``/v1/messages`` naming an OpenAI model, or ``/v1/chat/completions`` naming an
Anthropic one: the request is translated to the provider's shape, capped and
billed like any other call (usage is read from the provider's own format), and
the response, the error or the stream is translated back so the caller's SDK
sees its own format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Union

import orjson

from tollway._core import SseDecoder, UpstreamStream
from tollway.config import ModelRoute
from tollway.errors import foreign_error_body
from tollway.http.core import JSON_HEADERS, SSE_HEADERS, AnyResponse, HTTPError, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.proxy.headers import response_headers
from tollway.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

if TYPE_CHECKING:
    from tollway.proxy.handler import Origin, Proxy

# The other provider's request headers mean nothing upstream (anthropic-version to OpenAI...).
FOREIGN_PREFIX = {"openai": "anthropic-", "anthropic": "openai-"}
# Provider headers that describe the provider's body, not ours.
_DROP = {"content-type", "openai-processing-ms", "openai-version"}

Translator = Union[OpenAIToAnthropicStream, AnthropicToOpenAIStream]


def to_provider(shape: str, route: ModelRoute, payload: dict[str, Any]) -> dict[str, Any]:
    """The client's request (``shape``) in the route's provider shape; 400 when it cannot be expressed."""
    try:
        if shape == "anthropic":
            return anthropic_request_to_openai(payload, route.upstream_model)
        return openai_request_to_anthropic(payload, route.upstream_model, route.max_output_tokens)
    except TranslationError as exc:
        raise HTTPError(400, exc.message, param=exc.param) from None


def response_to_client(shape: str, body: bytes, model: str) -> bytes:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPError(502, "the upstream provider returned a body that is not JSON", code="upstream_bad_response") from None
    if not isinstance(message, dict):
        raise HTTPError(502, "the upstream provider returned an unexpected body", code="upstream_bad_response")
    if shape == "anthropic":
        return orjson.dumps(openai_response_to_anthropic(message, model))
    return orjson.dumps(anthropic_response_to_openai(message, model))


def stream_translator(shape: str, model: str, payload: dict[str, Any]) -> Translator:
    if shape == "anthropic":
        return OpenAIToAnthropicStream(model)
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return AnthropicToOpenAIStream(model, include_usage)


async def translate_stream(upstream: UpstreamStream, translator: Translator) -> AsyncIterator[bytes]:
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
    proxy: "Proxy", request: "Origin", shape: str, key: ApiKey, route: ModelRoute, payload: dict[str, Any], started: float
) -> AnyResponse:
    model = payload["model"]
    provider_payload = to_provider(shape, route, payload)
    stream = provider_payload.get("stream") is True
    foreign = FOREIGN_PREFIX[route.provider.kind]
    client_headers = {n: v for n, v in request.headers.items() if not n.startswith(foreign)}
    call = proxy.prepare(key, route, provider_payload, None, client_headers, request.request_id, stream, started)
    try:
        if stream:
            upstream = await proxy.open_stream(call)
            if not isinstance(upstream, UpstreamStream):
                return Response(upstream.status, foreign_error_body(shape, upstream.status, upstream.body), _headers(upstream.headers, JSON_HEADERS))
            headers = _headers(upstream.headers, SSE_HEADERS) + call.extra_headers
            translator = stream_translator(shape, model, payload)
            return StreamResponse(upstream.status, headers, translate_stream(upstream, translator), upstream.close)
        done = await proxy.complete(call)
        if not done.ok:
            return Response(done.status, foreign_error_body(shape, done.status, done.body), _headers(done.headers, JSON_HEADERS))
        return Response(done.status, response_to_client(shape, done.body, model), _headers(done.headers, JSON_HEADERS))
    except BaseException:
        call.release()
        raise

