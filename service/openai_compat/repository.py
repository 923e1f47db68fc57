"""Queries of the OpenAI-compatible door."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Batch, Job, JobStatus, OpenAIBatch, OpenAIFile


async def batch_jobs(session: AsyncSession, batch_id: uuid.UUID) -> Sequence[Job]:
    query = select(Job).where(Job.batch_id == batch_id).order_by(Job.index)
    return (await session.execute(query)).scalars().all()


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)


async def get_file(
    session: AsyncSession, file_id: uuid.UUID, api_key_id: uuid.UUID
) -> OpenAIFile | None:
    query = select(OpenAIFile).where(OpenAIFile.id == file_id, OpenAIFile.api_key_id == api_key_id)
    return (await session.execute(query)).scalar_one_or_none()


async def get_batch(
    session: AsyncSession, openai_batch_id: uuid.UUID, api_key_id: uuid.UUID, *, lock: bool = False
) -> tuple[OpenAIBatch, Batch] | None:
    query = (
        select(OpenAIBatch, Batch)
        .join(Batch, Batch.id == OpenAIBatch.batch_id)
        .where(OpenAIBatch.id == openai_batch_id, OpenAIBatch.api_key_id == api_key_id)
        .execution_options(populate_existing=True)  # a status read earlier may be stale
    )
    if lock:
        query = query.with_for_update(of=OpenAIBatch)
    row = (await session.execute(query)).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def list_batches(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[tuple[OpenAIBatch, Batch]]:
    """Newest first; `before`: the (created_at, id) of the last one already seen."""
    query = (
        select(OpenAIBatch, Batch)
        .join(Batch, Batch.id == OpenAIBatch.batch_id)
        .where(OpenAIBatch.api_key_id == api_key_id)
        .order_by(OpenAIBatch.created_at.desc(), OpenAIBatch.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(tuple_(OpenAIBatch.created_at, OpenAIBatch.id) < before)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def job_statuses(session: AsyncSession, batch_id: uuid.UUID) -> list[JobStatus]:
    """Every job's status, in index order."""
    query = select(Job.status).where(Job.batch_id == batch_id).order_by(Job.index)
    return list((await session.execute(query)).scalars().all())
