"""providers seam: stored provider handles, queue positions, video outputs, chained jobs

Revision ID: 0006_provider_handles
Revises: 0005_delivery
Create Date: 2026-11-29 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_provider_handles"
down_revision: str | None = "0005_delivery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("remote_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column("jobs", sa.Column("queue_position", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("parent_id", sa.Uuid(), nullable=True))
    op.add_column("jobs", sa.Column("output_duration_s", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("output_frames", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_jobs_parent_id"), "jobs", ["parent_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_jobs_parent_id_jobs"), "jobs", "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_jobs_parent_id_jobs"), "jobs", type_="foreignkey")
    op.drop_index(op.f("ix_jobs_parent_id"), table_name="jobs")
    op.drop_column("jobs", "output_frames")
    op.drop_column("jobs", "output_duration_s")
    op.drop_column("jobs", "parent_id")
    op.drop_column("jobs", "queue_position")
    op.drop_column("jobs", "remote_data")
