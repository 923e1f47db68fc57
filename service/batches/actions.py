"""What follows a batch's commit, for every door (the REST endpoints, the UI's buttons,
a schedule's tick, a CMS hook, the OpenAI door): events, webhook deliveries, the
enqueue, cancels at providers. Written once so that no door can enqueue before its
commit, or forget a step.

A submit's enqueue (enqueue_submitted) is called after the door's own commit: the
doors commit in different ways (an endpoint's session, a tick's session scope).
Retry and cancel, unlike service.py, commit themselves: they are the endpoints' shared
tail, called with the batch's row lock held (repository.get_batch(..., for_update=True)).
A Conflict (409) is raised before anything is committed; the caller rolls back."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import service
from service.batches.service import SubmittedBatch
from service.events import publish_bulk_change
from service.jobs.tasks import enqueue_cancel, enqueue_jobs
from service.kit.base import utcnow
from service.models import Batch, JobStatus
from service.state import State
from service.webhooks.tasks import enqueue_deliveries


async def enqueue_submitted(state: State, submitted: SubmittedBatch) -> None:
    """A submitted batch's ready jobs in line, once its transaction has committed: a job
    enqueued before would be granted to a worker that cannot see it yet. A crash between
    the commit and this is the reconciler's (it enqueues from Postgres); an Idempotency-Key
    replay has no jobs, so nothing is enqueued twice."""
    batch = submitted.batch
    await enqueue_jobs(state, batch.id, batch.priority, submitted.jobs)


async def retry_and_enqueue(state: State, session: AsyncSession, batch: Batch) -> None:
    """The failed jobs back in line (service.retry_batch), committed, their events
    published, then enqueued."""
    jobs = await service.retry_batch(session, batch)
    await session.commit()
    await publish_bulk_change(state, batch.id, job_ids=[job_id for job_id, _ in jobs])
    await enqueue_jobs(state, batch.id, batch.priority, jobs)


async def cancel_and_notify(state: State, session: AsyncSession, batch: Batch) -> None:
    """Queued jobs cancelled (service.cancel_batch), committed, their events published,
    the batch's webhooks delivered, and running generations cancelled at providers."""
    since = utcnow()
    event_ids = await service.cancel_batch(session, batch)
    await session.commit()
    await publish_bulk_change(state, batch.id, status=JobStatus.cancelled, since=since)
    await enqueue_deliveries(state, event_ids)
    await enqueue_cancel(state, batch.id)
