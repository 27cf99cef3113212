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

One lock makes every operation atomic across buckets (callers are the asyncio thread and a
Rust runtime thread holding the GIL). It is re-entrant because a Permit dropped without
``settle`` or ``release`` frees its parallel slot from ``__del__``, which may run anywhere.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

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


class _Bucket:
    __slots__ = ("log", "count", "tokens", "in_flight")

    def __init__(self) -> None:
        self.log: deque[list] = deque()  # [ts, tokens, live], ts non-decreasing
        self.count = 0  # live entries in the log
        self.tokens = 0  # their tokens
        self.in_flight = 0

    def prune(self, cutoff: int) -> None:
        log = self.log
        while log and log[0][0] <= cutoff:
            entry = log.popleft()
            if entry[2]:
                entry[2] = False  # out of the log: a late settle or release leaves the sums alone
                self.count -= 1
                self.tokens -= entry[1]

    def reset_ms(self, now: int, tokens: bool) -> int:
        for ts, n, live in reversed(self.log):
            if live and (n > 0 or not tokens):
                return ts + WINDOW_MS - now
        return 0

    def windows(self, bid: str, limits: RateLimits, now: int) -> tuple[Optional[Window], Optional[Window]]:
        rpm, tpm = limits.rpm, limits.tpm
        req = None if rpm is None else Window(bid, rpm, max(rpm - self.count, 0), self.reset_ms(now, False))
        tok = None if tpm is None else Window(bid, tpm, max(tpm - self.tokens, 0), self.reset_ms(now, True))
        return req, tok

    def retry_ms(self, limits: RateLimits, tokens: int, now: int) -> Optional[tuple[int, Limit, int, int]]:
        """None if a request of ``tokens`` fits now, else (ms until it fits, the limit, its value,
        remaining) for the limit here that frees last. The log is pruned to ``now``."""
        worst = None
        rpm, tpm, par = limits.rpm, limits.tpm, limits.max_parallel
        if rpm is not None and self.count >= rpm:
            need = self.count - rpm + 1  # live entries that must leave the window
            for ts, _, live in self.log:
                if live:
                    need -= 1
                    if not need:
                        worst = (ts + WINDOW_MS - now, "requests", rpm, 0)
                        break
        if tpm is not None:
            need = self.tokens + min(tokens, tpm) - tpm  # tokens that must leave it
            if need > 0:
                for ts, n, live in self.log:
                    if live:
                        need -= n
                        if need <= 0:
                            wait = ts + WINDOW_MS - now
                            if worst is None or wait > worst[0]:
                                worst = (wait, "tokens", tpm, max(tpm - self.tokens, 0))
                            break
        if par is not None and self.in_flight >= par and (worst is None or worst[0] < PARALLEL_RETRY_MS):
            worst = (PARALLEL_RETRY_MS, "parallel", par, 0)
        return worst


class Permit:
    """A request admitted in every bucket. End it exactly once: ``settle`` when it went upstream
    (tokens corrected to the actual, parallel slot freed), ``release`` when it did not after all
    (everything given back as if it never happened). Later calls of either do nothing. A Permit
    dropped without either frees its parallel slots and keeps its reservation."""

    __slots__ = ("_limiter", "_held", "_done", "tokens")

    def __init__(self, limiter: RateLimiter, held: list, tokens: int) -> None:
        self._limiter = limiter
        self._held = held  # [(bucket, entry or None)]
        self._done = False
        self.tokens = tokens  # the estimate it was admitted with

    @property
    def done(self) -> bool:
        return self._done

    def settle(self, actual_tokens: int, now_ms: int) -> None:
        if actual_tokens < 0:
            raise ValueError("actual_tokens must be >= 0")
        limiter = self._limiter
        with limiter._lock:
            if self._done:
                return
            self._done = True
            now = limiter._advance(now_ms)
            cutoff = now - WINDOW_MS
            for bucket, entry in self._held:
                bucket.in_flight -= 1
                if entry is not None:
                    bucket.prune(cutoff)
                    if entry[2]:
                        bucket.tokens += actual_tokens - entry[1]
                        entry[1] = actual_tokens

    def release(self) -> None:
        with self._limiter._lock:
            if self._done:
                return
            self._done = True
            for bucket, entry in self._held:
                bucket.in_flight -= 1
                if entry is not None and entry[2]:
                    entry[2] = False
                    bucket.count -= 1
                    bucket.tokens -= entry[1]

    def __del__(self) -> None:
        try:
            with self._limiter._lock:
                if not self._done:
                    self._done = True
                    for bucket, _ in self._held:
                        bucket.in_flight -= 1
        except Exception:  # interpreter shutdown
            pass


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._buckets: dict[str, _Bucket] = {}
        self._now = -(1 << 62)  # the latest now_ms seen
        self._ops = 0
        self._sweep_keys: list[str] = []
        self._sweep_at = 0
        self._sweep_started = self._now

    def _advance(self, now_ms: int) -> int:
        if now_ms > self._now:
            self._now = now_ms
        return self._now

    def acquire(self, buckets: Sequence[tuple[str, RateLimits]], tokens: int, now_ms: int) -> Permit | Refusal:
        """Admit a request of ``tokens`` (estimated) in every bucket, or in none. Bucket ids in
        one call must be distinct, e.g. [("key_1", key limits), ("key_1|gpt-4o", its limits)]."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        with self._lock:
            now = self._advance(now_ms)
            cutoff = now - WINDOW_MS
            table = self._buckets
            found = []
            refused = False
            for bid, limits in buckets:
                b = table.get(bid)
                if b is None:
                    b = table[bid] = _Bucket()
                log = b.log
                if log and log[0][0] <= cutoff:
                    b.prune(cutoff)
                rpm, tpm, par = limits.rpm, limits.tpm, limits.max_parallel
                if (
                    (rpm is not None and b.count >= rpm)
                    or (tpm is not None and b.tokens + (tokens if tokens < tpm else tpm) > tpm)
                    or (par is not None and b.in_flight >= par)
                ):
                    refused = True
                found.append(b)
            self._ops += 1
            if refused:
                refusal = self._refusal(buckets, found, tokens, now)
                if not self._ops & (_SWEEP_EVERY - 1):
                    self._sweep(now)
                return refusal
            held = []
            for b, (_, limits) in zip(found, buckets, strict=True):
                b.in_flight += 1
                tpm = limits.tpm
                if tpm is None and limits.rpm is None:
                    held.append((b, None))
                    continue
                n = tokens if tpm is None or tokens < tpm else tpm
                entry = [now, n, True]
                b.log.append(entry)
                b.count += 1
                b.tokens += n
                held.append((b, entry))
            if not self._ops & (_SWEEP_EVERY - 1):
                self._sweep(now)  # after the slots are taken: it drops only buckets with none in flight
            return Permit(self, held, tokens)

    def _refusal(self, buckets, found, tokens: int, now: int) -> Refusal:
        worst = None
        for b, (bid, limits) in zip(found, buckets, strict=True):
            why = b.retry_ms(limits, tokens, now)
            if why is not None and (worst is None or why[0] > worst[0]):
                worst = (*why, bid)
        assert worst is not None
        snap = self._snapshot(buckets, found, now)
        wait, limit, value, remaining, bid = worst
        return Refusal(bid, limit, value, remaining, wait, snap.requests, snap.tokens)

    @staticmethod
    def _snapshot(buckets, found, now: int) -> RateSnapshot:
        best: list[Optional[Window]] = [None, None]
        for b, (bid, limits) in zip(found, buckets, strict=True):
            for i, w in enumerate(b.windows(bid, limits, now)):
                cur = best[i]
                if w is not None and (cur is None or (w.remaining, -w.reset_ms) < (cur.remaining, -cur.reset_ms)):
                    best[i] = w
        return RateSnapshot(best[0], best[1])

    def snapshot(self, buckets: Sequence[tuple[str, RateLimits]], now_ms: int) -> RateSnapshot:
        """The windows of a request's buckets now (after its acquire: for a success's headers)."""
        with self._lock:
            now = self._advance(now_ms)
            found = [self._peek(bid, now) for bid, _ in buckets]
            return self._snapshot(buckets, found, now)

    def _peek(self, bid: str, now: int) -> _Bucket:
        b = self._buckets.get(bid)
        if b is None:
            return _Bucket()  # not stored: reading a bucket does not create it
        b.prune(now - WINDOW_MS)
        return b

    def state(self, bucket: str, limits: RateLimits, now_ms: int) -> dict:
        """A bucket now, JSON-ready: requests and tokens windows (None without that limit),
        the log's counts and the requests in flight."""
        with self._lock:
            now = self._advance(now_ms)
            b = self._peek(bucket, now)
            req, tok = b.windows(bucket, limits, now)
            return {
                "bucket": bucket,
                "window_ms": WINDOW_MS,
                "requests": None
                if req is None
                else {"limit": req.limit, "remaining": req.remaining, "reset_ms": req.reset_ms},
                "tokens": None
                if tok is None
                else {"limit": tok.limit, "remaining": tok.remaining, "reset_ms": tok.reset_ms},
                "requests_in_window": b.count,
                "tokens_in_window": b.tokens,
                "in_flight": b.in_flight,
                "max_parallel": limits.max_parallel,
            }

    def forget(self, bucket: str) -> None:
        """Drop a bucket's log and in-flight count (a deleted key). Permits still open on it end
        without effect on a bucket of the same id made later."""
        with self._lock:
            self._buckets.pop(bucket, None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: int) -> None:
        keys, i = self._sweep_keys, self._sweep_at
        if i >= len(keys):
            if now - self._sweep_started < WINDOW_MS:
                return  # at most one pass a window
            keys = self._sweep_keys = list(self._buckets)
            i = 0
            self._sweep_started = now
        cutoff = now - WINDOW_MS
        table = self._buckets
        for bid in keys[i : i + _SWEEP_BUCKETS]:
            b = table.get(bid)
            if b is not None and not b.in_flight and (not b.log or b.log[-1][0] <= cutoff):
                del table[bid]
        self._sweep_at = i + _SWEEP_BUCKETS
