"""Persistence: SQLAlchemy 2 (SQLite by default, PostgreSQL for scale) with Alembic migrations."""

from tollway.store.db import Database, now_ms
from tollway.store.schema import (
    accounts,
    api_keys,
    batches,
    billing_cursors,
    billing_invoice_items,
    files,
    jobs,
    key_credits,
    metadata,
    thread_messages,
    threads,
    tools,
    usage_events,
    wallet_entries,
    wallets,
)

__all__ = [
    "Database",
    "accounts",
    "api_keys",
    "batches",
    "billing_cursors",
    "billing_invoice_items",
    "files",
    "jobs",
    "key_credits",
    "metadata",
    "now_ms",
    "thread_messages",
    "threads",
    "tools",
    "usage_events",
    "wallet_entries",
    "wallets",
]
