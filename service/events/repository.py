"""The events' own reads: jobs a bulk UPDATE changed (a batch's cancel or retry), which
the flush hook (service.events.capture) cannot see."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Job, JobStatus


async def changed_jobs(
    session: AsyncSession,
    batch_id: uuid.UUID,
    *,
    job_ids: Sequence[uuid.UUID] | None = None,
    status: JobStatus | None = None,
    since: datetime | None = None,
) -> list[Job]:
    """The batch's jobs with these ids, or in this status touched since then, by index."""
    query = select(Job).where(Job.batch_id == batch_id).order_by(Job.index)
    if job_ids is not None:
        query = query.where(Job.id.in_(job_ids))
    if status is not None:
        query = query.where(Job.status == status)
    if since is not None:
        query = query.where(Job.updated_at >= since)
    return list(await session.scalars(query))
