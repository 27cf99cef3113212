"""The outbox: ``emit`` writes an event, and its deliveries, in the caller's transaction.

An event is a row of ``events`` (id ``msg_...``, the ``webhook-id`` every delivery of it
carries, on every retry) holding the exact JSON body sent: ``{"type", "timestamp", "data"}``
(``timestamp`` ISO 8601 UTC). ``emit`` also writes one ``event_deliveries`` row per enabled
endpoint of the account subscribed to the type (or to ``"*"``), due at once; the sender
(tollway.events.sender) delivers them after the transaction commits. A rolled-back change
leaves no event; a committed one is delivered at least once, across restarts.

``dedup_key``: at most one event per key, ever (a unique column, written with ON CONFLICT
DO NOTHING so the caller's transaction is not aborted): "the first refused request of a
key per window" is ``emit(..., dedup_key=f"key.cap_exceeded:{key}:{window_start}")``.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from typing import Any, Optional

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tollway.store import now_ms
from tollway.store.schema import event_deliveries, events, webhook_endpoints

# Every type an endpoint may subscribe to ("*": all of them).
EVENT_TYPES = (
    "key.cap_exceeded",
    "key.cap_warning",
    "key.revoked",
    "key.rotated",
    "key.expiring",
    "wallet.low_balance",
    "wallet.topup.succeeded",
    "wallet.topup.failed",
    "job.succeeded",
    "job.failed",
    "batch.completed",
)
TEST_EVENT_TYPE = "webhook.test"  # POST /v1/webhook-endpoints/:id/test (to that endpoint only)


def new_event_id() -> str:
    return "msg_" + secrets.token_hex(12)


def new_delivery_id() -> str:
    return "evd_" + secrets.token_hex(12)


def event_body(type_: str, data: dict[str, Any], at_ms: int) -> str:
    stamp = _dt.datetime.fromtimestamp(at_ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds")
    return json.dumps(
        {"type": type_, "timestamp": stamp.replace("+00:00", "Z"), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )


def subscribed(types: list[str], type_: str) -> bool:
    return "*" in types or type_ in types


def _insert_ignoring_duplicate(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert the event; False when its dedup_key is taken (without aborting the transaction)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(events).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(events).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    else:  # pragma: no cover - the two databases the gateway runs on
        if conn.execute(select(events.c.id).where(events.c.dedup_key == values["dedup_key"])).first():
            return False
        stmt = insert(events).values(**values)
    return conn.execute(stmt.returning(events.c.id)).first() is not None


def emit(
    conn: Connection,
    account_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    dedup_key: Optional[str] = None,
    endpoint_id: Optional[str] = None,
    at_ms: Optional[int] = None,
) -> Optional[str]:
    """Write the event ``type_`` with ``data`` for ``account_id`` in ``conn``'s transaction
    and a delivery to each enabled endpoint subscribed to it; return the event id (None when
    ``dedup_key`` was used before). ``endpoint_id``: to that endpoint only, subscribed or
    not (the test event). ``ValueError`` for an unknown type or data that is not JSON."""
    if type_ not in EVENT_TYPES and type_ != TEST_EVENT_TYPE:
        raise ValueError(f"unknown event type {type_!r}")
    now = now_ms() if at_ms is None else at_ms
    event_id = new_event_id()
    values = {
        "id": event_id,
        "account_id": account_id,
        "type": type_,
        "body": event_body(type_, data, now),
        "dedup_key": dedup_key,
        "created_at": now,
    }
    if dedup_key is not None:
        if not _insert_ignoring_duplicate(conn, values):
            return None
    else:
        conn.execute(insert(events).values(**values))
    query = select(webhook_endpoints.c.id, webhook_endpoints.c.events).where(
        webhook_endpoints.c.account_id == account_id, webhook_endpoints.c.disabled.is_(False)
    )
    if endpoint_id is not None:
        query = query.where(webhook_endpoints.c.id == endpoint_id)
    targets = [row.id for row in conn.execute(query) if endpoint_id is not None or subscribed(row.events, type_)]
    if targets:
        conn.execute(
            insert(event_deliveries),
            [
                {
                    "id": new_delivery_id(),
                    "endpoint_id": target,
                    "event_id": event_id,
                    "account_id": account_id,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for target in targets
            ],
        )
    return event_id


__all__ = ["EVENT_TYPES", "TEST_EVENT_TYPE", "emit", "event_body", "new_event_id", "subscribed"]
