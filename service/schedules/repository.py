"""Queries of schedules and their runs."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import (
    ApiKey,
    Batch,
    BatchStatus,
    RunStatus,
    Schedule,
    ScheduleClock,
    ScheduleRun,
)


async def own_schedule(
    session: AsyncSession, api_key_id: uuid.UUID, schedule_id: uuid.UUID, *, for_update: bool
) -> Schedule | None:
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.api_key_id == api_key_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalars().first()


async def list_schedules(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Schedule]:
    query = select(Schedule).where(Schedule.api_key_id == api_key_id)
    if after is not None:
        query = query.where(tuple_(Schedule.created_at, Schedule.id) < tuple_(*after))
    query = query.order_by(Schedule.created_at.desc(), Schedule.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_runs(
    session: AsyncSession,
    schedule_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[tuple[ScheduleRun, BatchStatus | None]]:
    """Newest due time first, each with its batch's status now."""
    query = (
        select(ScheduleRun, Batch.status)
        .outerjoin(Batch, Batch.id == ScheduleRun.batch_id)
        .where(ScheduleRun.schedule_id == schedule_id)
    )
    if after is not None:
        query = query.where(tuple_(ScheduleRun.due_at, ScheduleRun.id) < tuple_(*after))
    query = query.order_by(ScheduleRun.due_at.desc(), ScheduleRun.id.desc()).limit(limit)
    return [(run, status) for run, status in await session.execute(query)]


async def lock_due_schedule(
    session: AsyncSession, now: datetime, *, skip: frozenset[uuid.UUID] = frozenset()
) -> Schedule | None:
    """One enabled schedule that is due, whose key still works, locked; a schedule another
    worker holds is skipped (it is being run there), and so are those in `skip`."""
    query = (
        select(Schedule)
        .join(ApiKey, ApiKey.id == Schedule.api_key_id)
        .where(
            Schedule.next_run_at <= now,
            Schedule.enabled.is_(True),
            ApiKey.revoked_at.is_(None),
        )
        .order_by(Schedule.next_run_at)
        .limit(1)
        .with_for_update(of=Schedule, skip_locked=True)
    )
    if skip:
        query = query.where(Schedule.id.not_in(skip))
    return (await session.execute(query)).scalars().first()


async def insert_run(
    session: AsyncSession,
    schedule_id: uuid.UUID,
    due_at: datetime,
    status: RunStatus,
    *,
    error: str | None = None,
) -> uuid.UUID | None:
    """The run of this due time; None if it already exists (another worker made it)."""
    run_id = uuid.uuid4()
    statement = (
        insert(ScheduleRun)
        .values(id=run_id, schedule_id=schedule_id, due_at=due_at, status=status, error=error)
        .on_conflict_do_nothing(index_elements=["schedule_id", "due_at"])
        .returning(ScheduleRun.id)
    )
    return (await session.execute(statement)).scalar()


async def beat(session: AsyncSession, now: datetime, *, outage_s: float) -> datetime:
    """Record that a tick works at `now`; returns since when the ticks have run unbroken.
    A gap of more than `outage_s` since the last beat means nothing ran in between: the
    unbroken run starts again at `now`. The first beat ever starts one too."""
    table = ScheduleClock.__table__
    statement = (
        insert(ScheduleClock)
        .values(id=1, alive_since=now, beat_at=now)
        .on_conflict_do_update(
            index_elements=[table.c.id],
            set_={
                "alive_since": case(
                    (table.c.beat_at < now - timedelta(seconds=outage_s), now),
                    else_=table.c.alive_since,
                ),
                "beat_at": func.greatest(table.c.beat_at, now),
            },
        )
        .returning(table.c.alive_since)
    )
    alive_since: datetime = (await session.execute(statement)).scalar_one()
    return alive_since
