"""The prepaid wallet (an append-only ledger of entries per account, and its balance), and
the state of the usage exports to Stripe.

Revision ID: 0008_wallet
Revises: 0007_usage_rollups

- ``wallets``: one row per account that has a wallet: the balance (the sum of its
  entries, kept in the same transactions), auto-recharge settings, the Stripe customer
  and saved payment method, consecutive recharge failures.
- ``wallet_entries``: top-ups, debits (one per priced usage event, unique on it),
  refunds and adjustments, each with its cause; a Stripe event credits once (unique).
- ``billing_cursors``: the last usage event sent to Stripe as a meter event.
- ``billing_invoice_items``: the InvoiceItem made for a key and period (one per pair).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_wallet"
down_revision = "0007_usage_rollups"
branch_labels = None
depends_on = None


def _id_column() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("account_id", sa.String(40), primary_key=True),
        sa.Column("balance_micros", sa.BigInteger, nullable=False),
        sa.Column("auto_recharge", sa.JSON, nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("payment_method_id", sa.String(255), nullable=True),
        sa.Column("recharge_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wallet_entries",
        _id_column(),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("cause", sa.String(500), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("usage_event_id", sa.String(40), nullable=True),
        sa.Column("stripe_object_id", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_wallet_entries_idempotency"),
    )
    op.create_index("ix_wallet_entries_account", "wallet_entries", ["account_id", "id"])
    op.create_index("ux_wallet_entries_event", "wallet_entries", ["usage_event_id"], unique=True)
    op.create_index("ux_wallet_entries_stripe_event", "wallet_entries", ["stripe_event_id"], unique=True)

    op.create_table(
        "billing_cursors",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("last_usage_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "billing_invoice_items",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("period_end", sa.BigInteger, nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("invoice_item_id", sa.String(255), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("key_id", "period_start", "period_end", name="uq_billing_invoice_items_period"),
    )


def downgrade() -> None:
    op.drop_table("billing_invoice_items")
    op.drop_table("billing_cursors")
    op.drop_table("wallet_entries")
    op.drop_table("wallets")
