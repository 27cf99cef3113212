"""A job's result delivered to its ``webhook_url``: signed like the tool webhooks
(tollway.webhooks: ``x-tollway-signature``, ``x-tollway-delivery: <job id>``, and as a
Standard Webhook: ``webhook-id: <job id>``, ``webhook-timestamp``, ``webhook-signature``; the
same id on every attempt: dedupe on it), on a schedule of attempts kept in the job's row.
The URL must pass the ``[outbound]`` check (no private address unless allowed; refused: the
attempt fails and is logged), redirects are not followed, the answer's body is not read
(only its status counts) and an attempt lasts at most ``[outbound] timeout``.

The end of a job sets ``webhook_next_at`` in the transaction that ends it, so a delivery is
never lost. Each attempt is claimed by one UPDATE that counts it and moves
``webhook_next_at`` to the next attempt's time *before* the POST: a crash mid-POST never
repeats that attempt early nor skips the next; the schedule runs as planned. An attempt
whose POST reached the receiver before a crash (its 2xx not recorded) is followed by the
next one: the receiver may see a job's result twice, never out of schedule, and dedupes on
the delivery id.

Schedule: at the end, then ``backoff`` seconds after the first attempt, then 6 times
longer each time (default 10 s, 1 min, 6 min, 36 min, 3.6 h), ``MAX_ATTEMPTS`` in all;
a 2xx ends it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import httpx
import orjson
from sqlalchemy import and_, select, update

from tollway.jobs.store import Job
from tollway.outbound import DestinationRefused, OutboundSettings, check_destination
from tollway.store import Database, jobs, now_ms
from tollway.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, sign, standard_headers

log = logging.getLogger("tollway.jobs")

MAX_ATTEMPTS = 6
GROWTH = 6
USER_AGENT = "Tollway-Jobs/1"


def wait_after(attempt: int, backoff: float) -> float:
    """Seconds from attempt ``attempt`` (1-based) to the next."""
    return backoff * GROWTH ** (attempt - 1)


def event_of(job: Job, now: int) -> bytes:
    return orjson.dumps(
        {"id": job.id, "object": "event", "type": f"job.{job.status}", "created_at": now, "data": job.public()}
    )


class Deliveries:
    def __init__(self, db: Database, backoff: float, outbound: OutboundSettings) -> None:
        self.db = db
        self.backoff = backoff
        self.outbound = outbound
        self._client: Optional[httpx.AsyncClient] = None
        self.stopping = False

    def claim(self) -> Optional[tuple[Job, int]]:
        """Take the attempt due first: (the job, the attempt's number), counted and the next
        one scheduled in the same UPDATE; None when nothing is due."""
        now = now_ms()
        due = and_(
            jobs.c.webhook_next_at <= now,
            jobs.c.webhook_delivered_at.is_(None),
            jobs.c.webhook_attempts < MAX_ATTEMPTS,
        )
        with self.db.engine.begin() as conn:
            query = select(jobs).where(due).order_by(jobs.c.webhook_next_at).limit(1)
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return None
            job = Job.of(row._mapping)
            attempt = job.webhook_attempts + 1
            following = now + int(1000 * wait_after(attempt, self.backoff)) if attempt < MAX_ATTEMPTS else None
            claimed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.webhook_attempts == job.webhook_attempts, due)
                .values(webhook_attempts=attempt, webhook_next_at=following)
            ).rowcount
            if not claimed:
                return None
        job.webhook_attempts = attempt
        return job, attempt

    def record(self, job_id: str, attempt: int, status: int, delivered: bool) -> None:
        values: dict[str, Any] = {"webhook_status": status}
        if delivered:
            values.update(webhook_delivered_at=now_ms(), webhook_next_at=None)
        with self.db.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.webhook_attempts == attempt).values(**values))

    async def post(self, job: Job) -> int:
        """One attempt: the HTTP status answered (0: no answer)."""
        assert job.webhook_url is not None and job.webhook_secret is not None
        try:
            await check_destination(job.webhook_url, self.outbound)
        except DestinationRefused as exc:
            log.warning("jobs: webhook of %s not sent: %s", job.id, exc)
            return 0
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.outbound.timeout, headers={"user-agent": USER_AGENT}, follow_redirects=False
            )
        body = event_of(job, now_ms())
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(job.webhook_secret, body),
            DELIVERY_HEADER: job.id,
            **standard_headers(job.webhook_secret, job.id, body),
        }
        try:
            async with asyncio.timeout(self.outbound.timeout):
                request = self._client.build_request("POST", job.webhook_url, content=body, headers=headers)
                response = await self._client.send(request, stream=True)
                await response.aclose()  # only the status counts: nothing of the body is read
        except (httpx.HTTPError, TimeoutError) as exc:
            log.info("jobs: webhook of %s not delivered: %s", job.id, type(exc).__name__)
            return 0
        return response.status_code

    async def run(self, poll_interval: float, ended: asyncio.Event) -> None:
        """Deliver what is due, one at a time, for the gateway's life (looking again every
        ``poll_interval``, or at once when a job ends: ``ended``)."""
        while not self.stopping:
            try:
                claimed = await asyncio.to_thread(self.claim)
                if claimed is None:
                    try:
                        async with asyncio.timeout(poll_interval):  # (not wait_for: it can swallow a cancel)
                            await ended.wait()
                        ended.clear()
                    except TimeoutError:
                        pass
                    continue
                job, attempt = claimed
                status = await self.post(job)
                await asyncio.to_thread(self.record, job.id, attempt, status, 200 <= status < 300)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jobs: a webhook delivery failed")
                await asyncio.sleep(poll_interval)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
