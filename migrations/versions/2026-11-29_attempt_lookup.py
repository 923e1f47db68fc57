"""attempts remember a create that may have reached the provider, and say when they resumed it

Revision ID: 0003_attempt_lookup
Revises: 0002
Create Date: 2026-11-29 02:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_attempt_lookup"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "job_attempts",
        sa.Column("unconfirmed_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("job_attempts", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_attempts", "note")
    op.drop_column("job_attempts", "unconfirmed_since")
