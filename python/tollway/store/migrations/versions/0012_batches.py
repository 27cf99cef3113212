"""Batches: the native batch APIs (Anthropic Message Batches, OpenAI Batch) on the jobs engine.

Revision ID: 0012_batches
Revises: 0011_jobs

- ``files``: uploaded files (purpose ``batch``: a batch's JSONL input, its content here) and
  the output / error files of OpenAI-shaped batches (no content: built from the jobs).
- ``batches``: one row per batch; its lines are jobs (``jobs.batch_id``), its end recorded
  once (``ended_at``, the final ``counts``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_batches"
down_revision = "0011_jobs"
branch_labels = None
depends_on = None


def _seq() -> sa.Column:
    return sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "files",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(8), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_files_account_seq", "files", ["account_id", "seq"])
    op.create_table(
        "batches",
        _seq(),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(80), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=True),
        sa.Column("completion_window", sa.String(8), nullable=True),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("cancel_initiated_at", sa.BigInteger, nullable=True),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("counts", sa.JSON, nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
    )
    op.create_index("ix_batches_account_seq", "batches", ["account_id", "seq"])
    op.create_index("ix_batches_open", "batches", ["ended_at"])


def downgrade() -> None:
    op.drop_table("batches")
    op.drop_table("files")
