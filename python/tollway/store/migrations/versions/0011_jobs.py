"""Jobs: model calls and thread turns run in the background, durably (tollway.jobs).

Revision ID: 0011_jobs
Revises: 0010_events

- ``jobs``: one row per job: what to run (endpoint, body), its status, the money held for
  it, the worker's lease, the result or error (written once), a thread job's turn marker,
  the delivery of its result to ``webhook_url`` (its signing
  secret and schedule of attempts), and ``batch_id`` / ``custom_id`` for the native batch APIs to come.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_jobs"
down_revision = "0010_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(80), nullable=False),
        sa.Column("thread_id", sa.String(40), nullable=True),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("webhook_secret", sa.String(80), nullable=True),
        sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_next_at", sa.BigInteger, nullable=True),
        sa.Column("webhook_delivered_at", sa.BigInteger, nullable=True),
        sa.Column("webhook_status", sa.Integer, nullable=True),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("hold_micros", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("turn_attempt", sa.Integer, nullable=True),
        sa.Column("turn_message_id", sa.String(40), nullable=True),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("custom_id", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_idempotency"),
    )
    op.create_index("ix_jobs_status_seq", "jobs", ["status", "seq"])
    op.create_index("ix_jobs_account_seq", "jobs", ["account_id", "seq"])
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"])
    op.create_index("ix_jobs_webhook_next", "jobs", ["webhook_next_at"])


def downgrade() -> None:
    op.drop_table("jobs")
