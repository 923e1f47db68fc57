"""schedule clock: when the schedule ticks last ran (catch_up "skip" judges misses by it)

Revision ID: 0012_schedule_clock
Revises: 0011_openai
Create Date: 2026-11-29 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_schedule_clock"
down_revision: str | None = "0011_openai"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule_clock",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("alive_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_clock")),
    )


def downgrade() -> None:
    op.drop_table("schedule_clock")
