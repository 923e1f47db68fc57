"""Queries for jobs and their attempts."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Uuid, any_, bindparam, exists, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

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


def _in(column: InstrumentedAttribute[uuid.UUID], ids: Iterable[uuid.UUID]) -> ColumnElement[bool]:
    """`column = ANY(:ids)`: one bound array, so a group of any size is the same
    statement (prepared once), where IN (...) would be one statement per size."""
    return column == any_(bindparam(None, sorted(set(ids)), type_=ARRAY(Uuid())))


async def lock_jobs(session: AsyncSession, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Job]:
    """One statement for a group of jobs, locked in id order (every group locks in the
    same order, so two groups never wait on each other in a cycle)."""
    query = (
        select(Job)
        .where(_in(Job.id, job_ids))
        .order_by(Job.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {job.id: job for job in (await session.execute(query)).scalars()}


@dataclass(frozen=True)
class JobHead:
    """What a claim reads before it takes any lock: the job's state and its batch."""

    id: uuid.UUID
    status: JobStatus
    model: str
    params: dict[str, Any]
    batch: Batch


async def job_heads(
    session: AsyncSession, job_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, JobHead]:
    query = select(Job.id, Job.status, Job.model, Job.params, Batch).join(
        Batch, Batch.id == Job.batch_id
    )
    query = query.where(_in(Job.id, job_ids))
    return {row[0]: JobHead(*row) for row in await session.execute(query)}


async def get_batches(
    session: AsyncSession, batch_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Batch]:
    query = select(Batch).where(_in(Batch.id, batch_ids))
    return {batch.id: batch for batch in (await session.execute(query)).scalars()}


async def lock_batches(
    session: AsyncSession, batch_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Batch]:
    """Batch rows locked in id order; lock order everywhere: batch rows, then job rows."""
    if not batch_ids:
        return {}
    query = (
        select(Batch)
        .where(_in(Batch.id, batch_ids))
        .order_by(Batch.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {batch.id: batch for batch in (await session.execute(query)).scalars()}


async def open_attempts(
    session: AsyncSession, job_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, JobAttempt]:
    if not job_ids:
        return {}
    query = select(JobAttempt).where(
        _in(JobAttempt.job_id, job_ids), JobAttempt.finished_at.is_(None)
    )
    found: dict[uuid.UUID, JobAttempt] = {}
    for attempt in (await session.execute(query)).scalars():
        found.setdefault(attempt.job_id, attempt)
    return found


async def numbered_attempts(
    session: AsyncSession, keys: Collection[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], JobAttempt]:
    """By (job id, number); fetched by job id (a job has a few attempts at most)."""
    if not keys:
        return {}
    query = select(JobAttempt).where(_in(JobAttempt.job_id, (job_id for job_id, _ in keys)))
    wanted = set(keys)
    found = ((a.job_id, a.number, a) for a in (await session.execute(query)).scalars())
    return {(job_id, n): a for job_id, n, a in found if (job_id, n) in wanted}


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


async def batches_with_active_jobs(
    session: AsyncSession, batch_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these batches still have an active job: one index probe each."""
    active = exists().where(Job.batch_id == Batch.id, Job.status.in_(ACTIVE_JOB_STATUSES))
    query = select(Batch.id).where(_in(Batch.id, batch_ids), active)
    return set((await session.execute(query)).scalars())


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
    """Active jobs untouched since `older_than`, in id order for keyset paging; a chained
    job only once its parent has succeeded (until then it waits out of line)."""
    parent = aliased(Job)
    parent_done = exists().where(parent.id == Job.parent_id, parent.status == JobStatus.succeeded)
    query = (
        select(Job.id, Job.batch_id, Job.model, Job.status, Job.remote_id, Batch.priority)
        .join(Batch, Batch.id == Job.batch_id)
        .where(Job.status.in_(ACTIVE_JOB_STATUSES), Job.updated_at < older_than)
        .where(or_(Job.parent_id.is_(None), parent_done))
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


async def set_queue_position(
    session: AsyncSession, job_id: uuid.UUID, position: int | None
) -> None:
    """Only while the job still waits at its provider: a late poll must not mark a
    finished job as queued."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.remote_id.is_not(None))
        .values(queue_position=position)
    )


async def waiting_children(
    session: AsyncSession, parent_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    """(id, model) of the queued jobs that take this job's output, which may run now."""
    query = select(Job.id, Job.model).where(
        Job.parent_id == parent_id, Job.status == JobStatus.queued
    )
    return [(row.id, row.model) for row in await session.execute(query)]


async def lock_waiting_children(session: AsyncSession, parent_id: uuid.UUID) -> list[Job]:
    query = (
        select(Job)
        .where(Job.parent_id == parent_id, Job.status == JobStatus.queued)
        .order_by(Job.id)
        .with_for_update()
    )
    return list((await session.execute(query)).scalars())


async def parent_output(session: AsyncSession, job_id: uuid.UUID) -> tuple[int, str, str] | None:
    """(index, output key, content type) of the succeeded job whose output this job takes."""
    parent = aliased(Job)
    query = (
        select(parent.index, parent.output_key, parent.output_content_type)
        .join(Job, Job.parent_id == parent.id)
        .where(Job.id == job_id, parent.status == JobStatus.succeeded)
    )
    row = (await session.execute(query)).first()
    if row is None or row[1] is None:
        return None
    return row[0], row[1], row[2] or "application/octet-stream"
