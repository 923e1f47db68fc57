"""Queries for jobs and their attempts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import (
    ACTIVE_JOB_STATUSES,
    Batch,
    BatchStatus,
    Job,
    JobAttempt,
    JobStatus,
    Priority,
)


async def get_job_for_key(
    session: AsyncSession, job_id: uuid.UUID, api_key_id: uuid.UUID
) -> Job | None:
    query = (
        select(Job)
        .join(Batch, Batch.id == Job.batch_id)
        .where(Job.id == job_id, Batch.api_key_id == api_key_id)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def lock_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    query = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def open_attempt(session: AsyncSession, job_id: uuid.UUID) -> JobAttempt | None:
    query = select(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.finished_at.is_(None))
    return (await session.execute(query)).scalars().first()


async def attempt_number(session: AsyncSession, job_id: uuid.UUID, number: int) -> JobAttempt:
    query = select(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.number == number)
    return (await session.execute(query)).scalar_one()


async def list_attempts(session: AsyncSession, job_id: uuid.UUID) -> list[JobAttempt]:
    query = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
    return list((await session.execute(query)).scalars())


async def mark_batch_running(session: AsyncSession, batch_id: uuid.UUID) -> None:
    """Conditional: once the batch runs, this neither matches nor locks the row."""
    await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.queued)
        .values(status=BatchStatus.running)
        .execution_options(synchronize_session=False)
    )


async def batch_has_active_jobs(session: AsyncSession, batch_id: uuid.UUID) -> bool:
    """An index probe, not a count: called once per finished job."""
    query = select(exists().where(Job.batch_id == batch_id, Job.status.in_(ACTIVE_JOB_STATUSES)))
    return bool((await session.execute(query)).scalar())


@dataclass(frozen=True)
class ActiveJob:
    """What the reconciler needs to put an active job back where it belongs."""

    id: uuid.UUID
    batch_id: uuid.UUID
    model: str
    status: JobStatus
    remote_id: str | None
    priority: Priority


async def stale_active_jobs(
    session: AsyncSession, *, older_than: datetime, after_id: uuid.UUID | None, limit: int
) -> list[ActiveJob]:
    """Active jobs untouched since `older_than`, in id order for keyset paging."""
    query = (
        select(Job.id, Job.batch_id, Job.model, Job.status, Job.remote_id, Batch.priority)
        .join(Batch, Batch.id == Job.batch_id)
        .where(Job.status.in_(ACTIVE_JOB_STATUSES), Job.updated_at < older_than)
    )
    if after_id is not None:
        query = query.where(Job.id > after_id)
    query = query.order_by(Job.id).limit(limit)
    return [ActiveJob(*row) for row in await session.execute(query)]


async def remote_job_ids(session: AsyncSession, batch_id: uuid.UUID) -> list[uuid.UUID]:
    """The batch's jobs waiting at their providers."""
    query = select(Job.id).where(
        Job.batch_id == batch_id, Job.status == JobStatus.running, Job.remote_id.is_not(None)
    )
    return list((await session.execute(query)).scalars())


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)


async def job_by_remote_id(session: AsyncSession, remote_id: str) -> Job | None:
    query = select(Job).where(Job.remote_id == remote_id)
    return (await session.execute(query)).scalars().first()


async def idle_unfinished_batch_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Batches not yet final with no active job left."""
    active = exists().where(Job.batch_id == Batch.id, Job.status.in_(ACTIVE_JOB_STATUSES))
    query = select(Batch.id).where(
        Batch.status.in_([BatchStatus.queued, BatchStatus.running]), ~active
    )
    return list((await session.execute(query)).scalars())
