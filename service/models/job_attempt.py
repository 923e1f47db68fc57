from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin


class JobAttempt(IdMixin, Base):
    """One try at a job: which provider, how long, and how it ended."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int]
    provider: Mapped[str] = mapped_column(String(100))
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
