"""The sender's side of the database: which endpoints have deliveries due, the lease that
keeps one gateway process per endpoint at a time, and the record of each attempt (with
what it changes: the delivery's schedule, the endpoint's failure streak, disabling).

Synchronous; the sender calls these from worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import and_, insert, or_, select, update

from tollway.store import Database
from tollway.store.schema import event_attempts, event_deliveries, events, webhook_endpoints


@dataclass(slots=True)
class Due:
    id: str
    event_id: str
    attempts: int
    body: str


@dataclass(slots=True)
class Outcome:
    """One attempt's result, as recorded."""

    n: int
    status: Optional[int]
    error: Optional[str]
    latency_ms: int
    excerpt: Optional[str]
    ok: bool
    next_attempt_at: Optional[int]  # None: no further attempt (delivered, or given up)
    gone: bool = False  # 410: disable the endpoint


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def due_endpoints(self, now: int, limit: int = 50) -> list[str]:
        e, d = webhook_endpoints, event_deliveries
        query = (
            select(d.c.endpoint_id)
            .join(e, e.c.id == d.c.endpoint_id)
            .where(
                d.c.state == "pending",
                d.c.next_attempt_at <= now,
                e.c.disabled.is_(False),
                or_(e.c.claimed_until.is_(None), e.c.claimed_until < now),
            )
            .group_by(d.c.endpoint_id)
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [row.endpoint_id for row in conn.execute(query)]

    def claim(self, endpoint_id: str, token: str, now: int, until: int) -> Optional[Any]:
        """Take (or renew) the lease on the endpoint; its row when held, None when another
        process holds it or the endpoint is gone or disabled."""
        e = webhook_endpoints
        with self.db.engine.begin() as conn:
            taken = conn.execute(
                update(e)
                .where(
                    e.c.id == endpoint_id,
                    e.c.disabled.is_(False),
                    or_(e.c.claimed_until.is_(None), e.c.claimed_until < now, e.c.claimed_by == token),
                )
                .values(claimed_until=until, claimed_by=token)
            ).rowcount
            if not taken:
                return None
            return conn.execute(select(e).where(e.c.id == endpoint_id)).first()

    def release(self, endpoint_id: str, token: str) -> None:
        e = webhook_endpoints
        with self.db.engine.begin() as conn:
            conn.execute(
                update(e)
                .where(e.c.id == endpoint_id, e.c.claimed_by == token)
                .values(claimed_until=None, claimed_by=None)
            )

    def due(self, endpoint_id: str, now: int, limit: int = 20) -> list[Due]:
        """The endpoint's due deliveries, in the order their events were created.

        While an older delivery waits for its retry after the endpoint could not be reached
        (no HTTP answer), the due ones behind it are not sent: they are put just after it
        (no attempt counted), so that they arrive in order once the endpoint is back."""
        d = event_deliveries
        with self.db.engine.begin() as conn:
            blocker = conn.execute(
                select(d.c.seq, d.c.next_attempt_at)
                .where(
                    d.c.endpoint_id == endpoint_id,
                    d.c.state == "pending",
                    d.c.next_attempt_at > now,
                    d.c.attempts > 0,
                    d.c.last_status.is_(None),
                )
                .order_by(d.c.seq)
                .limit(1)
            ).first()
            rows = conn.execute(
                select(d.c.id, d.c.seq, d.c.event_id, d.c.attempts, events.c.body)
                .join(events, events.c.id == d.c.event_id)
                .where(d.c.endpoint_id == endpoint_id, d.c.state == "pending", d.c.next_attempt_at <= now)
                .order_by(d.c.seq)
                .limit(limit)
            ).all()
            if blocker is not None:
                behind = [r for r in rows if r.seq > blocker.seq]
                for i, r in enumerate(behind):
                    conn.execute(
                        update(d).where(d.c.id == r.id).values(next_attempt_at=blocker.next_attempt_at + 1 + i)
                    )
                rows = [r for r in rows if r.seq < blocker.seq]
        return [Due(r.id, r.event_id, r.attempts, r.body) for r in rows]

    def defer(self, delivery_ids: list[str], at: int) -> None:
        """Put deliveries behind a failed one (the endpoint is unreachable), in their order."""
        with self.db.engine.begin() as conn:
            for i, delivery_id in enumerate(delivery_ids):
                conn.execute(
                    update(event_deliveries)
                    .where(event_deliveries.c.id == delivery_id, event_deliveries.c.state == "pending")
                    .values(next_attempt_at=at + 1 + i)
                )

    def record(
        self, endpoint_id: str, delivery_id: str, outcome: Outcome, now: int, disable_after_ms: int
    ) -> Optional[str]:
        """Write the attempt and its consequences in one transaction; return why the endpoint
        was disabled by it, if it was."""
        d, e = event_deliveries, webhook_endpoints
        disabled: Optional[str] = None
        with self.db.engine.begin() as conn:
            conn.execute(
                insert(event_attempts).values(
                    delivery_id=delivery_id,
                    n=outcome.n,
                    status=outcome.status,
                    error=outcome.error[:500] if outcome.error else None,
                    latency_ms=outcome.latency_ms,
                    response_excerpt=outcome.excerpt,
                    created_at=now,
                    next_attempt_at=outcome.next_attempt_at,
                )
            )
            state = "succeeded" if outcome.ok else ("pending" if outcome.next_attempt_at is not None else "failed")
            conn.execute(
                update(d)
                .where(d.c.id == delivery_id)
                .values(
                    state=state,
                    attempts=outcome.n,
                    next_attempt_at=outcome.next_attempt_at if state == "pending" else None,
                    last_status=outcome.status,
                    updated_at=now,
                )
            )
            if outcome.ok:
                conn.execute(update(e).where(e.c.id == endpoint_id).values(failing_since=None))
                # The endpoint answers again: its backlog is due now (sent in order).
                conn.execute(
                    update(d)
                    .where(and_(d.c.endpoint_id == endpoint_id, d.c.state == "pending", d.c.next_attempt_at > now))
                    .values(next_attempt_at=now)
                )
                return None
            row = conn.execute(select(e.c.failing_since, e.c.disabled).where(e.c.id == endpoint_id)).first()
            if row is None or row.disabled:
                return None
            since = row.failing_since if row.failing_since is not None else now
            if outcome.gone:
                disabled = "the endpoint answered 410 Gone"
            elif now - since >= disable_after_ms:
                disabled = f"every delivery failed for {disable_after_ms / 86_400_000:g} days"
            values: dict[str, Any] = {"failing_since": since}
            if disabled:
                values.update(disabled=True, disabled_reason=disabled, updated_at=now)
            conn.execute(update(e).where(e.c.id == endpoint_id).values(**values))
        return disabled
