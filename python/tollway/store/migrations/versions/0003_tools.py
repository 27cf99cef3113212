"""Webhook tools: registered per account, called by the gateway when a model uses them.

Revision ID: 0003_tools
Revises: 0002_threads
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_tools"
down_revision = "0002_threads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tools",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("input_schema", sa.JSON, nullable=False),
        sa.Column("webhook_url", sa.Text, nullable=False),
        sa.Column("timeout_ms", sa.Integer, nullable=False),
        sa.Column("signing_secret", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_tools_account_name"),
    )
    op.create_index("ix_tools_account_seq", "tools", ["account_id", "seq"])


def downgrade() -> None:
    op.drop_table("tools")
