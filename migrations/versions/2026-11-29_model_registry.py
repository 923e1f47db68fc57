"""model registry: the model of each attempt, attempt costs and budget reservations,
routes on jobs, key budgets and budget ledgers

Revision ID: 0008_model_registry
Revises: 0007_uploads
Create Date: 2026-11-29 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_model_registry"
down_revision: str | None = "0007_uploads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job_attempts", sa.Column("model", sa.String(length=200), nullable=True))
    op.add_column(
        "job_attempts",
        sa.Column(
            "cost_usd", sa.Numeric(precision=12, scale=6), server_default="0", nullable=False
        ),
    )
    op.add_column(
        "job_attempts",
        sa.Column("reserved", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.create_index(
        op.f("ix_job_attempts_finished_at"), "job_attempts", ["finished_at"], unique=False
    )
    # Attempts made before: their job's model, and the job's cost on its succeeded one.
    op.execute(
        "UPDATE job_attempts a SET model = j.model, "
        "cost_usd = CASE WHEN a.outcome = 'succeeded' THEN j.cost_usd ELSE 0 END "
        "FROM jobs j WHERE j.id = a.job_id"
    )
    op.add_column("jobs", sa.Column("route", sa.String(length=200), nullable=True))
    op.create_table(
        "key_budgets",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("daily_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column("monthly_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column("realtime_daily_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column("realtime_monthly_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_key_budgets_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", name=op.f("pk_key_budgets")),
    )
    op.create_table(
        "budget_ledgers",
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column(
            "reserved_usd", sa.Numeric(precision=14, scale=6), server_default="0", nullable=False
        ),
        sa.PrimaryKeyConstraint("scope", "period_start", name=op.f("pk_budget_ledgers")),
    )


def downgrade() -> None:
    op.drop_table("budget_ledgers")
    op.drop_table("key_budgets")
    op.drop_column("jobs", "route")
    op.drop_index(op.f("ix_job_attempts_finished_at"), table_name="job_attempts")
    op.drop_column("job_attempts", "reserved")
    op.drop_column("job_attempts", "cost_usd")
    op.drop_column("job_attempts", "model")
