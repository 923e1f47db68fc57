"""integrations: CMS webhooks in (integrations, inbound_events), batches know their integration

Revision ID: 0004_integrations
Revises: 0003_attempt_lookup
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_integrations"
down_revision: str | None = "0003_attempt_lookup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("events", JSONB, nullable=True),
        sa.Column("inbound", JSONB, nullable=False),
        sa.Column("template", JSONB, nullable=False),
        sa.Column("writeback", JSONB, nullable=True),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("rejected_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_integrations_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
    )
    op.create_index(
        op.f("ix_integrations_api_key_id_created_at_id"),
        "integrations",
        ["api_key_id", "created_at", "id"],
        unique=False,
    )
    op.add_column("batches", sa.Column("integration_id", sa.Uuid(), nullable=True))
    op.create_index(op.f("ix_batches_integration_id"), "batches", ["integration_id"])
    op.create_foreign_key(
        op.f("fk_batches_integration_id_integrations"),
        "batches",
        "integrations",
        ["integration_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_table(
        "inbound_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column(
            "verdict",
            sa.Enum(
                "accepted",
                "ignored",
                "failed",
                name="inbound_verdict",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("ref", JSONB, server_default="{}", nullable=False),
        sa.Column("variables", JSONB, server_default="{}", nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("writeback_status", sa.String(length=20), nullable=True),
        sa.Column("writeback_error", sa.Text(), nullable=True),
        sa.Column("writeback_result", JSONB, nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_inbound_events_batch_id_batches"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_inbound_events_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_inbound_events_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_events")),
        sa.UniqueConstraint(
            "integration_id",
            "dedupe_key",
            name=op.f("uq_inbound_events_integration_id_dedupe_key"),
        ),
    )
    op.create_index(op.f("ix_inbound_events_batch_id"), "inbound_events", ["batch_id"])
    op.create_index(op.f("ix_inbound_events_job_id"), "inbound_events", ["job_id"])
    op.create_index(
        op.f("ix_inbound_events_integration_id_received_at_id"),
        "inbound_events",
        ["integration_id", "received_at", "id"],
    )


def downgrade() -> None:
    op.drop_table("inbound_events")
    op.drop_constraint(
        op.f("fk_batches_integration_id_integrations"), "batches", type_="foreignkey"
    )
    op.drop_index(op.f("ix_batches_integration_id"), table_name="batches")
    op.drop_column("batches", "integration_id")
    op.drop_index(op.f("ix_integrations_api_key_id_created_at_id"), table_name="integrations")
    op.drop_table("integrations")
