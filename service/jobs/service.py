"""A job's life on a worker: start an attempt, then record success, a retry or a failure.

Every transition that finishes a job also writes its event in the same transaction (an
outbox); whether that completes the batch is decided after commit (complete_if_done).
The transitions themselves live in service.jobs.transitions (claims) and
service.jobs.outcomes (outcomes), which apply them to a group of jobs at once; the
functions here are the group of one.
"""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository as batch_repository
from service.budgets import service as budgets
from service.jobs import outcomes, repository, steps, transitions
from service.jobs.outcomes import Cancelled, Failed, Outcome, RateLimited, Succeeded
from service.jobs.steps import Transition, close_attempt, finish
from service.jobs.transitions import Claim, StartedJob
from service.kit.base import utcnow
from service.models import FINAL_JOB_STATUSES, Batch, Job, JobStatus, Priority
from service.providers.base import (
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    RemoteHandle,
)
from service.storage.base import StoredObject

__all__ = ["StartedJob", "Transition"]


async def start_attempt(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    account: str,
    max_attempts: int,
    price: Decimal,
    public_url: str,
) -> StartedJob | Transition | None:
    """Claim the job for a new attempt, before anything is sent to a provider.

    None: nothing to send (the job finished, or was already submitted and resumes by
    polling). A Transition: the job ended here (attempts used up by workers that died,
    or the batch's budget cannot take it). Workers claim in groups
    (service.jobs.batching); this is the group of one."""
    claim = Claim(job_id, account, max_attempts, price)
    [started] = await transitions.start_attempts(session, [claim], public_url=public_url)
    return started


async def resume_remote(session: AsyncSession, job_id: uuid.UUID) -> StartedJob | None:
    """The attempt of a job that waits at its provider, for a poll or a callback."""
    job = await session.get(Job, job_id)
    if (
        job is None
        or job.status is not JobStatus.running
        or job.remote_id is None
        or job.current_attempt is None
        or job.provider is None
    ):
        return None
    batch = await session.get(Batch, job.batch_id)
    return StartedJob(
        job.id,
        job.batch_id,
        job.current_attempt,
        job.prompt,
        job.model,
        job.params,
        account=job.provider,
        priority=batch.priority if batch is not None else Priority.bulk,
        remote_id=job.remote_id,
        submitted_at=job.submitted_at,
        remote_data=job.remote_data,
        queue_position=job.queue_position,
        parent_id=job.parent_id,
    )


def with_remote(started: StartedJob, handle: RemoteHandle) -> StartedJob:
    return dataclasses.replace(
        started, remote_id=handle.id, remote_data=dict(handle.data), submitted_at=utcnow()
    )


async def fail_unconfigured(
    session: AsyncSession, job_id: uuid.UUID, *, public_url: str
) -> Transition | None:
    """A job whose model is no longer in the configuration fails, saying so."""
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    batch = await _batch_for_update(session, job.batch_id)
    # Its ledgers are locked in the claims' order: after the batch, before the job.
    abandoned = await repository.open_attempt(session, job_id)
    if abandoned is not None:
        await budgets.lock_reserved(session, [abandoned])
    job = await repository.lock_job(session, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    if abandoned is not None:
        close_attempt(abandoned, "abandoned", "worker_lost", "the worker running it stopped")
        # Its reservation is given back (the model's price is gone with the model; the
        # attempt recorded what it reserved in key and account budgets).
        await budgets.settle(session, abandoned, Decimal(0))
        if abandoned.reserved:
            steps.release_budget(batch, Decimal(str(abandoned.reserved["usd"])))
    error = ProviderPermanentError("unknown_model", f"model {job.model!r} is not configured")
    return await finish(session, job, batch, JobStatus.failed, public_url, error=error)


async def record_submitted(
    session: AsyncSession, started: StartedJob, handle: RemoteHandle
) -> bool:
    """Store the provider's handle at once: from here on the job resumes by polling."""
    job = await _current(session, started)
    if job is None:
        return False
    job.remote_id = handle.id
    job.remote_data = dict(handle.data) if not handle.finished else None
    job.queue_position = handle.queue_position
    job.submitted_at = utcnow()
    attempt = await repository.attempt_number(session, job.id, started.attempt)
    attempt.remote_id = handle.id
    return True


async def note_queue_position(
    session: AsyncSession, job_id: uuid.UUID, position: int | None
) -> None:
    """Where the generation now waits in its provider's queue (shown on the job)."""
    await repository.set_queue_position(session, job_id, position)


async def record_success(
    session: AsyncSession,
    started: StartedJob,
    output: Output,
    stored: StoredObject,
    *,
    latency_ms: int | None,
    cost: Decimal,
    price: Decimal,
    public_url: str,
) -> Transition:
    outcome = Succeeded(started, output, stored, latency_ms, cost, price)
    return await _record(session, outcome, public_url)


async def record_failure(
    session: AsyncSession,
    started: StartedJob,
    error: ProviderError,
    *,
    latency_ms: int | None,
    max_attempts: int,
    retry_in_s: float,
    price: Decimal,
    public_url: str,
) -> Transition:
    outcome = Failed(started, error, latency_ms, max_attempts, retry_in_s, price)
    return await _record(session, outcome, public_url)


async def record_rate_limited(
    session: AsyncSession,
    started: StartedJob,
    error: ProviderRateLimited,
    *,
    latency_ms: int,
    price: Decimal,
) -> Transition:
    return await _record(session, RateLimited(started, error, latency_ms, price), "")


async def record_cancelled(
    session: AsyncSession, started: StartedJob, *, price: Decimal, public_url: str
) -> Transition:
    return await _record(session, Cancelled(started, price), public_url)


async def _record(session: AsyncSession, outcome: Outcome, public_url: str) -> Transition:
    """One outcome as a group of one (workers record in groups: service.jobs.batching)."""
    [transition] = await outcomes.record_outcomes(session, [outcome], public_url=public_url)
    return transition


async def _current(session: AsyncSession, started: StartedJob) -> Job | None:
    """The job, if this attempt still owns it (a worker that was presumed dead may
    come back after another took the job over)."""
    job = await repository.lock_job(session, started.job_id)
    if job is None or job.status is not JobStatus.running or job.current_attempt != started.attempt:
        return None
    return job


async def complete_if_done(session: AsyncSession, batch_id: uuid.UUID) -> list[str]:
    """Complete the batch if no job of it is active any more; returns the event to deliver.

    Called after a job's final state committed, in a transaction of its own: of two last
    jobs finishing at once, each sees the other's commit here, and the batch row lock
    makes exactly one of them complete the batch."""
    events = await steps.complete_idle_batches(session, [batch_id])
    return events.get(batch_id, [])


async def _batch_for_update(session: AsyncSession, batch_id: uuid.UUID) -> Batch:
    """The job's batch, locked only when its budget is tracked (the reservation must be
    serialised). Lock order everywhere: batch row, then job row."""
    batch = await session.get(Batch, batch_id)
    assert batch is not None
    if batch.budget_usd is not None:
        batch = await batch_repository.lock_batch(session, batch_id)
    return batch
