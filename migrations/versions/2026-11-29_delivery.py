"""hardened outbound delivery: endpoints, sinks, response bodies, webhook secret rotation

Revision ID: 0005_delivery
Revises: 0004_integrations
Create Date: 2026-11-29 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_delivery"
down_revision: str | None = "0004_integrations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_webhook_endpoints_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("api_key_id", "url", name=op.f("uq_webhook_endpoints_api_key_id_url")),
    )
    # Every event already in the outbox gets the endpoint its (key, url) names.
    op.execute(
        "INSERT INTO webhook_endpoints (id, api_key_id, url, created_at) "
        "SELECT gen_random_uuid(), api_key_id, url, min(created_at) "
        "FROM webhook_events GROUP BY api_key_id, url"
    )
    op.add_column("webhook_events", sa.Column("endpoint_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE webhook_events e SET endpoint_id = p.id FROM webhook_endpoints p "
        "WHERE p.api_key_id = e.api_key_id AND p.url = e.url"
    )
    op.alter_column("webhook_events", "endpoint_id", nullable=False)
    op.create_foreign_key(
        op.f("fk_webhook_events_endpoint_id_webhook_endpoints"),
        "webhook_events",
        "webhook_endpoints",
        ["endpoint_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.add_column(
        "webhook_events",
        sa.Column("sink", sa.String(length=20), server_default="webhook", nullable=False),
    )
    op.add_column("webhook_events", sa.Column("integration_id", sa.Uuid(), nullable=True))
    op.add_column(
        "webhook_events",
        sa.Column("schedule_offset", sa.Integer(), server_default="0", nullable=False),
    )
    op.alter_column("webhook_events", "batch_id", existing_type=sa.Uuid(), nullable=True)
    op.create_index(op.f("ix_webhook_events_endpoint_id"), "webhook_events", ["endpoint_id"])
    op.create_index(op.f("ix_webhook_events_integration_id"), "webhook_events", ["integration_id"])
    op.create_index(
        op.f("ix_webhook_events_api_key_id_created_at"),
        "webhook_events",
        ["api_key_id", "created_at"],
    )
    op.add_column("webhook_attempts", sa.Column("response_body", sa.Text(), nullable=True))
    op.add_column(
        "api_keys", sa.Column("previous_webhook_secret", sa.String(length=100), nullable=True)
    )
    op.add_column(
        "api_keys",
        sa.Column("previous_webhook_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "previous_webhook_secret_expires_at")
    op.drop_column("api_keys", "previous_webhook_secret")
    op.drop_column("webhook_attempts", "response_body")
    op.drop_index(op.f("ix_webhook_events_api_key_id_created_at"), table_name="webhook_events")
    op.drop_index(op.f("ix_webhook_events_integration_id"), table_name="webhook_events")
    op.drop_index(op.f("ix_webhook_events_endpoint_id"), table_name="webhook_events")
    # Events without a batch (endpoint.disabled, integration events) cannot go back.
    op.execute("DELETE FROM webhook_events WHERE batch_id IS NULL")
    op.alter_column("webhook_events", "batch_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_column("webhook_events", "schedule_offset")
    op.drop_column("webhook_events", "integration_id")
    op.drop_column("webhook_events", "sink")
    op.drop_constraint(
        op.f("fk_webhook_events_endpoint_id_webhook_endpoints"),
        "webhook_events",
        type_="foreignkey",
    )
    op.drop_column("webhook_events", "endpoint_id")
    op.drop_table("webhook_endpoints")
