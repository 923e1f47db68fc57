from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin, utcnow


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_JOB_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE_JOB_STATUSES = frozenset({JobStatus.queued, JobStatus.running})


class Job(IdMixin, TimestampMixin, Base):
    """One image to make. `params` holds the resolved width, height, format, seed and
    output file name, so a job never depends on defaults that change later."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("batch_id", "index"),
        Index(None, "batch_id", "status"),
        # The reconciler's scan: active jobs nobody has touched for a while.
        Index(
            "ix_jobs_active_updated_at",
            "updated_at",
            postgresql_where="status IN ('queued', 'running')",
        ),
    )

    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    index: Mapped[int]
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=20),
        default=JobStatus.queued,
    )
    prompt: Mapped[str] = mapped_column(Text)
    # The model the job runs on now: the one asked for, the route's choice, or the
    # fallback it moved to.
    model: Mapped[str] = mapped_column(String(200))
    # The route the job named instead of a model, if it did (params["routing"] says which
    # candidate it chose and why).
    route: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    # A templated job's row: the variables its prompt and output name were rendered
    # from (a CSV row's columns that are not job fields: sku, name, ...).
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Attempts that count against the model's max_attempts (a 429 never does); reset by
    # POST /v1/batches/{id}/retry. `tries` numbers every attempt row, 429s included.
    attempts: Mapped[int] = mapped_column(default=0)
    tries: Mapped[int] = mapped_column(default=0, server_default="0")
    # The attempt that owns the job while it runs: a worker presumed dead that comes back
    # finds another number here and lets go.
    current_attempt: Mapped[int | None]
    # Provider account that ran the latest attempt, and, for asynchronous providers, the
    # handle of the generation there (a Replicate prediction id). Once stored, the job is
    # never submitted again for this attempt: it resumes by polling.
    provider: Mapped[str | None] = mapped_column(String(100))
    remote_id: Mapped[str | None] = mapped_column(String(200), index=True)
    # What the provider said about the generation when it was submitted (status URLs, the
    # model path): handed back to every poll and cancel. Small JSON, the provider's own.
    remote_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Where the generation waits in the provider's queue (fal), while it does.
    queue_position: Mapped[int | None]
    # A chained job takes this job's output as its input: it waits, without a slot,
    # until the parent has succeeded, and fails with parent_failed if it does not.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    submitted_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    output_key: Mapped[str | None] = mapped_column(String(1000))
    output_content_type: Mapped[str | None] = mapped_column(String(100))
    output_width: Mapped[int | None]
    output_height: Mapped[int | None]
    output_bytes: Mapped[int | None]
    output_duration_s: Mapped[float | None]
    output_frames: Mapped[int | None]
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    # What the job cost: the sum of its attempts' costs (service.catalog.pricing).
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
