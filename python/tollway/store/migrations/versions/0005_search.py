"""Search: the indexing queue, the chunks (text and scope), lexical entries and index generations.

Revision ID: 0005_search
Revises: 0004_usage_event_id

Every message stored before this revision is queued, so the index covers them too.
Lexical entries: SQLite FTS5 (contentless, secure-delete: an erased chunk leaves no
term behind), PostgreSQL a generated tsvector with a GIN index; both hold the chunk's
scope tokens (``search.text.scope_tokens``) beside its words, so that a scoped match
is an intersection inside the index rather than a filter over every account's matches. Vectors live in the
tables the vector index creates for each generation (tollway.search.vectors).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_search"
down_revision = "0004_usage_event_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column(
            "message_seq",
            sa.BigInteger,
            sa.ForeignKey("thread_messages.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("thread_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_search_queue_thread_id", "search_queue", ["thread_id"])
    op.create_table(
        "search_chunks",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("thread_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("scope", sa.String(210), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tokens", sa.String(80), nullable=False),
    )
    op.create_index("ix_search_chunks_scope_time", "search_chunks", ["account_id", "scope", "created_at"])
    op.create_index("ix_search_chunks_account_time", "search_chunks", ["account_id", "created_at"])
    op.create_index("ix_search_chunks_thread", "search_chunks", ["thread_id"])
    op.create_table(
        "search_spaces",
        sa.Column("space", sa.String(20), primary_key=True),
        sa.Column("embedder", sa.String(300), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("backend", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("built_upto", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("completed_at", sa.BigInteger, nullable=True),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE search_fts USING fts5(text, scope, content='', contentless_delete=1, "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        op.execute("INSERT INTO search_fts(search_fts, rank) VALUES ('secure-delete', 1)")
    else:
        op.execute(
            "ALTER TABLE search_chunks ADD COLUMN tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', tokens) || to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_search_chunks_tsv ON search_chunks USING gin (tsv)")
    op.execute(
        "INSERT INTO search_queue (message_seq, thread_id, created_at) "
        "SELECT seq, thread_id, created_at FROM thread_messages ORDER BY seq"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE search_fts")
    op.drop_table("search_spaces")
    op.drop_table("search_chunks")
    op.drop_table("search_queue")
