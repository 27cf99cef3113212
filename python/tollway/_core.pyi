"""Type stubs for the Rust extension ``tollway._core``.

The extension owns the hot path: the upstream HTTP client, the SSE scanner that
tees streams, usage extraction and the per-key spend ledger.

Money is integer micro-dollars ("micros") everywhere. Prices are integer
atto-dollars per token (1e-18 USD; equal to USD per million tokens x 1e12) so
that every cost is exact integer arithmetic.
"""

from typing import Awaitable, Callable, Literal, Optional, Sequence, Union

ProviderKind = Literal["openai", "anthropic", "openai_responses"]

class UpstreamError(Exception):
    """Any failure to get a response from the upstream (base class)."""

class UpstreamConnectError(UpstreamError):
    """The upstream could not be reached (DNS, refused, TLS, reset before headers)."""

class UpstreamTimeout(UpstreamError):
    """Connect timeout or no response headers within ``first_byte_timeout``."""

class Pricing:
    """Prices of one model, with the account markup, in exact integer units."""

    input_atto: int
    output_atto: int
    cache_read_atto: int
    cache_write_atto: int
    markup_ppm: int
    def __init__(
        self,
        input_atto: int,
        output_atto: int,
        cache_read_atto: int = 0,
        cache_write_atto: int = 0,
        markup_ppm: int = 0,
    ) -> None: ...
    def cost_micros(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """sum(tokens x price) x (1e6 + markup_ppm) / 1e6, rounded half-up to micros.

        Exact for every input in range (prices, markup and token counts are
        unsigned 64-bit: a negative value raises OverflowError); computed in
        256-bit integer arithmetic, so it never overflows.
        """
    def cost_micros_ceil(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """Same sum, rounded up (used for holds)."""
    def affordable_output_tokens(self, budget_micros: int) -> int:
        """Largest n with n x output price (with markup) <= budget; 2**62 when the output price is 0.

        0 when ``budget_micros <= 0``. ``budget_micros`` must fit in a signed 64-bit int.
        The result is exact (not capped at 2**62 when the output price is tiny).
        """

class Usage:
    input_tokens: int
    """Input tokens billed at the input price (OpenAI: prompt_tokens minus cached_tokens)."""
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    estimated: bool
    """True when some count was not reported by the upstream and was estimated."""
    model: Optional[str]
    finish_reason: Optional[str]
    def __init__(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        estimated: bool = False,
        model: Optional[str] = None,
        finish_reason: Optional[str] = None,
    ) -> None: ...

def json_scan(body: bytes) -> tuple[int, bool]:
    """(deepest nesting of arrays and objects, whether a string holds a \\u0000 escape), in one pass over the bytes."""
    ...

def extract_usage(kind: ProviderKind, body: bytes) -> Optional[Usage]:
    """Usage of a whole non-stream response body, parsed in Rust (no Python dicts).

    OpenAI chat completion: usage.prompt_tokens / completion_tokens /
    prompt_tokens_details.cached_tokens, choices[0].finish_reason, model.
    Anthropic message: usage.input_tokens / output_tokens /
    cache_read_input_tokens / cache_creation_input_tokens, stop_reason, model.
    OpenAI Responses (``"openai_responses"``): usage.input_tokens (cached included,
    like prompt_tokens) / output_tokens (reasoning included) /
    input_tokens_details.cached_tokens, incomplete_details.reason or status, model.
    None when the body is not JSON or has no usage object.
    """

class StreamScanner:
    """Incremental SSE scanner for one provider's stream format.

    Fed arbitrary byte chunks (split anywhere, mid UTF-8, CRLF or LF, comments,
    multi-line ``data:``), it returns the bytes to forward to the client and
    accumulates usage, finish reason, assembled text and tool calls.

    With ``strip_usage_chunk`` (OpenAI only: the gateway asked upstream for
    ``stream_options.include_usage`` although the client did not), the forwarded
    bytes omit the final usage-only chunk (``"choices":[]`` with a usage object)
    and the ``"usage":null`` member of the other chunks, so the client receives
    exactly what it would have received without include_usage. Without it,
    ``feed`` returns its input unchanged (byte-faithful, same bytes).
    """

    def __init__(self, kind: ProviderKind, strip_usage_chunk: bool = False) -> None:
        """``strip_usage_chunk`` is ignored but for ``"openai"``. Unknown kinds raise ValueError."""
    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes to forward now.

        Without strip mode this is ``chunk`` itself (the same object). With it, the
        output is event-aligned: bytes of an unfinished event are held back until
        its blank line arrives (or ``finish()``).
        """
    def finish(self) -> bytes:
        """End of input: flush whatever was held back (an incomplete trailing event is forwarded as is)."""
    @property
    def usage(self) -> Optional[Usage]:
        """Usage reported in the stream so far (None when none was reported)."""
    @property
    def text(self) -> str:
        """Assembled assistant text (all text deltas, in order)."""
    @property
    def tool_calls_json(self) -> str:
        """Assembled tool calls as a JSON array of {"id","name","arguments"} (arguments: the raw JSON string)."""
    @property
    def finish_reason(self) -> Optional[str]: ...
    @property
    def delta_count(self) -> int:
        """Number of content/tool deltas seen (used to estimate output when usage is missing)."""
    @property
    def completed(self) -> bool:
        """True once the provider's terminal event was seen (OpenAI ``[DONE]``, Anthropic ``message_stop``, Responses ``response.completed`` / ``.incomplete`` / ``.failed``)."""
    @property
    def error_json(self) -> Optional[str]:
        """The data of an in-stream error event, if any (Anthropic ``error`` event, OpenAI chunk with an ``error`` member)."""
    @property
    def model(self) -> Optional[str]:
        """The model named by the stream, if any (extra: not in the original contract)."""
    @property
    def final_response(self) -> Optional[bytes]:
        """``"openai_responses"``: the JSON of the terminal event's ``response`` object
        (``response.completed`` / ``.incomplete`` / ``.failed``); None before it, or for other kinds."""

class SseDecoder:
    """Incremental SSE decoder, for streams the gateway rewrites (translated formats).

    Lines may end in CRLF, LF or CR and be split anywhere across chunks; ``:``
    comments are skipped, ``data:`` lines join with ``\\n``, and an event without
    data is not returned.
    """

    def __init__(self) -> None: ...
    def feed(self, chunk: bytes) -> list[tuple[Optional[str], str]]:
        """The events completed by ``chunk``: ``(event name or None, data)``."""
    def finish(self) -> list[tuple[Optional[str], str]]:
        """End of input: the last event even without its blank line."""

class Hold:
    """Money reserved on one or more budgets for one in-flight request (the same
    ``micros`` on each).

    Settled or released exactly once: later calls are no-ops that return False.
    A Hold dropped without either is released.
    """

    micros: int
    @property
    def budgets(self) -> list[str]:
        """The budgets held on, in the order they were asked for."""
    @property
    def key_id(self) -> str:
        """The first budget (for a key's hold, the key's id)."""
    @property
    def done(self) -> bool: ...
    def settle(self, actual_micros: int) -> bool:
        """Record ``actual_micros`` as spent on every budget and give back the rest of the hold.

        ``actual_micros`` may exceed the hold (the overspend is recorded in full).
        """
    def release(self) -> bool:
        """Give the whole hold back (nothing was spent)."""

class Ledger:
    """Spend counters by budget id (a sharded map of short mutexes; safe from any thread).

    A budget is a key's cap (its id is the key's id) and, next, an account's wallet
    or a key's period window. For each: ``spent`` (settled micros), ``reserved``
    (held by in-flight requests) and ``limit`` (None = none). A hold on several
    budgets locks them in id order and reserves on all of them or on none, so
    concurrent requests can never together hold more than any budget's limit.
    Every operation takes microseconds at most: the GIL is not released around them.
    """

    def __init__(self) -> None: ...
    def load(self, budget_id: str, spent_micros: int, limit_micros: Optional[int]) -> None:
        """Create or reset a budget's spend and limit (at start, from the database). Keeps current holds."""
    def set_cap(self, budget_id: str, limit_micros: Optional[int]) -> None: ...
    def forget(self, budget_id: str) -> None: ...
    def reserve(self, budget_id: str, min_micros: int, want_micros: int) -> Optional[Hold]:
        """Hold min(want, available) micros on one budget, or None when available < min_micros.

        available = limit - spent - reserved (unbounded without a limit). Unknown
        budgets are created with spent 0 and no limit. A negative ``min_micros``
        counts as 0 and ``want_micros`` below ``min_micros`` counts as ``min_micros``.
        """
    def reserve_all(self, budget_ids: list[str], min_micros: int, want_micros: int) -> Union[Hold, str]:
        """Hold the same amount on every budget at once, all or none: min(want, the least
        any has available); or, when one cannot cover ``min_micros``, hold nothing and
        return that budget's id (the first such, in the order given)."""
    def snapshot(self, budget_id: str) -> tuple[int, int, Optional[int]]:
        """(spent, reserved, limit) of a budget; (0, 0, None) for an unknown one."""

class RatePermit:
    """A request admitted in every bucket by ``RateLimiter.acquire`` (``tollway.policy.ratelimit.Permit``).

    End it exactly once: ``settle`` when it went upstream (its log entries corrected to
    ``actual_tokens``, its parallel slots freed), ``release`` when it did not (everything
    given back). Later calls of either do nothing. Dropped without either, it frees its
    parallel slots and keeps its reservation.
    """

    @property
    def tokens(self) -> int:
        """The estimate it was admitted with."""
    @property
    def done(self) -> bool: ...
    def settle(self, actual_tokens: int, now_ms: int) -> None:
        """Raises ValueError for ``actual_tokens`` < 0 (even when already done)."""
    def release(self) -> None: ...

class RateLimiter:
    """Exact 60 s sliding-log rate limits per bucket (the semantics:
    ``tollway.policy.ratelimit``; the reference: ``tollway.policy.ratelimit_ref``).

    Built with the Python types it returns, ``window(bucket, limit, remaining, reset_ms)``,
    ``snapshot(requests, tokens)`` and ``refusal(bucket, limit, limit_value, remaining,
    retry_after_ms, requests, tokens)``; ``tollway.policy.ratelimit.RateLimiter`` passes
    its dataclasses. Limits are any objects with ``rpm``, ``tpm`` and ``max_parallel``
    (int >= 1 or None). One mutex, never held while Python code runs; the GIL is kept.
    Integers beyond 2**62 count as 2**62.
    """

    def __new__(
        cls, window: Callable[..., object], snapshot: Callable[..., object], refusal: Callable[..., object]
    ) -> "RateLimiter": ...
    def acquire(self, buckets: Sequence[tuple[str, object]], tokens: int, now_ms: int) -> Union[RatePermit, object]:
        """A permit in every bucket (distinct ids) for a request of ``tokens`` (>= 0, else
        ValueError), or a ``refusal(...)`` and nothing taken."""
    def snapshot(self, buckets: Sequence[tuple[str, object]], now_ms: int) -> object:
        """``snapshot(requests window or None, tokens window or None)``: the most restrictive over the buckets."""
    def state(self, bucket: str, limits: object, now_ms: int) -> dict:
        """A bucket now, JSON-ready: bucket, window_ms, requests and tokens ({limit, remaining,
        reset_ms} or None), requests_in_window, tokens_in_window, in_flight, max_parallel."""
    def forget(self, bucket: str) -> None:
        """Drop a bucket (permits still open on it end without effect on one made later)."""
    def bucket_ids(self) -> list[str]:
        """The buckets kept, oldest first (idle ones are swept: see the module)."""
    def __len__(self) -> int: ...

def settled_cost(priced_micros: int, estimated: bool, hold_micros: int) -> int:
    """The one settlement rule: reported usage is billed in full, an estimate never past the hold."""
    ...

class StreamOutcome:
    """What a finished stream hands over, exactly once, through ``on_done``."""

    status: Literal["ok", "client_closed", "client_stalled", "upstream_error", "timeout"]
    usage: Usage
    cost_micros: int
    text: str
    tool_calls_json: str
    finish_reason: Optional[str]
    error_json: Optional[str]
    bytes_forwarded: int
    """Bytes produced for the client (after stripping), whether or not it read them all."""
    latency_ms: int
    """From the request being sent upstream to the stream settling."""
    first_byte_ms: int
    """From the request being sent upstream to the first body chunk (to the headers when the body was empty)."""
    final_response: Optional[bytes]
    """``"openai_responses"`` streams: the JSON bytes of the terminal event's ``response`` object
    (the whole response with its usage), to record a streamed response without parsing the
    stream; None when the stream was cut before it, and for the other kinds."""

class UpstreamResponse:
    """A whole (non-stream) upstream response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    latency_ms: int

class UpstreamStream:
    """A streamed upstream response: forward its chunks, report what it cost.

    Created by ``UpstreamClient.stream`` once the response headers arrived. When
    ``status`` is 2xx, a tokio task reads the upstream to its end (independently of
    how fast Python consumes), scans every byte, and when the upstream ends or
    fails, or ``close()`` is called, or this object is dropped, it computes the
    usage (estimated from the streamed text when the upstream reported none),
    prices it, applies ``settled_cost`` to a hold of ``hold_micros`` (the outcome's
    ``cost_micros``: the caller settles its hold to it) and calls ``on_done(outcome)`` exactly once (from a
    runtime thread, holding the GIL, even when the event loop is gone). When
    ``status`` is not 2xx ``on_done`` is never called: read
    the error with ``read_all()``.

    ``on_done`` runs before the iteration ends: once ``async for`` is over (or
    ``read_all()`` returned), the outcome has been delivered. After ``close()``
    nothing more is returned (``__anext__`` raises StopAsyncIteration) and
    ``on_done`` follows shortly, from the runtime thread.

    A stream keeps working after its client was closed. Only one ``__anext__()``
    or ``read_all()`` may wait at a time (another call while one waits raises
    RuntimeError); a cancelled wait loses nothing: its bytes stay buffered for the
    next call.
    """

    status: int
    headers: list[tuple[str, str]]
    def __aiter__(self) -> "UpstreamStream": ...
    def __anext__(self) -> Awaitable[bytes]:
        """Everything buffered so far (coalesced), waiting only when nothing is buffered; StopAsyncIteration at the end."""
    def read_all(self) -> Awaitable[bytes]:
        """The rest of the body in one piece (for non-2xx bodies)."""
    def close(self) -> None:
        """The client went away: stop the upstream request now and settle for what was generated."""
    @property
    def finished(self) -> bool:
        """True once the upstream body ended (or failed, or was closed) and the stream settled."""
    @property
    def buffered(self) -> bool:
        """True when bytes are buffered so ``__anext__`` completes at once (extra: not in the original contract)."""

class UpstreamClient:
    """Pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) client with rustls, on a tokio runtime owned by the extension.

    Timeouts are in seconds; a value <= 0 (or infinite) disables that timeout.
    Requests are sent as given (plus ``host``, ``content-length`` and, only when
    no ``accept`` header is given, ``accept: */*``): no proxy from the environment,
    redirects are not followed, no compression is negotiated or decoded. ``headers`` are sent in
    order, repeated names kept; response header names are lowercase.
    Invalid methods, URLs or headers raise ValueError at call time.

    Results reach Python without the runtime threads taking the GIL: finished
    calls are queued in the client's completion hub, whose wake-up fd (an eventfd;
    a pipe where there is none) is registered with ``loop.add_reader`` on the
    asyncio loop the client is first used from, and the loop resolves their
    futures in batches. A client therefore serves one event loop: using it from
    another running loop raises RuntimeError while its first loop is still open
    (create one client per loop; once that loop is closed, the client rebinds to
    the next one). ``close()`` (or dropping the client) unregisters the reader.

    Cancelling the awaitable of ``send``/``stream`` before the response headers
    arrived aborts the request upstream. All clients share one runtime thread
    (``TOLLWAY_CORE_THREADS`` in the environment sets another count).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 600.0,
        read_timeout: float = 300.0,
        pool_idle_timeout: float = 90.0,
        pool_max_idle_per_host: int = 1024,
        stream_window: int = 262144,
        client_stall_timeout: float = 60.0,
    ) -> None:
        """``stream_window``: a stream reads the upstream at most this many bytes ahead
        of its consumer (the upstream's TCP flow control holds back the rest).
        ``client_stall_timeout``: bytes left unread that long close the stream with
        status "client_stalled" (billed for what the upstream sent until then)."""
    def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Awaitable[UpstreamResponse]:
        """Send and read the whole response. Raises UpstreamConnectError / UpstreamTimeout (also for a body stalled past read_timeout).

        A body that fails after the headers (e.g. connection reset) raises UpstreamError.
        """
    def stream(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        kind: ProviderKind,
        strip_usage_chunk: bool,
        pricing: Pricing,
        hold_micros: int,
        input_estimate: int,
        on_done: Callable[[StreamOutcome], None],
    ) -> Awaitable[UpstreamStream]:
        """Send and resolve once the response headers arrived.

        ``input_estimate`` is used for the input count when the upstream never
        reported usage (the outcome is then marked estimated). A gap longer than
        ``read_timeout`` between chunks ends the stream with status "timeout".

        Estimated output = max(delta_count, ceil(bytes / 4)) where bytes counts the
        streamed text plus tool-call arguments and reasoning/thinking text. When only
        part of the usage was reported (Anthropic ``message_start`` without a final
        ``message_delta``), the reported counts are kept and output is the larger of
        the reported and estimated values (marked estimated).

        If this awaitable fails or is cancelled before the headers arrive,
        ``on_done`` is never called: the caller releases its hold.
        If it is cancelled after the headers arrived but before it returned the
        stream, the stream is dropped: it closes and settles as "client_closed"
        (``on_done`` is called).
        """
    def spin_wait(self, max_seconds: float) -> bool:
        """Busy-wait, with the GIL released, up to ``max_seconds`` for a call of this client to finish.

        If one did, the finished calls' futures are resolved now (what the loop's
        reader would do on its next wake-up) and True is returned. Meant for a
        caller that knows the loop has nothing else to do and the answer is due
        within microseconds: polling saves the two thread wake-ups of the
        sleep-and-signal path. The loop runs nothing else meanwhile, so keep the
        bound short. ``max_seconds <= 0`` returns False at once.
        """
    def close(self) -> None:
        """Unregister from the event loop (at once, or once the calls still pending resolve).

        Afterwards ``send``/``stream`` raise RuntimeError; streams already returned
        keep working. Idempotent; dropping the client does the same.
        """
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
    @property
    def _wakeup_fd(self) -> int:
        """The completion hub's wake-up fd (for tests)."""
    @property
    def _pending(self) -> int:
        """Calls and stream waits whose future is not resolved yet (for tests)."""

class ConnectionGuard:
    """A thread that closes client connections the HTTP server cannot time out itself.

    Reads TCP_INFO of this process's sockets on ``port``: shuts down those that
    received no byte for ``header_timeout`` seconds and, above 7/8 of
    ``max_connections`` open, the youngest silent ones older than ``grace`` down to
    3/4. Sets TCP_USER_TIMEOUT (``user_timeout`` seconds, 0: unchanged) on the
    listener. Runs for the life of the process.
    """

    def __init__(
        self,
        port: int,
        *,
        header_timeout: float,
        max_connections: int,
        grace: float = 0.5,
        user_timeout: float = 0.0,
        interval: float = 1.0,
    ) -> None: ...
    @property
    def open(self) -> int:
        """Client connections open at the last pass."""
    @property
    def shed(self) -> int:
        """Connections shed so far."""

def unsettled_connections(port: int, quiet_ms: int) -> int:
    """Established client connections to ``port`` of this process still taking a response:
    with bytes the client has not acknowledged, or data sent less than ``quiet_ms`` ago
    (an idle keep-alive connection does not count)."""
    ...
