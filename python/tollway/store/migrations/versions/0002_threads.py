"""Threads: server-side conversations and their messages.

Revision ID: 0002_threads
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_threads"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("end_user_id", sa.String(200), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("system", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_threads_account_seq", "threads", ["account_id", "seq"])
    op.create_index("ix_threads_account_end_user_seq", "threads", ["account_id", "end_user_id", "seq"])
    op.create_table(
        "thread_messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column(
            "thread_id",
            sa.String(40),
            sa.ForeignKey("threads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("usage", sa.JSON, nullable=True),
        sa.Column("stop_reason", sa.String(40), nullable=True),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_thread_messages_thread_seq", "thread_messages", ["thread_id", "seq"])


def downgrade() -> None:
    op.drop_table("thread_messages")
    op.drop_table("threads")
