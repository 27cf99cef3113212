"""Account events delivered as Standard Webhooks (tollway.events).

Revision ID: 0010_events
Revises: 0009_rollup_zones

- ``webhook_endpoints``: an account's endpoints (url, subscribed types, the signing secret
  and the previous one during a rotation, disabled and why, the sender's lease).
- ``events``: the outbox, written in the transaction of the change that caused each event
  (``id`` msg_... is the webhook-id; ``dedup_key`` unique: "once per window" events).
- ``event_deliveries``: one per event and subscribed endpoint (state, attempts, next attempt).
- ``event_attempts``: every attempt (status, latency, a response excerpt).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_events"
down_revision = "0009_rollup_zones"
branch_labels = None
depends_on = None


def _seq() -> sa.Column:
    return sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("disabled_reason", sa.String(300), nullable=True),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("previous_secret", sa.String(100), nullable=True),
        sa.Column("previous_secret_until", sa.BigInteger, nullable=True),
        sa.Column("failing_since", sa.BigInteger, nullable=True),
        sa.Column("claimed_until", sa.BigInteger, nullable=True),
        sa.Column("claimed_by", sa.String(40), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_webhook_endpoints_account", "webhook_endpoints", ["account_id", "seq"])
    op.create_table(
        "events",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_events_dedup", "events", ["dedup_key"], unique=True)
    op.create_index("ix_events_account", "events", ["account_id", "seq"])
    op.create_table(
        "event_deliveries",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_event_deliveries_endpoint_event"),
    )
    op.create_index("ix_event_deliveries_due", "event_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_event_deliveries_endpoint", "event_deliveries", ["endpoint_id", "seq"])
    op.create_table(
        "event_attempts",
        _seq(),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("response_excerpt", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_event_attempts_delivery", "event_attempts", ["delivery_id", "seq"])


def downgrade() -> None:
    for table in ("event_attempts", "event_deliveries", "events", "webhook_endpoints"):
        op.drop_table(table)
