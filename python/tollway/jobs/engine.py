"""The jobs engine, callable from Python (routes, and the native batch APIs to come):
``submit``, ``get``, ``page``, ``cancel``; and the holds of queued jobs.

Money: a job holds its worst case (the same hold a synchronous call would take: input
estimate + max_tokens, priced, lowered to what the key can afford) from submission, 402
when the key cannot afford it. The hold lives in the ledger beside every call's, so it
counts against the key's cap, windows and wallet at once; it is released on cancel and
expiry, and handed to the job's call when it runs (``tollway.policy.service.Prepaid``:
released in the same synchronous step as the call takes its own hold, which then
settles to the actual cost). Holds live in memory: at start ``load`` takes them again
for every queued or running job in the table, before the workers (or any client) run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from sqlalchemy import Connection

from tollway.http.core import HTTPError
from tollway.jobs.config import JobSettings
from tollway.jobs.estimate import Target, estimate, target_of
from tollway.jobs.store import ACTIVE, Job, JobStore
from tollway.keys import ApiKey
from tollway.keys.secrets import new_id
from tollway.ledger import HoldLike, Ledger
from tollway.policy.caps import worst_case
from tollway.store import now_ms
from tollway.tools.store import generate_signing_secret

if TYPE_CHECKING:
    from tollway.keys.auth import Authenticator
    from tollway.policy.service import Policy
    from tollway.proxy.handler import Proxy
    from tollway.threads.turns import ThreadTurns

log = logging.getLogger("tollway.jobs")

JobEnded = Callable[[Connection, Job], None]


def not_found(job_id: str) -> HTTPError:
    return HTTPError(404, f"no job {job_id!r}", code="job_not_found", param="job_id")


def _row(
    job_id: str,
    key: ApiKey,
    target: Target,
    body: dict[str, Any],
    hold: HoldLike,
    now: int,
    expires_at: int,
    **columns: Any,
) -> dict[str, Any]:
    """A queued job's row (``columns``: webhook, metadata, batch ones; the others default)."""
    return {
        "id": job_id, "account_id": key.account_id, "key_id": key.id, "endpoint": target.endpoint,
        "thread_id": target.thread_id, "body": body, "status": "queued", "webhook_attempts": 0,
        "hold_micros": hold.micros, "attempts": 0, "created_at": now, "expires_at": expires_at, **columns,
    }  # fmt: skip


class JobEngine:
    def __init__(
        self,
        settings: JobSettings,
        store: JobStore,
        auth: "Authenticator",
        policy: "Policy",
        ledger: Ledger,
        proxy: "Proxy",
        turns: "ThreadTurns",
    ) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.policy = policy
        self.ledger = ledger
        self.proxy = proxy
        self.turns = turns
        self.holds: dict[str, HoldLike] = {}  # job id -> the money held for it (queued, or running not yet called)
        self.running: dict[str, asyncio.Task] = {}  # job id -> its attempt in this process
        # Run in the transaction that ends a job (succeeded / failed), with the job as ended:
        # account events (tollway.events) emit ``job.succeeded`` / ``job.failed`` here.
        self.on_ended: list[JobEnded] = []
        self.wakeup = asyncio.Event()  # set by a submission: idle workers look at once
        self.ended_wakeup = asyncio.Event()  # set when a job ends here: its webhook is due

    # ---- the Python API -------------------------------------------------------------
    async def submit(
        self,
        key: ApiKey,
        endpoint: str,
        body: dict[str, Any],
        *,
        metadata: Optional[dict[str, Any]] = None,
        webhook_url: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        batch_id: Optional[str] = None,
        custom_id: Optional[str] = None,
        expires_after: Optional[float] = None,
    ) -> tuple[Job, bool]:
        """Queue a job (its money held, 402 if the key cannot afford it); (job, created). A
        known ``idempotency_key`` of this key gives that job back (created False), nothing held.
        With a ``webhook_url``, its end is POSTed there, signed with ``job.webhook_secret``."""
        target = target_of(endpoint)
        if not isinstance(body, dict):
            raise HTTPError(400, "'body' must be a JSON object: the synchronous call's body", param="body")
        if idempotency_key is not None:
            found = await asyncio.to_thread(self.store.by_idempotency, key.id, idempotency_key)
            if found is not None:
                return found, False
        planned = await estimate(self.proxy, self.turns, key, target, body)
        decision = self.policy.hold(
            key, planned.route, planned.input_tokens, planned.max_tokens, planned.min_output_tokens
        )  # 402 here: nothing queued
        now = now_ms()
        job_id = new_id("job_")
        # Before the row exists: a worker that claims it at once finds its hold.
        self.holds[job_id] = decision.hold
        values = _row(
            job_id, key, target, body, decision.hold, now, now + int(1000 * (expires_after or self.settings.expires_after)),
            webhook_url=webhook_url, webhook_secret=generate_signing_secret() if webhook_url is not None else None,
            metadata=metadata, batch_id=batch_id, custom_id=custom_id,
        )  # fmt: skip
        try:
            job, created = await asyncio.to_thread(self.store.insert, values, idempotency_key)
        except BaseException:
            self._release(job_id)
            raise
        if not created:
            self._release(job_id)
        else:
            self.wakeup.set()
        return job, created

    async def submit_many(
        self,
        key: ApiKey,
        lines: Sequence[tuple[str, dict[str, Any], str]],
        *,
        batch_id: str,
        label: Callable[[int], str],
        then: Callable[[Connection], None],
        expires_after: Optional[float] = None,
    ) -> list[str]:
        """Queue one job per ``(endpoint, body, custom_id)`` line of a batch, all or none; their ids.

        Every line is checked and estimated first (its 400/403/404 raised as a 400 named
        ``label(index)``, nothing held); then every line's worst case is held in full (no
        clamping) in one synchronous step, so nothing else takes the money in between (402
        for the first line the key cannot afford: every hold of the batch released); then
        every job is inserted in one transaction, with ``then(conn)`` (the batch's row)."""
        planned = []
        for index, (endpoint, body, _) in enumerate(lines):
            try:
                if not isinstance(body, dict):
                    raise HTTPError(400, "the request's body must be a JSON object", param="body")
                planned.append(await estimate(self.proxy, self.turns, key, target_of(endpoint), body))
            except HTTPError as exc:
                raise HTTPError(400, f"{label(index)}: {exc.message}", code=exc.code, param=exc.param) from None
        budgets = self.auth.budgets.budget_ids(key, self.policy.clock())
        held: list[HoldLike] = []
        for plan in planned:
            _, want = worst_case(plan.route, plan.input_tokens, plan.max_tokens)  # in full: a batch is never clamped
            hold = self.ledger.reserve_all(budgets, want, want)
            if isinstance(hold, str):
                for taken in held:
                    taken.release()
                total = sum(h.micros for h in held) + want
                error = self.policy.refusal(hold, total)
                if error is not None:
                    raise error
                spent, reserved, cap = self.ledger.snapshot(hold)
                raise HTTPError(
                    402,
                    f"this API key cannot afford the whole batch under its {self.policy.explain(key, hold)} (limit "
                    f"{cap} micro-USD, spent {spent}, held by requests in flight {reserved}; the batch's first "
                    f"{len(held) + 1} requests alone need {total}); nothing was queued",
                    code="spend_cap_reached",
                )
            held.append(hold)
        now = now_ms()
        expires_at = now + int(1000 * (expires_after or self.settings.expires_after))
        rows = []
        for (endpoint, body, custom_id), hold in zip(lines, held, strict=True):
            job_id = new_id("job_")
            self.holds[job_id] = hold  # before the rows exist: a worker that claims one finds its hold
            rows.append(
                _row(
                    job_id,
                    key,
                    target_of(endpoint),
                    body,
                    hold,
                    now,
                    expires_at,
                    batch_id=batch_id,
                    custom_id=custom_id,
                )
            )
        try:
            await asyncio.to_thread(self.store.insert_many, rows, then)
        except BaseException:
            for row in rows:
                self._release(row["id"])
            raise
        self.wakeup.set()
        return [row["id"] for row in rows]

    async def get(self, key: ApiKey, job_id: str) -> Job:
        """The job, if ``key`` may see it (its own; an admin key: the account's), else 404."""
        job = await asyncio.to_thread(self.store.get, job_id) if isinstance(job_id, str) and len(job_id) <= 40 else None
        if job is None or job.account_id != key.account_id or (not key.is_admin and job.key_id != key.id):
            raise not_found(job_id)
        return job

    async def page(
        self,
        key: ApiKey,
        status: Optional[str] = None,
        limit: int = 20,
        after: Optional[str] = None,
        batch_id: Optional[str] = None,
    ) -> tuple[list[Job], bool]:
        own = None if key.is_admin else key.id
        return await asyncio.to_thread(self.store.page, key.account_id, own, status, limit, after, batch_id)

    async def cancel(self, key: ApiKey, job_id: str) -> Job:
        """Cancel a queued or running job (its hold released; a running call is stopped and
        billed for what it did). A job that has ended already is given back as it is."""
        job = await self.get(key, job_id)
        if job.status in ACTIVE:
            before = await asyncio.to_thread(self.store.cancel, job.id)
            if before is not None:
                self._release(job.id)
                task = self.running.get(job.id)
                if task is not None:
                    task.cancel()
                self.ended_wakeup.set()
            job = await self.get(key, job_id)
        return job

    # ---- holds ----------------------------------------------------------------------
    def _release(self, job_id: str) -> None:
        hold = self.holds.pop(job_id, None)
        if hold is not None:
            hold.release()

    def take_hold(self, job_id: str) -> Optional[HoldLike]:
        return self.holds.pop(job_id, None)

    def put_hold(self, job_id: str, hold: Optional[HoldLike]) -> None:
        if hold is not None:
            self.holds[job_id] = hold

    async def load(self) -> None:
        """At start (the journal replayed, the keys' budgets rebuilt, nothing served yet): every
        running job's lease lapses (its gateway is gone), and every queued or running job holds
        its money again (as much of it as the key still has: a crash may have billed holds)."""
        lapsed = await asyncio.to_thread(self.store.lapse_leases)
        active = await asyncio.to_thread(self.store.active)
        for job in active:
            try:
                key = await self.auth.key_by_id(job.key_id)
            except HTTPError:
                continue  # revoked or expired: its run fails with the same 401 a call would get
            budgets = self.auth.budgets.budget_ids(key, self.policy.clock())
            hold = self.ledger.reserve_all(budgets, 0, job.hold_micros)
            if not isinstance(hold, str):
                self.holds[job.id] = hold
        if active:
            log.info("jobs: %d queued or running at start (%d to run again)", len(active), lapsed)

    async def cancel_batch(self, batch_id: str) -> int:
        """Cancel the queued jobs of a batch (their holds released); running ones finish. How many."""
        ids = await asyncio.to_thread(self.store.cancel_queued, batch_id)
        for job_id in ids:
            self._release(job_id)
        if ids:
            self.ended_wakeup.set()
        return len(ids)

    def expired(self, ids: list[str]) -> None:
        for job_id in ids:
            self._release(job_id)
        if ids:
            self.ended_wakeup.set()

    def ended(self, conn: Connection, job: Job) -> None:
        for hook in self.on_ended:
            hook(conn, job)


__all__ = ["JobEngine", "Target", "not_found"]
