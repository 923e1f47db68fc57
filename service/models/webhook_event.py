from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, TimestampMixin


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


WEBHOOK_SINK = "webhook"


class WebhookEvent(TimestampMixin, Base):
    """The outbox: written in the same transaction as the state change it reports,
    delivered afterwards. `id` is the Standard Webhooks `webhook-id` and never changes
    across retries, so receivers can de-duplicate.

    `sink` says how it leaves (`webhook`: a signed POST; `writeback`: into a CMS); the
    attempt log, the schedule and the fairness between endpoints are the same for all."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index(
            "ix_webhook_events_pending_next_attempt_at",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
        ),
        Index(None, "batch_id"),
        Index(None, "integration_id"),
        Index(None, "endpoint_id"),
        Index(None, "api_key_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    sink: Mapped[str] = mapped_column(String(20), default=WEBHOOK_SINK, server_default=WEBHOOK_SINK)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The integration a write-back or integration event belongs to (no foreign key: the
    # integrations table is owned elsewhere).
    integration_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    type: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, name="delivery_status", native_enum=False, length=20),
        default=DeliveryStatus.pending,
    )
    attempts: Mapped[int] = mapped_column(default=0)
    # Attempts made before the current round of the schedule: a redelivery starts a new
    # round, so the event gets the whole schedule again.
    schedule_offset: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    started_at: Mapped[datetime]
    duration_ms: Mapped[int]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    # At most 20 KB of what the receiver answered (sinks.MAX_RESPONSE_BODY_CHARS).
    response_body: Mapped[str | None] = mapped_column(Text)
