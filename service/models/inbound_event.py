from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, utcnow


class Verdict(enum.StrEnum):
    """What became of a verified delivery. A duplicate is not a row of its own: it is
    answered with the first delivery's row."""

    accepted = "accepted"  # a job was made
    ignored = "ignored"  # not an event the integration acts on
    failed = "failed"  # the template could not be rendered (or the job not made): `reason`


class InboundEvent(Base):
    """One verified webhook delivery, kept for the user to inspect: headers without
    secrets, the body up to 256 KB, what Darkroom did with it."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("integration_id", "dedupe_key"),
        Index(None, "integration_id", "received_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "evt_<hex>"
    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE")
    )
    # The CMS's own event or entity id plus revision: a retried delivery has the same key.
    dedupe_key: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[Verdict] = mapped_column(
        Enum(Verdict, name="inbound_verdict", native_enum=False, length=20)
    )
    reason: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    body: Mapped[Any] = mapped_column(JSONB)
    # What a write-back needs to find the article again (Article.ref).
    ref: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # The template variables it was read into (all but `raw`, which is the body): what a
    # write-back renders, kept even when the body was too large to keep.
    variables: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    writeback_status: Mapped[str | None] = mapped_column(String(20))
    writeback_error: Mapped[str | None] = mapped_column(Text)
    writeback_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
