"""The proxy flow for the native routes (/v1/chat/completions, /v1/messages).

authenticate -> route the model -> hold money on the key (or 402) -> forward
(retrying connect errors, 429 and 5xx while nothing reached the client) ->
settle the hold to the actual cost -> hand the usage event to the writer.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Optional, Protocol, Union

import orjson

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
from tollway.hooks import CallIntent
from tollway.http.core import AnyResponse, HTTPError, Request, Response, StreamResponse
from tollway.keys import ApiKey
from tollway.ledger.journal import Journal, new_event_id
from tollway.ledger.settlement import settle
from tollway.ledger.writer import usage_row
from tollway.providers import ADAPTERS, ProviderAdapter
from tollway.proxy import looped, translated
from tollway.proxy.caps import decide_hold
from tollway.proxy.checks import check_model_request, token_count
from tollway.proxy.headers import response_headers

if TYPE_CHECKING:
    from tollway._core import UpstreamClient
    from tollway.background import OpenCounter
    from tollway.config import Settings
    from tollway.hooks import Hooks
    from tollway.ledger import Ledger
    from tollway.ledger.writer import UsageWriter
    from tollway.proxy.spin import SpinWait
    from tollway.tools import ToolStore
    from tollway.tools.dispatch import Dispatcher


class Runtime(Protocol):
    """What the call path uses of the running gateway (``Gateway`` is one)."""

    settings: "Settings"
    ledger: "Ledger"
    journal: Journal
    writer: "UsageWriter"
    hooks: "Hooks"
    spin: "SpinWait"
    client: Optional["UpstreamClient"]  # set at start-up
    requests_open: int  # non-stream calls in flight (event loop thread only)
    streams_open: "OpenCounter"
    tools: "ToolStore"  # the webhook tools the tool loop runs
    dispatcher: "Dispatcher"

    def serving_alone(self) -> bool: ...


CLAMP_HEADER = "x-tollway-max-tokens-clamped"


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

    __slots__ = ("gw", "hold", "base", "started", "then")

    def __init__(
        self,
        gw: Runtime,
        hold: Hold,
        base: dict[str, Any],
        started: float,
        then: Optional[Callable[[StreamOutcome], None]] = None,
    ) -> None:
        self.gw = gw
        self.hold = hold
        self.base = base
        self.started = started
        self.then = then

    def __call__(self, outcome: StreamOutcome) -> None:
        usage = outcome.usage
        cost = outcome.cost_micros  # the settlement rule applied by the stream (ledger.settlement)
        self.hold.settle(cost)
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
                cost_micros=cost,
                latency_ms=int((time.perf_counter() - self.started) * 1000),
            )
        )
        try:
            if self.then is not None:
                self.then(outcome)
        finally:
            self.gw.streams_open.add(-1)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a call comes from when no HTTP request stands behind it (a job): the id
    its usage event carries and the client headers to forward (none). An HTTP
    ``Request`` has the same two attributes and is passed as is."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Call:
    """One model call, ready to send: the money is held, the upstream body built."""

    route: ModelRoute
    kind: str  # the wire format of the upstream call (usage extraction, stream scanning)
    endpoint: str
    headers: list[tuple[str, str]]
    body: bytes
    strip_usage_chunk: bool
    hold: Hold
    clamp_to: Optional[int]
    input_estimate: int
    base: dict[str, Any]  # the usage event's identity: event, request, account, key, model, provider
    started: float
    journal: Journal

    def release(self) -> None:
        """Give the hold back, nothing spent (a no-op once settled or released)."""
        if self.hold.release():
            self.journal.release(self.base["event_id"])

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return [(CLAMP_HEADER, str(self.clamp_to))] if self.clamp_to is not None else []


@dataclass(slots=True)
class Completed:
    """A whole upstream response, billed (2xx) or passed on (any other status)."""

    status: int
    headers: list[tuple[str, str]]  # for the client: hop-by-hop removed, ours added
    body: bytes
    cost_micros: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


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
        route = self.route(payload.get("model"))
        if "tool_ids" in payload:
            return await looped.handle(self, origin, shape, key, route, payload, started)
        if route.provider.kind != shape:
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

    def route(self, name: Any, mode: str = "chat", priced: bool = True) -> ModelRoute:
        """The route of a model called for ``mode`` (400 if it is for the other, or unpriced when ``priced``; 404 if unknown)."""
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "'model' is required", param="model")
        route = self.gw.settings.models.get(name)
        if route is None:
            raise HTTPError(
                404, f"the model {name!r} does not exist or is not routable here", code="model_not_found", param="model"
            )
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
    def usage_base(key: ApiKey, route: ModelRoute, request_id: str) -> dict[str, Any]:
        """A usage event's identity: event, request, account, key, model, provider."""
        return {
            "event_id": new_event_id(),
            "request_id": request_id,
            "account_id": key.account_id,
            "key_id": key.id,
            "model": route.name,
            "provider": route.provider.name,
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
            adapter = ADAPTERS[route.provider.kind]
        requested = adapter.requested_max_tokens(payload)
        if requested is not None:
            token_count(requested, "max_tokens")
        hooks = self.gw.hooks
        if hooks.before_call:
            hooks.before(CallIntent(key, route, payload, stream, requested))
        if raw is None:
            raw = orjson.dumps(payload)
        input_estimate = adapter.estimate_input_tokens(payload, len(raw), route.context_window)
        decision = decide_hold(self.gw.ledger, key.id, route, input_estimate, requested, adapter.min_output_tokens)
        try:
            prepared = adapter.prepare(payload, raw, route.upstream_model, decision.clamp_to, stream)
        except BaseException:
            decision.hold.release()  # not journaled yet
            raise
        base = self.usage_base(key, route, request_id)
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
        )

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
                raise HTTPError(
                    502,
                    f"the upstream provider {route.provider.name!r} is unreachable: {exc}",
                    code="upstream_unreachable",
                ) from None
            except UpstreamTimeout as exc:
                raise HTTPError(
                    504, f"the upstream provider {route.provider.name!r} timed out: {exc}", code="upstream_timeout"
                ) from None
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
        recorder = StreamRecorder(gw, call.hold, call.base, call.started, then)
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


def _backoff(attempt: int) -> float:
    return 0.25 * (2**attempt) * (0.5 + random.random())
