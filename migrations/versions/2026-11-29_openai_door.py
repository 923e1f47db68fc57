"""openai: the OpenAI-compatible door's files and batches

Revision ID: 0011_openai
Revises: 0010_schedules
Create Date: 2026-11-29 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_openai"
down_revision: str | None = "0010_schedules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "openai_files",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_openai_files_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_openai_files")),
    )
    op.create_index(
        op.f("ix_openai_files_api_key_id_created_at_id"),
        "openai_files",
        ["api_key_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "openai_batches",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("input_file_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("completion_window", sa.String(length=20), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("output_file_id", sa.Uuid(), nullable=True),
        sa.Column("error_file_id", sa.Uuid(), nullable=True),
        sa.Column("completed_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_openai_batches_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_openai_batches_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["input_file_id"],
            ["openai_files.id"],
            name=op.f("fk_openai_batches_input_file_id_openai_files"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["output_file_id"],
            ["openai_files.id"],
            name=op.f("fk_openai_batches_output_file_id_openai_files"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["error_file_id"],
            ["openai_files.id"],
            name=op.f("fk_openai_batches_error_file_id_openai_files"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_openai_batches")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_openai_batches_batch_id")),
    )
    op.create_index(
        op.f("ix_openai_batches_api_key_id_created_at_id"),
        "openai_batches",
        ["api_key_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_openai_batches_api_key_id_created_at_id"), table_name="openai_batches")
    op.drop_table("openai_batches")
    op.drop_index(op.f("ix_openai_files_api_key_id_created_at_id"), table_name="openai_files")
    op.drop_table("openai_files")
