"""Exact sliding-window rate limits per bucket (a key, or a model on a key).

A bucket has up to three limits (``RateLimits``): ``rpm`` requests and ``tpm`` tokens in any
60-second interval, and ``max_parallel`` requests (or streams) in flight. ``acquire`` checks
every bucket of a request and takes a slot in all of them or in none; the caller refuses the
request (a 429) on a ``Refusal`` before any upstream call.

Exactness. Each bucket keeps a sliding log: one entry ``[ts, tokens, live]`` per admitted
request, oldest first, with a live count and a running token sum. At time ``t`` (integer ms)
the window is ``(t - 60000, t]``: an entry stamped ``s`` counts while ``t - s < 60000``. A
request is admitted at ``t`` only if, in that window, ``count < rpm`` and ``sum + reserve <=
tpm``. So no 60,000-ms interval ever holds more than ``rpm`` admitted requests, nor more than
``tpm`` tokens as long as settlements do not exceed reservations (look at the last request
admitted in the interval: every other one is in its window). This is not a token bucket or
GCRA, which with burst = limit let about twice the limit through in a sliding minute.

Tokens. A request reserves ``min(tokens, tpm)`` where ``tokens`` is the caller's estimate
(input plus worst-case output): a single request larger than the whole ``tpm`` can still run
when the window is empty, and then fills it. ``Permit.settle`` corrects the entry to the
actual tokens, lower or higher; while the entry is inside the window the sum changes with it
(a higher actual can take the sum over ``tpm``: later requests wait until it drops). Tokens
are logged even in a bucket with only ``rpm``, so a ``tpm`` set later sees the last minute.

Retry. A ``Refusal`` says when the same request could first be admitted if nothing else
changes: for requests and tokens that is exact (the time the oldest entries that must leave
the window do leave it, the latest over every refusing limit of every bucket); a parallel
refusal has no such time and gives ``PARALLEL_RETRY_MS`` as a hint.

Limits are passed on every call, so a changed limit (a PATCH) applies at once to the existing
log: a lowered limit refuses until the log drops below it. Limit values are integers >= 1; a
bucket that must refuse everything is the caller's business (a disabled key).

Time is the caller's: every call takes ``now_ms`` (use a monotonic clock in ms; a value lower
than one already seen is taken as the latest seen, so the log stays ordered). Nothing here
reads the clock. Memory: entries older than the window are pruned on every touch of a
bucket, and a few buckets are swept on every 32nd ``acquire``: a bucket with no entry in the
window and none in flight is dropped (it is the same as a new one).

Bounds: integers beyond 2**62 (tokens, limits, times) count as 2**62, far past anything the
API accepts (tpm <= 10**12); limits are integers >= 1 (``RateLimits`` checks it).

Implementation. ``RateLimiter`` is the Rust one (``tollway._core.RateLimiter``, in
rust/src/ratelimit.rs): one mutex makes every operation atomic across buckets (callers are
the asyncio thread and Rust runtime threads holding the GIL). It parses its arguments, then
decides under the lock and makes Python objects only after it: a ``Permit`` (a
``tollway._core.RatePermit``) on the common path, this module's ``Refusal``, ``Window`` and
``RateSnapshot`` for a refusal or a snapshot. No Python code runs under the lock, so a Permit
dropped anywhere (it frees its parallel slots then) cannot deadlock. The pure-Python
``tollway.policy.ratelimit_ref.ReferenceRateLimiter`` is the reference it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from tollway import _core

WINDOW_MS = 60_000
PARALLEL_RETRY_MS = 1_000  # the retry hint of a parallel refusal: slots free when requests end
_SWEEP_EVERY = 32  # acquires between sweeps (a power of two)
_SWEEP_BUCKETS = 128  # buckets looked at per sweep: 4 per acquire, more than it can create

Limit = Literal["requests", "tokens", "parallel"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A bucket's limits; None is no limit."""

    rpm: Optional[int] = None
    tpm: Optional[int] = None
    max_parallel: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_parallel"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, not {value!r}")


@dataclass(frozen=True, slots=True)
class Window:
    """One limit of one bucket now: what the rate-limit headers show."""

    bucket: str
    limit: int
    remaining: int  # >= 0
    reset_ms: int  # until the window is empty again (its initial state); 0 if it is


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    """The most restrictive requests and tokens windows over a request's buckets (the one with
    the fewest remaining, then the latest reset), None where no bucket has that limit."""

    requests: Optional[Window]
    tokens: Optional[Window]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not start now. ``bucket``/``limit`` is the refusing limit that frees
    last; ``retry_after_ms`` (>= 1) is when the request could first be admitted."""

    bucket: str
    limit: Limit
    limit_value: int
    remaining: int
    retry_after_ms: int
    requests: Optional[Window] = None
    tokens: Optional[Window] = None

    @property
    def reset_requests_ms(self) -> Optional[int]:
        return None if self.requests is None else self.requests.reset_ms

    @property
    def reset_tokens_ms(self) -> Optional[int]:
        return None if self.tokens is None else self.tokens.reset_ms


Permit = _core.RatePermit
"""A request admitted in every bucket. End it exactly once: ``settle(actual_tokens, now_ms)``
when it went upstream (tokens corrected to the actual, parallel slots freed), ``release()``
when it did not after all (everything given back as if it never happened). Later calls of
either do nothing. A Permit dropped without either frees its parallel slots and keeps its
reservation. ``tokens`` is the estimate it was admitted with; ``done`` whether it ended."""


class RateLimiter(_core.RateLimiter):
    """The rate limiter: ``acquire(buckets, tokens, now_ms) -> Permit | Refusal``,
    ``snapshot(buckets, now_ms) -> RateSnapshot``, ``state(bucket, limits, now_ms) -> dict``,
    ``forget(bucket)``, ``bucket_ids()`` and ``len()`` (see the module's docstring)."""

    __slots__ = ()

    def __new__(cls) -> RateLimiter:
        return super().__new__(cls, Window, RateSnapshot, Refusal)
