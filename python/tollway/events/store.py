"""Webhook endpoints and their deliveries log, in the database (synchronous; call from a
worker thread). Every query is scoped by account: another account's endpoint is not found.

The signing secret is stored in clear, as the tools' are (tollway.tools.store): the gateway
signs every delivery with it. It is returned on create and on rotation only. During a
rotation the previous secret signs too, until ``previous_secret_until``.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import delete, insert, select, update

from tollway.events.outbox import TEST_EVENT_TYPE, emit
from tollway.keys.secrets import new_id
from tollway.store import Database, now_ms
from tollway.store.schema import event_attempts, event_deliveries, events, webhook_endpoints
from tollway.tools.store import generate_signing_secret

DEFAULT_ROTATION_GRACE_MS = 24 * 3600 * 1000


def endpoint_view(row: Any, now: Optional[int] = None) -> dict[str, Any]:
    now = now_ms() if now is None else now
    rotating = row.previous_secret is not None and (row.previous_secret_until or 0) > now
    return {
        "id": row.id,
        "object": "webhook_endpoint",
        "url": row.url,
        "description": row.description,
        "events": list(row.events),
        "disabled": bool(row.disabled),
        "disabled_reason": row.disabled_reason,
        "previous_secret_expires_at": row.previous_secret_until if rotating else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def signing_secrets(row: Any, now: int) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous during a rotation."""
    out = [row.secret]
    if row.previous_secret and (row.previous_secret_until or 0) > now:
        out.append(row.previous_secret)
    return out


class EndpointStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, account_id: str, url: str, types: list[str], description: str) -> tuple[dict[str, Any], str]:
        now = now_ms()
        secret = generate_signing_secret()
        endpoint_id = new_id("ep_")
        with self.db.engine.begin() as conn:
            conn.execute(
                insert(webhook_endpoints).values(
                    id=endpoint_id,
                    account_id=account_id,
                    url=url,
                    description=description,
                    events=types,
                    disabled=False,
                    secret=secret,
                    created_at=now,
                    updated_at=now,
                )
            )
        found = self.get(account_id, endpoint_id)
        assert found is not None
        return found, secret

    def _row(self, conn: Any, account_id: str, endpoint_id: str) -> Any:
        return conn.execute(
            select(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.account_id == account_id
            )
        ).first()

    def get(self, account_id: str, endpoint_id: str) -> Optional[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            row = self._row(conn, account_id, endpoint_id)
        return endpoint_view(row) if row else None

    def list(self, account_id: str, limit: int, after: Optional[str]) -> tuple[list[dict[str, Any]], bool]:
        """Oldest first; ``after``: an endpoint id of the account (else ValueError)."""
        with self.db.engine.connect() as conn:
            query = select(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id)
            if after is not None:
                cursor = conn.execute(
                    select(webhook_endpoints.c.seq).where(
                        webhook_endpoints.c.id == after, webhook_endpoints.c.account_id == account_id
                    )
                ).scalar()
                if cursor is None:
                    raise ValueError(f"unknown cursor: no webhook endpoint {after!r} in this listing")
                query = query.where(webhook_endpoints.c.seq > cursor)
            rows = conn.execute(query.order_by(webhook_endpoints.c.seq).limit(limit + 1)).all()
        return [endpoint_view(r) for r in rows[:limit]], len(rows) > limit

    def update(
        self,
        account_id: str,
        endpoint_id: str,
        changes: dict[str, Any],
        *,
        rotate_secret: bool = False,
        grace_ms: int = DEFAULT_ROTATION_GRACE_MS,
    ) -> Optional[tuple[dict[str, Any], Optional[str]]]:
        """Apply ``changes`` (url, description, events, disabled); re-enabling clears the
        reason and the failure streak. With ``rotate_secret`` a new secret (returned), the
        current one signing too for ``grace_ms``. None when the account has no such endpoint."""
        now = now_ms()
        secret = None
        with self.db.engine.begin() as conn:
            row = self._row(conn, account_id, endpoint_id)
            if row is None:
                return None
            values = dict(changes)
            if values.get("disabled") is False:
                values.update(disabled_reason=None, failing_since=None)
            elif values.get("disabled") is True and not row.disabled:
                values["disabled_reason"] = "disabled by an admin"
            if rotate_secret:
                secret = generate_signing_secret()
                values.update(
                    secret=secret,
                    previous_secret=row.secret if grace_ms > 0 else None,
                    previous_secret_until=now + grace_ms if grace_ms > 0 else None,
                )
            values["updated_at"] = now
            conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**values))
            row = self._row(conn, account_id, endpoint_id)
        return endpoint_view(row, now), secret

    def delete(self, account_id: str, endpoint_id: str) -> bool:
        with self.db.engine.begin() as conn:
            gone = conn.execute(
                delete(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.account_id == account_id
                )
            ).rowcount
            if gone:
                ids = select(event_deliveries.c.id).where(event_deliveries.c.endpoint_id == endpoint_id)
                conn.execute(delete(event_attempts).where(event_attempts.c.delivery_id.in_(ids)))
                conn.execute(delete(event_deliveries).where(event_deliveries.c.endpoint_id == endpoint_id))
        return gone == 1

    def deliveries(
        self, account_id: str, endpoint_id: str, limit: int, after: Optional[str]
    ) -> Optional[tuple[list[dict[str, Any]], bool]]:
        """The endpoint's deliveries, newest first, each with its attempts (oldest first).
        None when the account has no such endpoint; ValueError for an unknown cursor."""
        with self.db.engine.connect() as conn:
            if self._row(conn, account_id, endpoint_id) is None:
                return None
            query = (
                select(event_deliveries, events.c.type)
                .join(events, events.c.id == event_deliveries.c.event_id)
                .where(event_deliveries.c.endpoint_id == endpoint_id)
            )
            if after is not None:
                cursor = conn.execute(
                    select(event_deliveries.c.seq).where(
                        event_deliveries.c.id == after, event_deliveries.c.endpoint_id == endpoint_id
                    )
                ).scalar()
                if cursor is None:
                    raise ValueError(f"unknown cursor: no delivery {after!r} of this endpoint")
                query = query.where(event_deliveries.c.seq < cursor)
            rows = conn.execute(query.order_by(event_deliveries.c.seq.desc()).limit(limit + 1)).all()
            ids = [r.id for r in rows[:limit]]
            tries: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                for a in conn.execute(
                    select(event_attempts).where(event_attempts.c.delivery_id.in_(ids)).order_by(event_attempts.c.seq)
                ):
                    tries[a.delivery_id].append(
                        {
                            "attempt": a.n,
                            "status": a.status,
                            "error": a.error,
                            "latency_ms": a.latency_ms,
                            "response_excerpt": a.response_excerpt,
                            "attempted_at": a.created_at,
                            "next_attempt_at": a.next_attempt_at,
                        }
                    )
        data = [
            {
                "id": r.id,
                "object": "webhook_delivery",
                "event_id": r.event_id,
                "event_type": r.type,
                "state": r.state,
                "attempt_count": r.attempts,
                "next_attempt_at": r.next_attempt_at,
                "last_status": r.last_status,
                "created_at": r.created_at,
                "attempts": tries[r.id],
            }
            for r in rows[:limit]
        ]
        return data, len(rows) > limit

    def redeliver(self, account_id: str, endpoint_id: str, delivery_id: str) -> Optional[str]:
        """Queue the delivery again, due now (same event, same webhook-id). None when not found;
        the delivery's state before otherwise."""
        now = now_ms()
        with self.db.engine.begin() as conn:
            if self._row(conn, account_id, endpoint_id) is None:
                return None
            row = conn.execute(
                select(event_deliveries.c.state).where(
                    event_deliveries.c.id == delivery_id, event_deliveries.c.endpoint_id == endpoint_id
                )
            ).first()
            if row is None:
                return None
            conn.execute(
                update(event_deliveries)
                .where(event_deliveries.c.id == delivery_id)
                .values(state="pending", next_attempt_at=now, updated_at=now)
            )
        return row.state

    def send_test(self, account_id: str, endpoint_id: str) -> Optional[tuple[str, str]]:
        """A ``webhook.test`` event to this endpoint only: (event id, delivery id), or None."""
        with self.db.engine.begin() as conn:
            row = self._row(conn, account_id, endpoint_id)
            if row is None:
                return None
            event_id = emit(
                conn,
                account_id,
                TEST_EVENT_TYPE,
                {"endpoint_id": endpoint_id, "message": "a test event from Tollway"},
                endpoint_id=endpoint_id,
            )
            assert event_id is not None
            delivery = conn.execute(
                select(event_deliveries.c.id).where(
                    event_deliveries.c.event_id == event_id, event_deliveries.c.endpoint_id == endpoint_id
                )
            ).scalar()
        return event_id, delivery
