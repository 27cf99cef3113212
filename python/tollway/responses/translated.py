"""A Responses call to a model whose provider does not speak Responses.

Responses -> canonical -> the provider's format (providers/formats.py), sent
through the Proxy (capped, held, billed like any call); the response, the error
or the stream comes back through canonical to the Responses format. ``on_done``
gets the finished response object (for a stream: once the stream completed).
With ``tool_ids`` the tool loop (tools/loop.py) runs the registered tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, Union

import orjson

from tollway._core import SseDecoder, UpstreamStream
from tollway.config import ModelRoute
from tollway.http.core import JSON_HEADERS, SSE_HEADERS, AnyResponse, HTTPError, Request, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.providers import canonical
from tollway.providers.formats import FORMATS, Format, StreamDecoder, openai_error_body
from tollway.providers.openai_responses.convert import response_from_canonical
from tollway.providers.openai_responses.stream import StreamEncoder
from tollway.proxy.headers import response_headers
from tollway.proxy.translated import client_headers, stream_translator
from tollway.tools.loop import ToolLoop
from tollway.tools.store import Tool
from tollway.translate.errors import TranslationError

if TYPE_CHECKING:
    from tollway.proxy.handler import Completed, Proxy

OnDone = Callable[[dict[str, Any]], Awaitable[None]]
# The format a streamed tool loop's merged turns come in (canonical blocks have its shapes).
LOOP_FORMAT = "anthropic"
# Provider headers that describe the provider's body, not ours.
_DROP = {"content-type", "openai-processing-ms", "openai-version"}


def _headers(upstream: list[tuple[str, str]], content: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in response_headers(upstream) if n not in _DROP] + content


def _error(fmt: Format, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    return Response(
        status, openai_error_body(status, fmt.error_to_canonical(status, body)), _headers(headers, JSON_HEADERS)
    )


async def _relay(
    chunks: AsyncIterator[bytes], events: StreamDecoder, encoder: StreamEncoder, on_done: OnDone
) -> AsyncIterator[bytes]:
    """SSE bytes of one format in, Responses SSE bytes out; the finished response to ``on_done``."""
    decoder = SseDecoder()
    async for chunk in chunks:
        out = b"".join(encoder.encode(e) for event, data in decoder.feed(chunk) for e in events.feed(event, data))
        if out:
            yield out
    tail = [e for event, data in decoder.finish() for e in events.feed(event, data)] + events.finish()
    out = b"".join(encoder.encode(e) for e in tail)
    if out:
        yield out
    if encoder.final is not None:
        await on_done(encoder.final)


async def _loop(
    proxy: "Proxy",
    request: Request,
    key: ApiKey,
    route: ModelRoute,
    body: dict[str, Any],
    headers: dict[str, str],
    started: float,
    loop_tools: tuple[list[Tool], int],
    stream: bool,
) -> Union[tuple["Completed", Optional[dict[str, Any]]], StreamResponse, "Completed"]:
    loop = ToolLoop(proxy, key, route, body, loop_tools[0], request.request_id, headers, started, loop_tools[1])
    if not stream:
        return await loop.complete()
    # The loop merges its model turns into one stream of LOOP_FORMAT's events.
    factory = None
    if route.wire != LOOP_FORMAT:
        factory = lambda: stream_translator(LOOP_FORMAT, route, route.name, {})  # noqa: E731
    return await loop.open(LOOP_FORMAT, route.name, {}, factory)


async def handle(
    proxy: "Proxy",
    request: Request,
    key: ApiKey,
    route: ModelRoute,
    payload: dict[str, Any],
    call_request: canonical.Request,
    response_id: str,
    started: float,
    on_done: OnDone,
    loop_tools: Optional[tuple[list[Tool], int]] = None,
) -> AnyResponse:
    """``loop_tools``: the registered tools (and the most model turns) the gateway runs
    itself (``tool_ids``); their calls and results stay out of the response."""
    fmt = FORMATS[route.wire]
    model = payload["model"]
    try:
        body = fmt.request_from_canonical(call_request, route)
    except TranslationError as exc:
        raise HTTPError(400, exc.message, param=exc.param) from None
    stream = call_request.stream is True
    headers = client_headers(request, route)
    if loop_tools is not None:
        looped = await _loop(proxy, request, key, route, body, headers, started, loop_tools, stream)
        if isinstance(looped, StreamResponse):
            encoder = StreamEncoder(payload, response_id, model)
            chunks = _relay(looped.chunks, FORMATS[LOOP_FORMAT].stream_decoder(), encoder, on_done)
            return StreamResponse(looped.status, looped.headers, chunks, looped.close)
        done, changed = looped if isinstance(looped, tuple) else (looped, None)
        if not done.ok:
            return _error(fmt, done.status, done.headers, done.body)
        return await _finish(
            fmt, done, orjson.dumps(changed) if changed is not None else done.body, payload, response_id, model, on_done
        )
    call = proxy.prepare(key, route, body, None, headers, request.request_id, stream, started)
    try:
        if stream:
            upstream = await proxy.open_stream(call)
            if not isinstance(upstream, UpstreamStream):
                return _error(fmt, upstream.status, upstream.headers, upstream.body)
            encoder = StreamEncoder(payload, response_id, model)
            out_headers = _headers(upstream.headers, SSE_HEADERS) + call.extra_headers
            return StreamResponse(
                upstream.status, out_headers, _relay(upstream, fmt.stream_decoder(), encoder, on_done), upstream.close
            )
        done = await proxy.complete(call)
        if not done.ok:
            return _error(fmt, done.status, done.headers, done.body)
        return await _finish(fmt, done, done.body, payload, response_id, model, on_done)
    except BaseException:
        call.release()
        raise


async def _finish(
    fmt: Format, done: "Completed", body: bytes, payload: dict[str, Any], response_id: str, model: str, on_done: OnDone
) -> Response:
    try:
        answer = fmt.response_to_canonical(orjson.loads(body))
    except (orjson.JSONDecodeError, TranslationError):
        raise HTTPError(
            502, "the upstream provider returned an unexpected body", code="upstream_bad_response"
        ) from None
    result = response_from_canonical(answer, payload, response_id, model)
    await on_done(result)
    return Response(done.status, orjson.dumps(result), _headers(done.headers, JSON_HEADERS))
