from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin


class JobAttempt(IdMixin, Base):
    """One try at a job: which provider, how long, and how it ended."""

    __tablename__ = "job_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number"),
        # GET /v1/usage: spend over a time range.
        Index(None, "finished_at"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int]
    provider: Mapped[str] = mapped_column(String(100))
    # The model this attempt ran (a fallback moves a job to another model: each hop is
    # an attempt of its own). Null only on attempts made before models were recorded.
    model: Mapped[str | None] = mapped_column(String(200))
    # What this attempt cost: a succeeded one its output's cost, a failed one what the
    # provider charges for it (service.catalog.pricing). The job's cost is their sum.
    cost_usd: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), default=Decimal(0), server_default="0"
    )
    # The estimate this attempt reserved against budgets, and the budget ledgers it
    # reserved it in (service.budgets): released or settled against exactly those.
    reserved: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # succeeded | failed | retry | rate_limited (429: not counted) | cancelled |
    # abandoned (the worker running it died)
    outcome: Mapped[str | None] = mapped_column(String(20))
    # The provider's handle for an asynchronous generation (a Replicate prediction id).
    remote_id: Mapped[str | None] = mapped_column(String(200))
    # What the provider reported it used (OpenAI's token usage, Replicate's predict_time).
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    http_status: Mapped[int | None]
    latency_ms: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    # This attempt's create may have reached the provider although no handle came back
    # (a reset or timeout after sending, a 5xx): predictions made from here on may be
    # its. The next attempt looks for one at the provider before it sends again.
    unconfirmed_since: Mapped[datetime | None]
    # What an operator should know that the outcome does not say (this attempt resumed
    # a generation an earlier one had made, rather than sending a new request).
    note: Mapped[str | None] = mapped_column(Text)
