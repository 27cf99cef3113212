"""Usage events get a unique event id, so a crash journal's replay never writes one twice.

Revision ID: 0004_usage_event_id
Revises: 0003_tools

Rows written before this revision keep a NULL id (a unique index allows many).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_usage_event_id"
down_revision = "0003_tools"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("event_id", sa.String(40), nullable=True))
    op.create_index("ux_usage_event_id", "usage_events", ["event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_usage_event_id", table_name="usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("event_id")
