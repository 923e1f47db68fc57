from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin, utcnow


class CatchUp(enum.StrEnum):
    """What a schedule does with due times missed while nothing ran: one batch for the
    most recent of them (`once`), or none (`skip`). Never one per missed due time."""

    once = "once"
    skip = "skip"


class RunStatus(enum.StrEnum):
    submitted = "submitted"  # its batch was created
    failed = "failed"  # the stored batch body no longer submits (a model left the config)
    skipped = "skipped"  # missed while nothing ran, and the schedule skips missed runs


class Schedule(IdMixin, TimestampMixin, Base):
    """A batch body submitted at every due time of a cron expression, in a timezone."""

    __tablename__ = "schedules"
    __table_args__ = (Index(None, "api_key_id", "created_at", "id"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    # The POST /v1/batches body, as given (validated again at every run).
    batch: Mapped[dict[str, Any]] = mapped_column(JSONB)
    enabled: Mapped[bool]
    catch_up: Mapped[CatchUp] = mapped_column(
        Enum(CatchUp, name="catch_up", native_enum=False, length=10)
    )
    # The next due time, in UTC; NULL while disabled. The tick looks only at this index.
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    # The due time of the last run made (submitted, failed or skipped).
    last_run_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(IdMixin, TimestampMixin, Base):
    """One due time of a schedule. The unique (schedule, due time) pair, inserted in the
    transaction that creates the batch, is what makes each due time one batch."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "due_at"),)

    schedule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    due_at: Mapped[datetime]
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, name="schedule_run_status", native_enum=False, length=20)
    )
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL"), index=True
    )
    error: Mapped[str | None] = mapped_column(Text)


class ScheduleClock(Base):
    """When the schedule ticks last ran, one row: what tells a due time missed while
    nothing ran (catch_up "skip") from one merely waiting in a tick's backlog.

    `beat_at` is the latest instant a tick was seen working; `alive_since` the start of
    the current unbroken run of ticks (a gap between beats longer than the tolerance
    starts a new one). A due time is missed when it fell due more than the grace before
    `alive_since`: the ticks were down then, not busy."""

    __tablename__ = "schedule_clock"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    alive_since: Mapped[datetime]
    beat_at: Mapped[datetime]
