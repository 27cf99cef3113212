"""Usage rollups in the account's time zone, and per month.

Revision ID: 0009_rollup_zones
Revises: 0008_wallet

The day rows become the account's calendar days in its ``accounts.timezone`` (they were UTC
days); month rows (span_ms 2592000000, hence BIGINT) and hour and day rows summed over models
(span_ms 3600001, 86400001) are added; all of it is recomputed
from the events here, in the migration's transaction (tollway.ledger.rollups: from then on
the usage writer keeps it in step, ``PATCH /v1/account`` recomputes an account's rows when
its zone changes, ``tollway usage rebuild`` recomputes everything).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_rollup_zones"
down_revision = "0008_wallet"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from tollway.ledger import rollups  # the current definition of the rows: the head's

    bind = op.get_bind()
    if bind.dialect.name != "sqlite":  # SQLite's INTEGER is 64 bits already
        op.alter_column("usage_rollups", "span_ms", type_=sa.BigInteger, existing_nullable=False)
    op.execute("DELETE FROM usage_rollups")
    rollups.refill(bind)


def downgrade() -> None:
    from tollway.ledger import rollups

    op.execute(f"DELETE FROM usage_rollups WHERE span_ms <> {rollups.HOUR}")
    op.execute(
        "INSERT INTO usage_rollups (account_id, span_ms, bucket_ms, key_id, model, request_count, cost_micros, "
        "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, latency_ms) "
        f"SELECT account_id, {rollups.DAY}, created_at - created_at % {rollups.DAY}, key_id, model, COUNT(*), "
        "SUM(cost_micros), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), "
        f"SUM(latency_ms) FROM usage_events GROUP BY account_id, created_at - created_at % {rollups.DAY}, key_id, model"
    )
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("usage_rollups", "span_ms", type_=sa.Integer, existing_nullable=False)
