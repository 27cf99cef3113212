"""The proxy flow for the native routes (/v1/chat/completions, /v1/messages).

authenticate -> route the model -> hold money on the key (or 402) -> forward
(retrying connect errors, 429 and 5xx while nothing reached the client) ->
settle the hold to the actual cost -> hand the usage event to the writer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Mapping, Optional, Union

import orjson

from tollway._core import (
    StreamOutcome,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamStream,
    UpstreamTimeout,
    extract_usage,
)
from tollway.config import ModelRoute
from tollway.hooks import CallIntent
from tollway.http.core import AnyResponse, HTTPError, Request, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.ledger.journal import new_event_id
from tollway.ledger.settlement import settle
from tollway.ledger.writer import usage_row
from tollway.policy.service import check_model
from tollway.providers import ADAPTERS, ProviderAdapter
from tollway.proxy import looped, translated
from tollway.proxy.call import (
    CLAMP_HEADER,
    Call,
    Completed,
    Origin,
    Runtime,
    StreamRecorder,
    backoff,
    retry_after_seconds,
    retryable,
)
from tollway.proxy.checks import check_model_request, token_count
from tollway.proxy.headers import response_headers

__all__ = ["CLAMP_HEADER", "Call", "Completed", "Origin", "Proxy", "Runtime"]


class Proxy:
    """Forwards model calls for the native routes, the translated ones and threads."""

    def __init__(self, gw: Runtime) -> None:
        self.gw = gw

    async def handle(self, request: Request, shape: str) -> AnyResponse:
        started = time.perf_counter()
        key = await self.gw.auth.authenticate(request.headers)
        payload = request.json(allow_nul=True)  # forwarded, never stored
        if not isinstance(payload, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return await self.call(key, payload, shape, request, request.body, started)

    async def call(
        self,
        key: ApiKey,
        payload: dict[str, Any],
        shape: str,
        origin: Origin,
        raw: Optional[bytes] = None,
        started: Optional[float] = None,
    ) -> AnyResponse:
        """One model call in the format ``shape``: native, translated or with the tool loop.

        ``origin`` is the HTTP request, or an ``Origin`` for a call no client sent (a
        job); ``raw`` the client's bytes when ``payload`` is exactly what it sent.
        """
        started = time.perf_counter() if started is None else started
        check_model_request(payload)
        route = self.route(payload.get("model"), key)
        if "tool_ids" in payload:
            return await looped.handle(self, origin, shape, key, route, payload, started)
        if route.wire != shape:
            return await translated.handle(self, origin, shape, key, route, payload, started)
        stream = payload.get("stream") is True
        call = self.prepare(key, route, payload, raw, origin.headers, origin.request_id, stream, started)
        return await self.forward(call, stream)

    async def forward(
        self, call: Call, stream: bool, then: Optional[Callable[[StreamOutcome], None]] = None
    ) -> AnyResponse:
        """Send a prepared call in the provider's own shape and answer with what it sent
        (``then``: see ``open_stream``)."""
        try:
            if stream:
                upstream = await self.open_stream(call, then)
                if isinstance(upstream, Completed):
                    return Response(upstream.status, upstream.body, upstream.headers)
                return StreamResponse(
                    upstream.status, response_headers(upstream.headers) + call.extra_headers, upstream, upstream.close
                )
            done = await self.complete(call)
            return Response(done.status, done.body, done.headers)
        except BaseException:
            call.release()  # no-op once the hold was settled
            raise

    def route(self, name: Any, key: ApiKey, mode: str = "chat", priced: bool = True) -> ModelRoute:
        """The route of a model ``key`` calls for ``mode``: 400 if it is for the other (or
        unpriced when ``priced``), 404 if unknown, 403 if the key's ``allowed_models`` exclude it.
        Every route that calls a model gets its route here, so no route can skip the allow-list."""
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "'model' is required", param="model")
        route = self.gw.settings.models.get(name)
        if route is None:
            raise HTTPError(
                404, f"the model {name!r} does not exist or is not routable here", code="model_not_found", param="model"
            )
        if key.allowed_models is not None:
            check_model(key, name)
        if route.mode != mode:
            if route.embedding:
                raise HTTPError(
                    400, f"the model {name!r} is an embedding model: call POST /v1/embeddings", param="model"
                )
            raise HTTPError(
                400,
                f'the model {name!r} is not an embedding model (one has mode = "embedding" in the catalog or config)',
                param="model",
            )
        if priced and route.pricing is None:
            raise HTTPError(
                400,
                f"the model {name!r} has no price configured; add input_usd_per_mtok and output_usd_per_mtok",
                param="model",
            )
        return route

    @staticmethod
    def usage_base(key: ApiKey, route: ModelRoute, request_id: str, started_at: int) -> dict[str, Any]:
        """A usage event's identity: event, request, account, key, model, provider, and when it
        took its hold (the spend windows it is charged to)."""
        return {
            "event_id": new_event_id(),
            "request_id": request_id,
            "account_id": key.account_id,
            "key_id": key.id,
            "model": route.name,
            "provider": route.provider.name,
            "started_at": started_at,
        }

    def prepare(
        self,
        key: ApiKey,
        route: ModelRoute,
        payload: dict[str, Any],
        raw: Optional[bytes],
        client_headers: Mapping[str, str],
        request_id: str,
        stream: bool,
        started: float,
        adapter: Optional[ProviderAdapter] = None,
    ) -> Call:
        """Hold money for a request in the provider's own shape (or 402), and build its upstream body.

        ``raw`` is the client's body when ``payload`` is exactly what it sent (it is
        then forwarded unchanged unless the model is renamed or max_tokens clamped).
        ``adapter``: the wire format to call the provider in, when not its ``kind``'s
        (the Responses API of an OpenAI provider).
        """
        if adapter is None:
            adapter = ADAPTERS[route.wire]
        requested = adapter.requested_max_tokens(payload)
        if requested is not None:
            token_count(requested, "max_tokens")
        hooks = self.gw.hooks
        if hooks.before_call:
            hooks.before(CallIntent(key, route, payload, stream, requested))
        if raw is None:
            raw = orjson.dumps(payload)
        input_estimate = adapter.estimate_input_tokens(payload, len(raw), route.context_window)
        decision = self.gw.policy.admit(key, route, input_estimate, requested, adapter.min_output_tokens)
        try:
            prepared = adapter.prepare(payload, raw, route.upstream_model, decision.clamp_to, stream)
        except BaseException:
            decision.hold.release()  # not journaled yet
            if decision.permit is not None:
                decision.permit.release()
            raise
        base = self.usage_base(key, route, request_id, decision.started_at)
        journal = self.gw.journal
        journal.hold(base["event_id"], decision.hold, base, stream, input_estimate)
        return Call(
            route,
            adapter.kind,
            adapter.endpoint(route.provider),
            adapter.headers(route.provider, client_headers),
            prepared.body,
            prepared.strip_usage_chunk,
            decision.hold,
            decision.clamp_to,
            input_estimate,
            base,
            started,
            journal,
            decision.permit,
        )

    async def _send_with_retries(self, route: ModelRoute, make_call) -> Union[UpstreamResponse, UpstreamStream]:
        settings = self.gw.settings
        attempt = 0
        while True:
            try:
                result = await make_call()
            except UpstreamConnectError as exc:
                if attempt < settings.max_retries:
                    await asyncio.sleep(backoff(attempt))
                    attempt += 1
                    continue
                raise HTTPError(
                    502,
                    f"the upstream provider {route.provider.name!r} is unreachable: {exc}",
                    code="upstream_unreachable",
                ) from None
            except UpstreamTimeout as exc:
                raise HTTPError(
                    504, f"the upstream provider {route.provider.name!r} timed out: {exc}", code="upstream_timeout"
                ) from None
            if retryable(result.status) and attempt < settings.max_retries:
                wait = retry_after_seconds(result.headers)
                wait = backoff(attempt) if wait is None else wait
                if wait <= settings.max_retry_wait:
                    if isinstance(result, UpstreamStream):
                        await result.read_all()
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            return result

    def _start_send(self, call: Call) -> Awaitable[UpstreamResponse]:
        gw = self.gw
        client = gw.client
        pending = client.send("POST", call.endpoint, call.headers, call.body)
        gw.spin.poll(call.route.provider.name, client, gw.serving_alone)  # see proxy/spin.py
        return pending

    async def complete(self, call: Call) -> Completed:
        """Send a non-stream call; settle the hold to the actual cost and record the usage event."""
        gw = self.gw
        route, hold, base = call.route, call.hold, call.base
        gw.requests_open += 1  # only ever touched on the event loop's thread
        try:
            began = time.perf_counter()
            try:
                response = await self._send_with_retries(route, lambda: self._start_send(call))
            except HTTPError as exc:
                self._record_failure(base, exc.status, "timeout" if exc.status == 504 else "error", False, call.started)
                raise
            assert isinstance(response, UpstreamResponse)
            gw.spin.observe(route.provider.name, time.perf_counter() - began)
            out_headers = response_headers(response.headers) + call.extra_headers
            if not 200 <= response.status < 300:
                call.release()
                self._record_failure(base, response.status, "upstream_error", False, call.started)
                return Completed(response.status, out_headers, response.body)
            usage = extract_usage(call.kind, response.body)
            if usage is None:
                estimated = True
                input_tokens, output_tokens, cache_read, cache_write = (
                    call.input_estimate,
                    -(-len(response.body) // 4),
                    0,
                    0,
                )
            else:
                estimated = usage.estimated
                input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
                cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
            priced = route.pricing.cost_micros(input_tokens, output_tokens, cache_read, cache_write)
            cost = settle(hold, priced, estimated)
            if call.permit is not None:
                call.permit.settle(input_tokens + cache_read + cache_write + output_tokens, gw.policy.clock())
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
                    latency_ms=int((time.perf_counter() - call.started) * 1000),
                )
            )
            return Completed(response.status, out_headers, response.body, cost)
        finally:
            gw.requests_open -= 1

    async def open_stream(
        self, call: Call, then: Optional[Callable[[StreamOutcome], None]] = None
    ) -> Union[UpstreamStream, Completed]:
        """Open a stream call. A 2xx stream settles itself: its usage event is recorded,
        then ``then(outcome)`` runs (from any thread). Any other status comes back
        as a ``Completed`` with the error body, the hold released."""
        gw = self.gw
        route = call.route
        recorder = StreamRecorder(gw, call.hold, call.base, call.started, then, call.permit)
        try:
            upstream = await self._send_with_retries(
                route,
                lambda: gw.client.stream(
                    "POST",
                    call.endpoint,
                    call.headers,
                    call.body,
                    kind=call.kind,
                    strip_usage_chunk=call.strip_usage_chunk,
                    pricing=route.pricing,
                    hold_micros=call.hold.micros,
                    input_estimate=call.input_estimate,
                    on_done=recorder,
                ),
            )
        except HTTPError as exc:
            self._record_failure(call.base, exc.status, "timeout" if exc.status == 504 else "error", True, call.started)
            raise
        assert isinstance(upstream, UpstreamStream)
        if not 200 <= upstream.status < 300:
            error = await upstream.read_all()
            call.release()
            self._record_failure(call.base, upstream.status, "upstream_error", True, call.started)
            return Completed(upstream.status, response_headers(upstream.headers) + call.extra_headers, error)
        gw.streams_open.add(1)  # given back by the recorder when the stream settles
        return upstream

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
