"""pipelines: stored prompt templates, a batch's templates and notify URLs, a job's row

Revision ID: 0009_pipelines
Revises: 0008_model_registry
Create Date: 2026-11-29 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_pipelines"
down_revision: str | None = "0008_model_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prompt_templates",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("output_name", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_prompt_templates_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_templates")),
        sa.UniqueConstraint(
            "api_key_id",
            "name",
            "version",
            name=op.f("uq_prompt_templates_api_key_id_name_version"),
        ),
    )
    op.add_column(
        "batches", sa.Column("templates", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column(
        "batches", sa.Column("notify", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column(
        "jobs", sa.Column("variables", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("jobs", "variables")
    op.drop_column("batches", "notify")
    op.drop_column("batches", "templates")
    op.drop_table("prompt_templates")
