"""Queries for manifests: a batch's jobs a page at a time (keyset on the job index), with
what their attempts say about them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Job, JobAttempt


@dataclass(frozen=True)
class AttemptFacts:
    """What a job's attempts add to its row: how long the successful generation took."""

    generation_ms: int | None


async def jobs_page(
    session: AsyncSession, batch_id: uuid.UUID, *, after_index: int, limit: int
) -> list[Job]:
    """The batch's jobs with an index above `after_index`, in index order."""
    query = (
        select(Job)
        .where(Job.batch_id == batch_id, Job.index > after_index)
        .order_by(Job.index)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def attempt_facts(
    session: AsyncSession, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, AttemptFacts]:
    """Per job, the generation time of its succeeded attempt: the provider's latency when
    recorded, else the attempt's own duration."""
    if not job_ids:
        return {}
    duration_ms = func.extract("epoch", JobAttempt.finished_at - JobAttempt.started_at) * 1000
    query = select(JobAttempt.job_id, func.coalesce(JobAttempt.latency_ms, duration_ms)).where(
        JobAttempt.job_id.in_(job_ids), JobAttempt.outcome == "succeeded"
    )
    return {
        job_id: AttemptFacts(None if ms is None else round(ms))
        for job_id, ms in await session.execute(query)
    }


async def variable_names(session: AsyncSession, batch_id: uuid.UUID) -> list[str]:
    """Every variable name any job of the batch has, sorted: a CSV header needs them all
    before its first row."""
    keys = func.jsonb_object_keys(Job.variables)
    query = (
        select(keys)
        .where(Job.batch_id == batch_id, func.jsonb_typeof(Job.variables) == "object")
        .distinct()
    )
    return sorted(str(name) for name in (await session.execute(query)).scalars())
