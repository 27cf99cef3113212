"""The jobs table: submission (idempotent), reads, claims with a lease, and the one write of each end.

Every change of a job's status is one conditional UPDATE, so a job ends once whatever
runs twice: ``complete`` only ends the attempt that holds the claim (``claimed_by`` and
``attempts`` both match, status still ``running``); ``cancel`` and ``expire`` only end a
job not ended yet. Claims: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` then the
UPDATE in the same transaction; on SQLite (one writer at a time) one ``UPDATE ... WHERE
seq = (SELECT ...) RETURNING``. A claim takes a queued job or one whose lease lapsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from sqlalchemy import Connection, and_, case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tollway.store import Database, jobs, now_ms, thread_messages

ACTIVE = ("queued", "running")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")


@dataclass(slots=True)
class Job:
    id: str
    seq: int
    account_id: str
    key_id: str
    endpoint: str
    thread_id: Optional[str]
    body: dict[str, Any]
    status: str
    webhook_url: Optional[str]
    webhook_secret: Optional[str]
    webhook_attempts: int
    webhook_next_at: Optional[int]
    webhook_delivered_at: Optional[int]
    webhook_status: Optional[int]
    metadata: Optional[dict[str, Any]]
    hold_micros: int
    attempts: int
    claimed_by: Optional[str]
    lease_until: Optional[int]
    request_id: Optional[str]
    status_code: Optional[int]
    result: Any
    error: Any
    turn_attempt: Optional[int]
    turn_message_id: Optional[str]
    batch_id: Optional[str]
    custom_id: Optional[str]
    created_at: int
    started_at: Optional[int]
    finished_at: Optional[int]
    expires_at: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "Job":
        return cls(**{name: row[name] for name in cls.__slots__})

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "job",
            "endpoint": self.endpoint,
            "status": self.status,
            "key_id": self.key_id,
            "metadata": self.metadata,
            "webhook_url": self.webhook_url,
            "webhook": None
            if self.webhook_url is None
            else {
                "attempts": self.webhook_attempts,
                "delivered_at": self.webhook_delivered_at,
                "last_status": self.webhook_status,
            },
            "attempts": self.attempts,
            "status_code": self.status_code,
            "result": self.result,
            "error": self.error,
            "held_micros": self.hold_micros if self.status in ACTIVE else 0,
            "batch_id": self.batch_id,
            "custom_id": self.custom_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
        }


@dataclass(slots=True)
class Claim:
    job: Job
    worker: str
    attempt: int


def deliver_from(now: int) -> Any:
    """``webhook_next_at`` for a job ending at ``now``: due at once when it has a webhook."""
    return case((jobs.c.webhook_url.is_not(None), now), else_=None)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- submission and reads ------------------------------------------------
    def insert(self, values: dict[str, Any], idempotency_key: Optional[str]) -> tuple[Job, bool]:
        """Insert a queued job; (the job, True). With an ``idempotency_key`` the key already
        used: (that job, False), nothing written."""
        if idempotency_key is not None:
            found = self.by_idempotency(values["key_id"], idempotency_key)
            if found is not None:
                return found, False
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(jobs).values(**values, idempotency_key=idempotency_key))
        except IntegrityError:
            found = self.by_idempotency(values["key_id"], idempotency_key) if idempotency_key is not None else None
            if found is None:
                raise
            return found, False  # a concurrent submission with the same key won
        job = self.get(values["id"])
        assert job is not None
        return job, True

    def insert_many(self, rows: list[dict[str, Any]], then: Callable[[Connection], None]) -> None:
        """Insert queued jobs (a batch's lines) in one transaction with ``then(conn)``."""
        with self.db.engine.begin() as conn:
            conn.execute(insert(jobs), [{**row, "idempotency_key": None} for row in rows])
            then(conn)

    def by_idempotency(self, key_id: str, idempotency_key: str) -> Optional[Job]:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.key_id == key_id, jobs.c.idempotency_key == idempotency_key)
            ).first()
        return Job.of(row._mapping) if row is not None else None

    def get(self, job_id: str) -> Optional[Job]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return Job.of(row._mapping) if row is not None else None

    def page(
        self,
        account_id: str,
        key_id: Optional[str],
        status: Optional[str],
        limit: int,
        after: Optional[str],
        batch_id: Optional[str] = None,
    ) -> tuple[list[Job], bool]:
        """Newest first; ``after``: the last id of the previous page (None if it is not there)."""
        query = select(jobs).where(jobs.c.account_id == account_id)
        if key_id is not None:
            query = query.where(jobs.c.key_id == key_id)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if batch_id is not None:
            query = query.where(jobs.c.batch_id == batch_id)
        with self.db.engine.connect() as conn:
            if after is not None:
                seq = conn.execute(
                    select(jobs.c.seq).where(jobs.c.id == after, jobs.c.account_id == account_id)
                ).scalar()
                if seq is None:
                    return [], False
                query = query.where(jobs.c.seq < seq)
            rows = conn.execute(query.order_by(jobs.c.seq.desc()).limit(limit + 1)).all()
        found = [Job.of(r._mapping) for r in rows]
        return found[:limit], len(found) > limit

    def active(self) -> list[Job]:
        """Every queued or running job (their holds are rebuilt from these at start)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.status.in_(ACTIVE)).order_by(jobs.c.seq)).all()
        return [Job.of(r._mapping) for r in rows]

    def stored_reply(self, message_id: str) -> Optional[dict[str, Any]]:
        """A thread job's stored reply, as the turn's route answered it."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(thread_messages).where(thread_messages.c.id == message_id)).first()
        if row is None:
            return None
        m = row._mapping
        return {
            "id": m["id"],
            "object": "thread.message",
            "thread_id": m["thread_id"],
            "role": m["role"],
            "content": m["content"],
            "model": m["model"],
            "usage": m["usage"],
            "stop_reason": m["stop_reason"],
            "metadata": None,
            "created_at": m["created_at"],
            "context": (m["metadata"] or {}).get("context"),
        }

    # ---- leases ------------------------------------------------------------------
    def claim(self, worker: str, lease_ms: int, exclude_keys: Sequence[str]) -> Optional[Claim]:
        """Take the oldest job that is queued or whose lease lapsed (not of ``exclude_keys``)."""
        now = now_ms()
        runnable = and_(
            or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_until < now)),
            jobs.c.expires_at > now,
        )
        if exclude_keys:
            runnable = and_(runnable, jobs.c.key_id.not_in(list(exclude_keys)))
        claimed = {
            "status": "running",
            "claimed_by": worker,
            "lease_until": now + lease_ms,
            "attempts": jobs.c.attempts + 1,
        }
        with self.db.engine.connect() as conn:  # a read first: an idle poll writes nothing
            if conn.execute(select(jobs.c.seq).where(runnable).limit(1)).first() is None:
                return None
        with self.db.engine.begin() as conn:
            if self.db.is_sqlite:
                first = select(jobs.c.seq).where(runnable).order_by(jobs.c.seq).limit(1).scalar_subquery()
                row = conn.execute(update(jobs).where(jobs.c.seq == first).values(**claimed).returning(jobs)).first()
            else:
                seq = conn.execute(
                    select(jobs.c.seq).where(runnable).order_by(jobs.c.seq).limit(1).with_for_update(skip_locked=True)
                ).scalar()
                row = None
                if seq is not None:
                    row = conn.execute(update(jobs).where(jobs.c.seq == seq).values(**claimed).returning(jobs)).first()
            if row is None:
                return None
            job = Job.of(row._mapping)
            if job.started_at is None:
                conn.execute(update(jobs).where(jobs.c.seq == job.seq).values(started_at=now))
                job.started_at = now
        return Claim(job, worker, job.attempts)

    def heartbeat(self, claim: Claim, lease_ms: int) -> bool:
        """Extend the lease; False when the claim is no longer this attempt's (cancelled, taken over)."""
        with self.db.engine.begin() as conn:
            return bool(
                conn.execute(update(jobs).where(*self._held(claim)).values(lease_until=now_ms() + lease_ms)).rowcount
            )

    @staticmethod
    def _held(claim: Claim) -> tuple[Any, ...]:
        return (
            jobs.c.id == claim.job.id,
            jobs.c.status == "running",
            jobs.c.claimed_by == claim.worker,
            jobs.c.attempts == claim.attempt,
        )

    def release_claim(self, claim: Claim) -> bool:
        """Put a claimed job back in the queue (its attempt did not run: a rate limit)."""
        with self.db.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(jobs).where(*self._held(claim)).values(status="queued", claimed_by=None, lease_until=None)
                ).rowcount
            )

    def lapse_leases(self) -> int:
        """At start: every running job's lease belongs to a gateway that is gone (one gateway
        per data: tollway.ledger.owner), so it lapses now rather than at its time."""
        with self.db.engine.begin() as conn:
            return conn.execute(update(jobs).where(jobs.c.status == "running").values(lease_until=0)).rowcount

    # ---- ends --------------------------------------------------------------------
    def complete(
        self,
        claim: Claim,
        status: str,
        status_code: int,
        result: Any,
        error: Any,
        request_id: str,
        then: Callable[[Connection, Job], None],
    ) -> bool:
        """End the claimed attempt (succeeded / failed) with its result; ``then(conn, job)`` runs
        in the same transaction (account events). False, nothing written, when the claim was lost."""
        now = now_ms()
        with self.db.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(*self._held(claim))
                .values(
                    status=status,
                    status_code=status_code,
                    result=result,
                    error=error,
                    request_id=request_id,
                    finished_at=now,
                    lease_until=None,
                    webhook_next_at=deliver_from(now),
                )
            ).rowcount
            if not done:
                return False
            job = claim.job
            job.status, job.status_code, job.result, job.error, job.finished_at = (
                status,
                status_code,
                result,
                error,
                now,
            )
            then(conn, job)
        return True

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel a job not ended yet; the status it had (queued / running), or None."""
        now = now_ms()
        with self.db.engine.begin() as conn:
            for before in ACTIVE:
                done = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == before)
                    .values(status="cancelled", finished_at=now, lease_until=None, webhook_next_at=deliver_from(now))
                ).rowcount
                if done:
                    return before
        return None

    def cancel_queued(self, batch_id: str) -> list[str]:
        """Cancel a batch's queued jobs (running ones go on); their ids."""
        now = now_ms()
        queued = and_(jobs.c.batch_id == batch_id, jobs.c.status == "queued")
        with self.db.engine.begin() as conn:  # (a job being claimed meanwhile is running: not cancelled)
            rows = conn.execute(
                update(jobs)
                .where(queued)
                .values(status="cancelled", finished_at=now, webhook_next_at=deliver_from(now))
                .returning(jobs.c.id)
            ).all()
        return [r[0] for r in rows]

    def expire(self, now: int) -> list[str]:
        """Expire the jobs past their ``expires_at`` that no live attempt runs; their ids."""
        stale = and_(
            jobs.c.expires_at <= now,
            or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_until < now)),
        )
        with self.db.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(jobs.c.id).where(stale))]
            if not ids:
                return []
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), stale)
                .values(status="expired", finished_at=now, lease_until=None, webhook_next_at=deliver_from(now))
            )
            # (A claim between the two statements makes its row fail ``stale``: not expired.)
            return [r[0] for r in conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids), jobs.c.status == "expired"))]

    def purge(self, before: int) -> int:
        """Delete the jobs that ended before ``before`` (their retention is over), but for those
        whose webhook still has attempts to make."""
        with self.db.engine.begin() as conn:
            return conn.execute(
                delete(jobs).where(
                    jobs.c.status.not_in(ACTIVE), jobs.c.finished_at < before, jobs.c.webhook_next_at.is_(None)
                )
            ).rowcount

    # ---- a thread job's turn -----------------------------------------------------
    @staticmethod
    def mark_turn(conn: Connection, job_id: str, attempt: int, reply_ids: Iterable[str]) -> bool:
        """In a thread append's transaction: record that ``attempt`` stored this job's turn (and
        its last reply). False when another attempt already stored it (the append must roll back)."""
        values: dict[str, Any] = {"turn_attempt": attempt}
        last = list(reply_ids)
        if last:
            values["turn_message_id"] = last[-1]
        return bool(
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, or_(jobs.c.turn_attempt.is_(None), jobs.c.turn_attempt == attempt))
                .values(**values)
            ).rowcount
        )
