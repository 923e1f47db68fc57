"""Queries for manifests: a batch's jobs a page at a time (keyset on the job index), with
what their attempts say about them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Job, JobAttempt


@dataclass(frozen=True)
class AttemptFacts:
    """What a job's attempts add to its row: how long the successful generation took."""

    generation_ms: int | None


# What a manifest row needs of a job, and nothing else: a page is plain rows, not ORM
# objects, and leaves out the JSON columns it does not show (metadata, remote_data).
JOB_COLUMNS = (
    Job.id,
    # `index` would be the tuple method of a Row.
    Job.index.label("position"),
    Job.status,
    Job.prompt,
    Job.model,
    Job.route,
    Job.provider,
    Job.params,
    Job.variables,
    Job.attempts,
    Job.error_code,
    Job.error_message,
    Job.output_key,
    Job.output_content_type,
    Job.output_width,
    Job.output_height,
    Job.output_bytes,
    Job.output_duration_s,
    Job.output_sha256,
    Job.cost_usd,
    Job.finished_at,
)


async def jobs_page(
    session: AsyncSession, batch_id: uuid.UUID, *, after_index: int, limit: int
) -> Sequence[Row[Any]]:
    """The batch's jobs with an index above `after_index`, in index order."""
    query = (
        select(*JOB_COLUMNS)
        .where(Job.batch_id == batch_id, Job.index > after_index)
        .order_by(Job.index)
        .limit(limit)
    )
    return (await session.execute(query)).all()


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
