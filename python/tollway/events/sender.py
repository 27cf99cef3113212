"""The sender: an asyncio task of the gateway that delivers the outbox's due deliveries.

Each round it finds endpoints with deliveries due, takes a lease on each (``claimed_until``
on the endpoint row: two gateway processes sharing the database never send to one
endpoint at once, and a crashed holder's lease runs out), and sends that endpoint's due
deliveries oldest first, one at a time:

- ``POST url`` with the event's stored body and the Standard Webhooks headers
  (``webhook-id`` = the event id, the same on every retry; ``webhook-timestamp``;
  ``webhook-signature``: ``v1,<base64>``, two of them during a secret rotation);
- no redirects followed (a 3xx is a failure), at most ``[outbound] timeout`` in all, at most
  ``max_response_kb`` read (the first 1,000 characters kept as the attempt's excerpt);
  the destination checked against ``[outbound] allow_private`` before each attempt;
- 2xx: delivered; the endpoint's other pending deliveries become due at once (its backlog
  flows again, in order). 410: the endpoint is disabled. Anything else is retried on
  ``SCHEDULE_S`` (x ``retry_scale``, +-20 % jitter; a longer ``Retry-After`` wins), then
  given up; an endpoint whose every attempt failed for ``disable_after_days`` is disabled.
  When the endpoint cannot be reached at all (connection refused, timeout), its newer
  deliveries are not tried but wait behind the failed one's retry (DeliveryStore.due,
  .defer), so they arrive in order once it is back.

Every attempt is recorded before the next starts; an attempt interrupted by a stop leaves
its delivery due, so it is sent again after a restart (at least once: receivers dedupe on
``webhook-id``).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import secrets
import time
from typing import Any, Optional

import httpx

from tollway import __version__
from tollway.background import cancel_task
from tollway.events.config import EventsSettings
from tollway.events.deliveries import DeliveryStore, Due, Outcome
from tollway.events.store import signing_secrets
from tollway.outbound import DestinationRefused, OutboundSettings, check_destination
from tollway.store import Database, now_ms
from tollway.webhooks import standard_headers

log = logging.getLogger("tollway.events")

# Seconds after each failed attempt before the next: 12 attempts over about three days.
SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 43200, 43200, 43200, 43200, 43200)
USER_AGENT = f"tollway-webhooks/{__version__}"
EXCERPT_CHARS = 1000
MAX_RETRY_AFTER_S = 86_400


def retry_after_s(value: Optional[str], now: float) -> Optional[float]:
    """A Retry-After header's delay in seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - now, MAX_RETRY_AFTER_S))


class Sender:
    def __init__(self, db: Database, settings: EventsSettings, outbound: OutboundSettings) -> None:
        self.store = DeliveryStore(db)
        self.settings = settings
        self.outbound = outbound
        self.token = "snd_" + secrets.token_hex(8)
        self._task: Optional[asyncio.Task[None]] = None
        self._wake: Optional[asyncio.Event] = None
        self._client: Optional[httpx.AsyncClient] = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, headers={"user-agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="tollway-events-sender")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_task(task)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Look for due deliveries now (after a commit that made some)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the event sender's round failed; retrying")
            try:
                async with asyncio.timeout(self.settings.poll_interval):  # (3.11's wait_for can swallow a cancel)
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    # ---------------------------------------------------------------- delivery
    async def round(self) -> None:
        endpoints = await asyncio.to_thread(self.store.due_endpoints, now_ms())
        if endpoints:
            await asyncio.gather(*(self._endpoint(e) for e in endpoints))

    def _lease_ms(self) -> int:
        return int((self.outbound.timeout + 30) * 1000)

    async def _endpoint(self, endpoint_id: str) -> None:
        try:
            for _ in range(10):  # batches; then let the other endpoints' rounds come
                now = now_ms()
                row = await asyncio.to_thread(self.store.claim, endpoint_id, self.token, now, now + self._lease_ms())
                if row is None:
                    return
                batch = await asyncio.to_thread(self.store.due, endpoint_id, now)
                if not batch:
                    return
                if not await self._batch(row, batch):
                    return
        finally:
            await asyncio.to_thread(self.store.release, endpoint_id, self.token)

    async def _batch(self, row: Any, batch: list[Due]) -> bool:
        """Send the batch in order; False when the endpoint stopped taking deliveries."""
        for i, due in enumerate(batch):
            now = now_ms()
            if i and await asyncio.to_thread(self.store.claim, row.id, self.token, now, now + self._lease_ms()) is None:
                return False
            outcome, unreachable = await self._attempt(row, due)
            disabled = await asyncio.to_thread(
                self.store.record, row.id, due.id, outcome, now_ms(), self._disable_after_ms()
            )
            log.log(
                logging.DEBUG if outcome.ok else logging.INFO,
                "event %s to endpoint %s attempt %d: %s",
                due.event_id,
                row.id,
                outcome.n,
                outcome.status if outcome.status is not None else outcome.error,
            )
            if disabled:
                log.warning("webhook endpoint %s disabled: %s", row.id, disabled)
                return False
            if unreachable and outcome.next_attempt_at is not None:
                rest = [d.id for d in batch[i + 1 :]]
                if rest:
                    await asyncio.to_thread(self.store.defer, rest, outcome.next_attempt_at)
                return False
        return True

    def _disable_after_ms(self) -> int:
        return int(self.settings.disable_after_days * 86_400_000 * self.settings.retry_scale)

    def _next_at(self, n: int, retry_after: Optional[float]) -> Optional[int]:
        if n > len(SCHEDULE_S):
            return None
        delay = SCHEDULE_S[n - 1] * self.settings.retry_scale * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return now_ms() + int(delay * 1000)

    async def _attempt(self, row: Any, due: Due) -> tuple[Outcome, bool]:
        """One POST; the outcome, and whether the endpoint could not be reached at all."""
        n = due.attempts + 1
        body = due.body.encode("utf-8")
        started = time.monotonic()
        headers = {"content-type": "application/json"}
        headers.update(standard_headers(signing_secrets(row, now_ms()), due.event_id, body))
        status: Optional[int] = None
        error: Optional[str] = None
        excerpt: Optional[str] = None
        retry_after: Optional[float] = None
        unreachable = False
        assert self._client is not None
        try:
            await check_destination(row.url, self.outbound)
            async with asyncio.timeout(self.outbound.timeout):
                request = self._client.build_request(
                    "POST", row.url, content=body, headers=headers, timeout=httpx.Timeout(self.outbound.timeout)
                )
                response = await self._client.send(request, stream=True)
                try:
                    status = response.status_code
                    read = bytearray()
                    async for chunk in response.aiter_raw():
                        read += chunk
                        if len(read) >= self.outbound.max_response_bytes:
                            break
                    excerpt = bytes(read[: self.outbound.max_response_bytes]).decode("utf-8", "replace")[:EXCERPT_CHARS]
                    retry_after = retry_after_s(response.headers.get("retry-after"), time.time())
                finally:
                    await response.aclose()
        except DestinationRefused as exc:
            error = f"refused: {exc}"
        except (TimeoutError, httpx.TimeoutException):
            error, unreachable = f"timed out after {self.outbound.timeout:g} s", True
        except httpx.ConnectError as exc:
            error, unreachable = f"could not connect ({type(exc).__name__})", True
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            error, unreachable = f"the request failed ({type(exc).__name__})", status is None
        latency = int((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        if status is not None and 300 <= status < 400:
            error = "redirects are not followed: register the final URL"
        gone = status == 410
        next_at = None if ok or gone else self._next_at(n, retry_after)
        return Outcome(n, status, error, latency, excerpt, ok, next_at, gone), unreachable


__all__ = ["SCHEDULE_S", "Sender", "retry_after_s"]
