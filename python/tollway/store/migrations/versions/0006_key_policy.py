"""Key policy: period windows, rate limits, allowed models, expiry, rotation, credit, tags.

Revision ID: 0006_key_policy
Revises: 0005_search

- ``accounts.timezone``: the IANA zone the account's day/week/month windows follow (NULL = UTC).
- ``api_keys``: ``limits`` (periodic spend windows), ``rate_limits``, ``model_limits``,
  ``allowed_models``, ``tags``, ``expires_at``, ``disabled`` and the previous secret's
  hash with the end of its grace period (rotation).
- ``usage_events.started_at``: when the call took its hold; a call is charged to the
  windows it started in. Rows from before get their ``created_at``.
- ``key_credits``: credit granted to a key (its total limit or one window's).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_key_policy"
down_revision = "0005_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("limits", sa.JSON, nullable=True))
        batch.add_column(sa.Column("rate_limits", sa.JSON, nullable=True))
        batch.add_column(sa.Column("model_limits", sa.JSON, nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.JSON, nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("previous_secret_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", sa.BigInteger, nullable=True))
    op.create_index("ix_api_keys_previous_secret", "api_keys", ["previous_secret_hash"])
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("started_at", sa.BigInteger, nullable=True))
    op.execute("UPDATE usage_events SET started_at = created_at")
    op.create_index("ix_usage_key_started", "usage_events", ["key_id", "started_at"])
    op.create_table(
        "key_credits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=True),
        sa.Column("granted_by", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_key_credits_idempotency"),
    )
    op.create_index("ix_key_credits_key", "key_credits", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_key_credits_key", table_name="key_credits")
    op.drop_table("key_credits")
    op.drop_index("ix_usage_key_started", table_name="usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("started_at")
    op.drop_index("ix_api_keys_previous_secret", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "previous_secret_until", "previous_secret_hash", "disabled", "expires_at", "tags",
            "allowed_models", "model_limits", "rate_limits", "limits",
        ):  # fmt: skip
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("timezone")
