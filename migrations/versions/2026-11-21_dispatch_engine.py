"""dispatch engine: batch priority and budget, provider handles and usage on jobs and attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:11:49.260564
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "batches",
        sa.Column(
            "priority",
            sa.Enum("realtime", "bulk", name="priority", native_enum=False, length=20),
            server_default="bulk",
            nullable=False,
        ),
    )
    op.add_column(
        "batches", sa.Column("budget_usd", sa.Numeric(precision=12, scale=6), nullable=True)
    )
    op.add_column(
        "batches",
        sa.Column(
            "reserved_usd", sa.Numeric(precision=12, scale=6), server_default="0", nullable=False
        ),
    )
    op.add_column("job_attempts", sa.Column("remote_id", sa.String(length=200), nullable=True))
    op.add_column(
        "job_attempts", sa.Column("usage", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column("jobs", sa.Column("tries", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("current_attempt", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("provider", sa.String(length=100), nullable=True))
    op.add_column("jobs", sa.Column("remote_id", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_jobs_remote_id"), "jobs", ["remote_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_remote_id"), table_name="jobs")
    op.drop_column("jobs", "submitted_at")
    op.drop_column("jobs", "remote_id")
    op.drop_column("jobs", "provider")
    op.drop_column("jobs", "current_attempt")
    op.drop_column("jobs", "tries")
    op.drop_column("job_attempts", "usage")
    op.drop_column("job_attempts", "remote_id")
    op.drop_column("batches", "reserved_usd")
    op.drop_column("batches", "budget_usd")
    op.drop_column("batches", "priority")
