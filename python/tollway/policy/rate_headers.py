"""Rate-limit response headers in the forms the OpenAI and Anthropic APIs send them.

``headers_for(kind, source, now_unix_ms)`` turns a ``Refusal`` (for the 429) or a
``RateSnapshot`` (for a success) into header pairs. The requests set appears only when a
bucket of the request has an ``rpm`` limit, the tokens set only when one has a ``tpm``.

OpenAI routes (platform.openai.com/docs/guides/rate-limits, "rate limits in headers"):
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; the resets are the time until
the limit is back to its initial state, as a Go duration string: "20ms", "1s", "1.5s",
"1m0s", "6m0s", "1m30.5s".

Anthropic routes (docs.anthropic.com/en/api/rate-limits):
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, the resets an RFC 3339
timestamp (when the limit is fully replenished; whole seconds, "2025-08-21T12:40:59Z",
rounded up here). Anthropic's ``tokens`` set is input plus output combined, which is what
``tpm`` is; its ``input-tokens``/``output-tokens`` sets describe separate limits Tollway
does not have, so they are not sent. Anthropic rounds remaining tokens to the thousand; the
values here are exact.

A refusal also gets ``retry-after`` (whole seconds, rounded up, at least 1) and
``retry-after-ms`` (exact). What the official SDKs do with them (read in the installed
openai 3.60.0 and anthropic 2.16.0, ``_base_client.py``; both retry a 429 by default, twice):

- openai: ``_parse_retry_after_header`` takes ``retry-after-ms`` first, then ``retry-after``
  as a number, then as an HTTP date. ``_calculate_retry_timeout`` sleeps exactly that when
  0 < delay <= 120 s (``MAX_RETRY_AFTER_DELAY``); otherwise it falls back to its own backoff
  (0.5 s doubling, at most 8 s, minus up to 25% jitter). Above 120 s ``_should_retry`` gives up
  without retrying at all.
- anthropic: the same order (``retry-after-ms``, then ``retry-after`` as a number or a date).
  Any delay > 0 is slept, capped at 4,294,967 s; no upper limit makes it give up. A delay of 0
  falls back to its backoff (0.5 s doubling, at most 8 s, jittered).

Neither SDK reads the ``x-ratelimit-*`` or ``anthropic-ratelimit-*`` headers. Every
``retry_after_ms`` here is 1..60,000 ms, so both SDKs sleep exactly the time the request
first fits (for a parallel refusal, the limiter's fixed hint).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Union

from tollway.policy.ratelimit import RateSnapshot, Refusal, Window

Kind = Literal["openai", "anthropic"]


def go_duration(ms: int) -> str:
    """``ms`` as OpenAI writes a reset (Go's ``time.Duration`` string, at ms resolution)."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, frac = divmod(rest, 1000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    out += str(seconds)
    if frac:
        out += f".{frac:03d}".rstrip("0")
    return out + "s"


def rfc3339(unix_ms: int) -> str:
    """A UTC timestamp in whole seconds, rounded up ("2025-08-21T12:40:59Z")."""
    secs = -(-unix_ms // 1000)
    return datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after_headers(retry_after_ms: int) -> list[tuple[str, str]]:
    ms = max(int(retry_after_ms), 1)
    return [("retry-after", str(-(-ms // 1000))), ("retry-after-ms", str(ms))]


def _openai(name: str, w: Window) -> list[tuple[str, str]]:
    return [
        (f"x-ratelimit-limit-{name}", str(w.limit)),
        (f"x-ratelimit-remaining-{name}", str(w.remaining)),
        (f"x-ratelimit-reset-{name}", go_duration(w.reset_ms)),
    ]


def _anthropic(name: str, w: Window, now_unix_ms: int) -> list[tuple[str, str]]:
    return [
        (f"anthropic-ratelimit-{name}-limit", str(w.limit)),
        (f"anthropic-ratelimit-{name}-remaining", str(w.remaining)),
        (f"anthropic-ratelimit-{name}-reset", rfc3339(now_unix_ms + w.reset_ms)),
    ]


def headers_for(kind: Kind, source: Union[Refusal, RateSnapshot], now_unix_ms: int) -> list[tuple[str, str]]:
    """The rate-limit headers of a response on a ``kind`` route. ``now_unix_ms`` is wall-clock
    time (only Anthropic's timestamps use it; the limiter's own clock may be monotonic)."""
    if kind not in ("openai", "anthropic"):
        raise ValueError(f"unknown route kind {kind!r}")
    out = retry_after_headers(source.retry_after_ms) if isinstance(source, Refusal) else []
    for name, w in (("requests", source.requests), ("tokens", source.tokens)):
        if w is None:
            continue
        out += _openai(name, w) if kind == "openai" else _anthropic(name, w, now_unix_ms)
    return out
