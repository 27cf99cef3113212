"""Usage rollups: the sums of usage_events per account, UTC hour / UTC day, key and model.

Revision ID: 0007_usage_rollups
Revises: 0006_key_policy

``usage_rollups`` is filled here from the events already written (in the migration's
transaction); from then on the usage writer keeps it in step (tollway.ledger.rollups),
and ``tollway usage rebuild`` recomputes it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_usage_rollups"
down_revision = "0006_key_policy"
branch_labels = None
depends_on = None

_SUMS = (
    "request_count",
    "cost_micros",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_ms",
)


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("account_id", sa.String(40), primary_key=True),
        sa.Column("span_ms", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("bucket_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in _SUMS),
    )
    for span in (3_600_000, 86_400_000):
        op.execute(
            f"INSERT INTO usage_rollups (account_id, span_ms, bucket_ms, key_id, model, {', '.join(_SUMS)}) "
            f"SELECT account_id, {span}, created_at - created_at % {span}, key_id, model, COUNT(*), "
            "SUM(cost_micros), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
            "SUM(cache_write_tokens), SUM(latency_ms) "
            f"FROM usage_events GROUP BY account_id, created_at - created_at % {span}, key_id, model"
        )


def downgrade() -> None:
    op.drop_table("usage_rollups")
