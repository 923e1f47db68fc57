"""The scrape's two queries: one GROUP BY each, over the jobs and over the attempts."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Job, JobAttempt


async def jobs_by_state_and_model(session: AsyncSession) -> list[tuple[str, str, int]]:
    rows = await session.execute(
        select(Job.status, Job.model, func.count()).group_by(Job.status, Job.model)
    )
    return [(str(status), model, int(count)) for status, model, count in rows]


async def cost_by_model(session: AsyncSession) -> list[tuple[str, Decimal]]:
    """From the attempts, not the jobs: a job that fell back to another model paid each
    model for its own attempts. An attempt from before models were recorded counts
    under its provider account."""
    model = func.coalesce(JobAttempt.model, JobAttempt.provider)
    rows = await session.execute(select(model, func.sum(JobAttempt.cost_usd)).group_by(model))
    return [(name, total or Decimal(0)) for name, total in rows]
