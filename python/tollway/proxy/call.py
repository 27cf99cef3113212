"""A model call's plain values: what the call path needs of the gateway (``Runtime``),
where a call comes from (``Origin``), a prepared call (``Call``), a whole answer
(``Completed``), the recorder of a stream's outcome, and the retry timing."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

from tollway._core import Hold, StreamOutcome
from tollway.config import ModelRoute
from tollway.ledger.journal import Journal
from tollway.ledger.writer import usage_row

if TYPE_CHECKING:
    from tollway._core import UpstreamClient
    from tollway.background import OpenCounter
    from tollway.config import Settings
    from tollway.hooks import Hooks
    from tollway.keys.auth import Authenticator
    from tollway.ledger import Ledger
    from tollway.ledger.writer import UsageWriter
    from tollway.policy.ratelimit import Permit
    from tollway.policy.service import Policy
    from tollway.proxy.spin import SpinWait
    from tollway.tools import ToolStore
    from tollway.tools.dispatch import Dispatcher


class Runtime(Protocol):
    """What the call path uses of the running gateway (``Gateway`` is one)."""

    settings: "Settings"
    auth: "Authenticator"  # the native routes authenticate in Proxy.handle
    ledger: "Ledger"
    policy: "Policy"  # models, rate limits and budgets of a key
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


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


class StreamRecorder:
    """Turns the Rust stream's outcome into a usage event (called once, from any thread)."""

    __slots__ = ("gw", "hold", "base", "started", "then", "permit")

    def __init__(
        self,
        gw: Runtime,
        hold: Hold,
        base: dict[str, Any],
        started: float,
        then: Optional[Callable[[StreamOutcome], None]] = None,
        permit: Optional["Permit"] = None,
    ) -> None:
        self.gw = gw
        self.hold = hold
        self.base = base
        self.started = started
        self.then = then
        self.permit = permit

    def __call__(self, outcome: StreamOutcome) -> None:
        usage = outcome.usage
        cost = outcome.cost_micros  # the settlement rule applied by the stream (ledger.settlement)
        self.hold.settle(cost)
        if self.permit is not None:
            tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens + usage.output_tokens
            self.permit.settle(tokens, self.gw.policy.clock())
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
    permit: Optional["Permit"] = None  # the rate limits' (tollway.policy), when the key has any

    def release(self) -> None:
        """Give the hold back, nothing spent (a no-op once settled or released). The call was
        attempted: it still counts as a request for the rate limits, with no tokens."""
        if self.hold.release():
            self.journal.release(self.base["event_id"])
        if self.permit is not None:
            self.permit.settle(0, 0)  # (a time before the limiter's latest counts as that: no clock here)

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


def backoff(attempt: int) -> float:
    return 0.25 * (2**attempt) * (0.5 + random.random())
