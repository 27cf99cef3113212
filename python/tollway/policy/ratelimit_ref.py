"""The rate limiter in pure Python: the reference the Rust one (``tollway._core.RateLimiter``,
what ``tollway.policy.ratelimit.RateLimiter`` is) is tested against, decision for decision
(tests/test_ratelimit.py runs every test on both, and a differential test compares every
result). The semantics are in ``tollway.policy.ratelimit``'s docstring.

One re-entrant lock makes every operation atomic across buckets. It is re-entrant because a
Permit dropped without ``settle`` or ``release`` frees its parallel slot from ``__del__``,
which may run anywhere.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Optional, Sequence

from tollway.policy.ratelimit import (
    _SWEEP_BUCKETS,
    _SWEEP_EVERY,
    PARALLEL_RETRY_MS,
    WINDOW_MS,
    Limit,
    RateLimits,
    RateSnapshot,
    Refusal,
    Window,
)


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


class ReferencePermit:
    """A request admitted in every bucket. End it exactly once: ``settle`` when it went upstream
    (tokens corrected to the actual, parallel slot freed), ``release`` when it did not after all
    (everything given back as if it never happened). Later calls of either do nothing. A Permit
    dropped without either frees its parallel slots and keeps its reservation."""

    __slots__ = ("_limiter", "_held", "_done", "tokens")

    def __init__(self, limiter: ReferenceRateLimiter, held: list, tokens: int) -> None:
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


class ReferenceRateLimiter:
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

    def acquire(self, buckets: Sequence[tuple[str, RateLimits]], tokens: int, now_ms: int) -> ReferencePermit | Refusal:
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
            return ReferencePermit(self, held, tokens)

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

    def bucket_ids(self) -> list[str]:
        """The ids of the buckets kept, oldest first."""
        with self._lock:
            return list(self._buckets)

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
