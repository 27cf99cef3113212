"""The proxy flow for the native routes (/v1/chat/completions, /v1/messages).

authenticate -> route the model -> hold money on the key (or 402) -> forward
(retrying connect errors, 429 and 5xx while nothing reached the client) ->
settle the hold to the actual cost -> hand the usage event to the writer.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any, Optional, Union

from tollway._core import (
    Hold,
    StreamOutcome,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamStream,
    UpstreamTimeout,
    extract_usage,
)
from tollway.config import ModelRoute
from tollway.http.core import AnyResponse, HTTPError, Request, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.ledger.writer import usage_row
from tollway.proxy.caps import CapDecision, decide_hold
from tollway.providers import ADAPTERS
from tollway.providers.base import estimate_input_tokens

if TYPE_CHECKING:
    from tollway.gateway import Gateway

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "date",
    "server",
}
CLAMP_HEADER = "x-tollway-max-tokens-clamped"


def response_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in upstream:
        if name in _HOP_BY_HOP:
            continue
        if name == "x-request-id":  # ours takes that name; keep the provider's too
            name = "x-upstream-request-id"
        out.append((name, value))
    return out


def retry_after_seconds(headers: list[tuple[str, str]]) -> Optional[float]:
    for name, value in headers:
        if name == "retry-after-ms":
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                return None
        if name == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class StreamRecorder:
    """Turns the Rust stream's outcome into a usage event (called once, from any thread)."""

    __slots__ = ("gw", "base", "started")

    def __init__(self, gw: "Gateway", base: dict[str, Any], started: float) -> None:
        self.gw = gw
        self.base = base
        self.started = started

    def __call__(self, outcome: StreamOutcome) -> None:
        usage = outcome.usage
        self.gw.writer.submit(
            usage_row(
                **self.base,
                http_status=200,
                outcome=outcome.status,
                stream=True,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                estimated=usage.estimated,
                cost_micros=outcome.cost_micros,
                latency_ms=int((time.perf_counter() - self.started) * 1000),
            )
        )
        self.gw.streams_open.add(-1)


class Proxy:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw

    async def handle(self, request: Request, shape: str) -> AnyResponse:
        started = time.perf_counter()
        gw = self.gw
        key = await gw.auth.authenticate(request.headers)
        payload = request.json()
        if not isinstance(payload, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        route = self._route(payload, shape)
        adapter = ADAPTERS[route.provider.kind]
        stream = payload.get("stream") is True
        requested = adapter.requested_max_tokens(payload)
        if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
            raise HTTPError(400, "'max_tokens' must be a positive integer", param="max_tokens")

        input_estimate = estimate_input_tokens(payload, len(request.body))
        decision = decide_hold(gw.ledger, key.id, route, input_estimate, requested)
        prepared = adapter.prepare(payload, request.body, route.upstream_model, decision.clamp_to, stream)
        headers = adapter.headers(route.provider, request.headers)
        base = {
            "request_id": request.request_id,
            "account_id": key.account_id,
            "key_id": key.id,
            "model": route.name,
            "provider": route.provider.name,
        }
        extra_headers = [(CLAMP_HEADER, str(decision.clamp_to))] if decision.clamp_to is not None else []
        hold = decision.hold
        try:
            if stream:
                return await self._stream(route, headers, prepared.body, prepared.strip_usage_chunk, hold, input_estimate, base, started, extra_headers)
            return await self._once(route, headers, prepared.body, hold, input_estimate, base, started, extra_headers)
        except BaseException:
            hold.release()  # no-op once the hold was settled
            raise

    def _route(self, payload: dict[str, Any], shape: str) -> ModelRoute:
        name = payload.get("model")
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "'model' is required", param="model")
        route = self.gw.settings.models.get(name)
        if route is None:
            raise HTTPError(404, f"the model {name!r} does not exist or is not routable here", code="model_not_found", param="model")
        if route.provider.kind != shape:
            other = "/v1/messages" if route.provider.kind == "anthropic" else "/v1/chat/completions"
            raise HTTPError(400, f"the model {name!r} is served by an {route.provider.kind} provider; call {other}", param="model")
        if route.pricing is None:
            raise HTTPError(400, f"the model {name!r} has no price configured; add input_usd_per_mtok and output_usd_per_mtok", param="model")
        return route

    async def _send_with_retries(self, route: ModelRoute, make_call) -> Union[UpstreamResponse, UpstreamStream]:
        settings = self.gw.settings
        attempt = 0
        while True:
            try:
                result = await make_call()
            except UpstreamConnectError as exc:
                if attempt < settings.max_retries:
                    await asyncio.sleep(_backoff(attempt))
                    attempt += 1
                    continue
                raise HTTPError(502, f"the upstream provider {route.provider.name!r} is unreachable: {exc}", code="upstream_unreachable") from None
            except UpstreamTimeout as exc:
                raise HTTPError(504, f"the upstream provider {route.provider.name!r} timed out: {exc}", code="upstream_timeout") from None
            if _retryable(result.status) and attempt < settings.max_retries:
                wait = retry_after_seconds(result.headers)
                wait = _backoff(attempt) if wait is None else wait
                if wait <= settings.max_retry_wait:
                    if isinstance(result, UpstreamStream):
                        await result.read_all()
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            return result

    async def _once(self, route, headers, body, hold: Hold, input_estimate, base, started, extra_headers) -> Response:
        gw = self.gw
        gw.requests_open += 1  # only ever touched on the event loop's thread
        try:
            try:
                response = await self._send_with_retries(
                    route, lambda: gw.client.send("POST", route.provider.endpoint, headers, body)
                )
            except HTTPError as exc:
                self._record_failure(base, exc.status, "timeout" if exc.status == 504 else "error", False, started)
                raise
            assert isinstance(response, UpstreamResponse)
            out_headers = response_headers(response.headers) + extra_headers
            if not 200 <= response.status < 300:
                hold.release()
                self._record_failure(base, response.status, "upstream_error", False, started)
                return Response(response.status, response.body, out_headers)
            usage = extract_usage(route.provider.kind, response.body)
            if usage is None:
                estimated = True
                input_tokens, output_tokens, cache_read, cache_write = input_estimate, -(-len(response.body) // 4), 0, 0
            else:
                estimated = usage.estimated
                input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
                cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
            cost = route.pricing.cost_micros(input_tokens, output_tokens, cache_read, cache_write)
            if usage is None:  # our own estimate never bills past what the request could spend
                cost = min(cost, hold.micros)
            hold.settle(cost)
            gw.writer.submit(
                usage_row(
                    **base,
                    http_status=response.status,
                    outcome="ok",
                    stream=False,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                    estimated=estimated,
                    cost_micros=cost,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                )
            )
            return Response(response.status, response.body, out_headers)
        finally:
            gw.requests_open -= 1

    async def _stream(self, route, headers, body, strip, hold: Hold, input_estimate, base, started, extra_headers) -> AnyResponse:
        gw = self.gw
        recorder = StreamRecorder(gw, base, started)
        try:
            upstream = await self._send_with_retries(
                route,
                lambda: gw.client.stream(
                    "POST",
                    route.provider.endpoint,
                    headers,
                    body,
                    kind=route.provider.kind,
                    strip_usage_chunk=strip,
                    pricing=route.pricing,
                    hold=hold,
                    input_estimate=input_estimate,
                    on_done=recorder,
                ),
            )
        except HTTPError as exc:
            self._record_failure(base, exc.status, "timeout" if exc.status == 504 else "error", True, started)
            raise
        assert isinstance(upstream, UpstreamStream)
        out_headers = response_headers(upstream.headers) + extra_headers
        if not 200 <= upstream.status < 300:
            error = await upstream.read_all()
            hold.release()
            self._record_failure(base, upstream.status, "upstream_error", True, started)
            return Response(upstream.status, error, out_headers)
        gw.streams_open.add(1)  # given back by the recorder when the stream settles
        return StreamResponse(upstream.status, out_headers, upstream, upstream.close)

    def _record_failure(self, base: dict[str, Any], status: int, outcome: str, stream: bool, started: float) -> None:
        self.gw.writer.submit(
            usage_row(
                **base,
                http_status=status,
                outcome=outcome,
                stream=stream,
                latency_ms=int((time.perf_counter() - started) * 1000),
            )
        )


def _backoff(attempt: int) -> float:
    return 0.25 * (2**attempt) * (0.5 + random.random())
