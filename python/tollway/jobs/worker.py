"""The workers: claim a job with a lease, keep it with a heartbeat, run it through the call
path (tollway.calls), record its end once.

Each attempt's call carries the request id ``<job id>.<attempt>`` (on its usage event), so
a crashed attempt's event and its retry's are told apart. What is exactly-once and what is
at-least-once: README, "Jobs".
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import Counter
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Optional

import orjson

from tollway.background import cancel_task
from tollway.errors import http_error_body
from tollway.http.core import HTTPError, Response, StreamResponse
from tollway.jobs.delivery import Deliveries
from tollway.jobs.engine import JobEngine
from tollway.jobs.estimate import target_of
from tollway.jobs.store import Claim, JobStore
from tollway.outbound import OutboundSettings
from tollway.policy.service import PREPAID, Prepaid
from tollway.store import now_ms

if TYPE_CHECKING:
    from tollway.calls import Calls

log = logging.getLogger("tollway.jobs")

# (job id, attempt, thread id) while a thread job's turn runs: its append marks the job (see routes.py).
CURRENT_TURN: ContextVar[Optional[tuple[str, int, str]]] = ContextVar("tollway_job_turn", default=None)
SWEEP_EVERY_S = 1.0
PURGE_EVERY_S = 60.0


def attempt_request_id(job_id: str, attempt: int) -> str:
    return f"{job_id}.{attempt}"


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"error": {"message": body.decode("utf-8", "replace")[:2000], "type": "upstream_error"}}


class Workers:
    def __init__(self, engine: JobEngine, calls: "Calls", outbound: OutboundSettings) -> None:
        self.engine = engine
        self.store: JobStore = engine.store
        self.calls = calls
        self.settings = engine.settings
        self.process = f"{os.getpid()}-{secrets.token_hex(4)}"  # never the same as a dead gateway's
        self.per_key: Counter[str] = Counter()
        self.claiming = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []
        self.stopping = False
        self.deliveries = Deliveries(self.store.db, self.settings.webhook_backoff, outbound)

    def start(self) -> None:
        for i in range(self.settings.workers):
            self.tasks.append(asyncio.create_task(self._loop(f"{self.process}/{i}")))
        self.tasks.append(asyncio.create_task(self._sweep()))
        self.tasks.append(
            asyncio.create_task(self.deliveries.run(self.settings.poll_interval, self.engine.ended_wakeup))
        )

    async def stop(self, timeout: float) -> None:
        """Claim nothing more; let the attempts running finish (bounded), then stop them: a
        stopped attempt's job is run again by the next gateway."""
        self.stopping = self.deliveries.stopping = True
        running = list(self.engine.running.values())
        if running:
            await asyncio.wait(running, timeout=timeout)
        await asyncio.gather(*(cancel_task(task) for task in self.tasks))
        await self.deliveries.aclose()

    async def _loop(self, worker: str) -> None:
        lease_ms = int(self.settings.lease * 1000)
        while not self.stopping:
            try:
                async with self.claiming:  # one claim at a time: the per-key count is exact
                    full = [k for k, n in self.per_key.items() if n >= self.settings.per_key_concurrency]
                    claim = await asyncio.to_thread(self.store.claim, worker, lease_ms, full)
                    if claim is not None:
                        self.per_key[claim.job.key_id] += 1
            except Exception:
                log.exception("jobs: could not claim a job")
                claim = None
            if claim is None:
                await self._idle()
                continue
            try:
                await self._run(claim)
            except Exception:
                log.exception("jobs: job %s failed in its worker", claim.job.id)
            finally:
                self.per_key[claim.job.key_id] -= 1
                if self.per_key[claim.job.key_id] <= 0:
                    del self.per_key[claim.job.key_id]

    async def _idle(self) -> None:
        """Until a job is submitted, or ``poll_interval`` (a lapsed lease, an expiry to notice)."""
        wakeup = self.engine.wakeup
        try:
            async with asyncio.timeout(self.settings.poll_interval):  # (not wait_for: it can swallow a cancel)
                await wakeup.wait()
        except TimeoutError:
            return
        wakeup.clear()  # every idle worker has woken: each looks once, the first finds the job

    async def _run(self, claim: Claim) -> None:
        job = claim.job
        attempt = asyncio.create_task(self._attempt(claim))
        self.engine.running[job.id] = attempt
        beat = asyncio.create_task(self._heartbeat(claim, attempt))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            if not attempt.done():  # the worker itself is stopped (shutdown): stop its attempt too
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
                raise
        finally:
            beat.cancel()
            if self.engine.running.get(job.id) is attempt:
                del self.engine.running[job.id]

    async def _heartbeat(self, claim: Claim, attempt: asyncio.Task) -> None:
        lease_ms = int(self.settings.lease * 1000)
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            try:
                kept = await asyncio.to_thread(self.store.heartbeat, claim, lease_ms)
            except Exception:
                log.exception("jobs: heartbeat of %s failed", claim.job.id)
                continue
            if not kept:  # cancelled, expired or taken over: stop spending on it
                attempt.cancel()
                return

    async def _attempt(self, claim: Claim) -> None:
        job = claim.job
        request_id = attempt_request_id(job.id, claim.attempt)
        prepaid = Prepaid(self.engine.take_hold(job.id))
        token = PREPAID.set(prepaid)
        turn = CURRENT_TURN.set((job.id, claim.attempt, job.thread_id) if job.thread_id else None)
        try:
            status, code, result, error = await self._outcome(claim, request_id)
        except HTTPError as exc:
            if exc.code in ("rate_limit_exceeded", "thread_busy"):
                # The key's rate limit, or another turn of the thread running: not the job's
                # failure. Back in the queue after a pause, still holding its money.
                self.engine.put_hold(job.id, prepaid.take())
                await asyncio.sleep(min(5.0, self.settings.poll_interval * 5))
                await asyncio.to_thread(self.store.release_claim, claim)
                return
            shape = target_of(job.endpoint).error_shape
            status, code, result, error = "failed", exc.status, None, orjson.loads(http_error_body(shape, exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault of ours (a database error): the job fails, once, with a 500
            log.exception("jobs: attempt %s failed", request_id)
            shape = target_of(job.endpoint).error_shape
            error = orjson.loads(http_error_body(shape, HTTPError(500, f"the job's call failed: {type(exc).__name__}")))
            status, code, result = "failed", 500, None
        finally:
            PREPAID.reset(token)
            CURRENT_TURN.reset(turn)
            left = prepaid.take()
            if left is not None:  # the call never took its hold (refused before it held money)
                left.release()
        done = await asyncio.to_thread(
            self.store.complete, claim, status, code, result, error, request_id, self.engine.ended
        )
        if done:
            self.engine.ended_wakeup.set()
        else:
            log.info("jobs: attempt %s ended after its job was cancelled or taken over; not recorded", request_id)

    async def _outcome(self, claim: Claim, request_id: str) -> tuple[str, int, Any, Any]:
        """(status, HTTP status, result, error) of one attempt."""
        job = claim.job
        target = target_of(job.endpoint)
        if target.thread_id is not None:
            if job.turn_attempt is not None and job.turn_attempt != claim.attempt:
                return await self._stored_turn(job.turn_message_id)
            body = dict(job.body)
            content = body.pop("content", None)
            response = await self.calls.turn(job.key_id, target.thread_id, content, request_id, **body)
        elif target.shape == "openai_responses":
            response = await self.calls.responses(job.key_id, job.body, request_id)
        else:
            response = await self.calls.model(job.key_id, job.body, target.shape, request_id)
        if isinstance(response, StreamResponse):  # (a job's body cannot ask for one)
            response.close()
            raise HTTPError(400, "a job's call cannot stream", param="stream")
        assert isinstance(response, Response)
        if 200 <= response.status < 300:
            return "succeeded", response.status, _json(response.body), None
        return "failed", response.status, None, _json(response.body)

    async def _stored_turn(self, message_id: Optional[str]) -> tuple[str, int, Any, Any]:
        """The turn an earlier attempt stored (it crashed before recording the job's end)."""
        reply = await asyncio.to_thread(self.store.stored_reply, message_id) if message_id else None
        if reply is not None and reply["stop_reason"] != "tool_use":
            return "succeeded", 200, reply, None
        raise HTTPError(
            500,
            "an earlier attempt of this job stored part of its turn (a tool loop) and was interrupted; "
            "the turn is not run twice",
            code="job_interrupted",
        )

    async def _sweep(self) -> None:
        """Expire the jobs past their time (their holds released) and purge those past retention."""
        purged_at = 0.0
        loop = asyncio.get_running_loop()
        while not self.stopping:
            try:
                self.engine.expired(await asyncio.to_thread(self.store.expire, now_ms()))
                if loop.time() - purged_at >= min(PURGE_EVERY_S, self.settings.retention):
                    purged_at = loop.time()
                    await asyncio.to_thread(self.store.purge, now_ms() - int(self.settings.retention * 1000))
            except Exception:
                log.exception("jobs: the sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)
