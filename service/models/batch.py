from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class BatchStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    partially_failed = "partially_failed"
    cancelled = "cancelled"


FINAL_BATCH_STATUSES = frozenset(
    {BatchStatus.succeeded, BatchStatus.failed, BatchStatus.partially_failed, BatchStatus.cancelled}
)


class Priority(enum.StrEnum):
    """Realtime work (a CMS article waiting for its cover) is dispatched before bulk work."""

    realtime = "realtime"
    bulk = "bulk"


class Batch(IdMixin, TimestampMixin, Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("api_key_id", "idempotency_key"),
        Index(None, "api_key_id", "created_at", "id"),
    )

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[BatchStatus] = mapped_column(
        Enum(BatchStatus, name="batch_status", native_enum=False, length=20),
        default=BatchStatus.queued,
    )
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    job_count: Mapped[int]
    priority: Mapped[Priority] = mapped_column(
        Enum(Priority, name="priority", native_enum=False, length=20),
        default=Priority.bulk,
        server_default=Priority.bulk.value,
    )
    # Dispatch stops before the estimated spend would pass this; `reserved_usd` is the
    # spend of succeeded jobs plus the estimate of running ones.
    budget_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    reserved_usd: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), default=Decimal(0), server_default="0"
    )
    cancel_requested_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # The prompt templates the batch's jobs were rendered from (their text, and the
    # stored template's name@version when one was named), by template name.
    templates: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Apprise URLs told the batch summary at completion. Secrets: never logged, never
    # returned by the API (only their scheme is).
    notify: Mapped[list[str] | None] = mapped_column(JSONB)
    # The CMS integration whose webhook made this batch, if one did.
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("integrations.id", ondelete="SET NULL"), index=True
    )
