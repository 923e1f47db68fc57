"""A job's life on a worker: start an attempt, then record success, a retry or a failure.

Every transition that finishes a job also writes its event and, when it was the last
active job, completes the batch, all in one transaction under the batch row lock.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository as batch_repository
from service.batches.service import complete_batch
from service.jobs import repository
from service.jobs.presenter import job_out
from service.kit.base import utcnow
from service.models import (
    FINAL_JOB_STATUSES,
    Batch,
    BatchStatus,
    Job,
    JobAttempt,
    JobStatus,
    Priority,
)
from service.providers.base import (
    GeneratedImage,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
)
from service.storage.base import StoredObject
from service.webhooks.service import record_event


@dataclass(frozen=True)
class StartedJob:
    """An attempt that owns its job: what the worker needs to run it and to report back."""

    job_id: uuid.UUID
    batch_id: uuid.UUID
    attempt: int
    prompt: str
    model: str
    params: dict[str, Any]
    account: str
    priority: Priority = Priority.bulk
    remote_id: str | None = None
    submitted_at: datetime | None = None

    @property
    def output_key(self) -> str:
        return f"{self.batch_id}/{self.params['output_name']}"


@dataclass(frozen=True)
class Transition:
    """What the task must do after commit: deliver these events, and maybe put the job
    back in line (after `retry_in_s`, or at the front of its batch's line for a 429)."""

    event_ids: list[str]
    retry_in_s: float | None = None
    requeue_front: bool = False
    # The job reached a final state: once committed, see whether its batch is complete
    # (complete_if_done, in a transaction of its own).
    batch_to_check: uuid.UUID | None = None


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
    or the batch's budget cannot take it)."""
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    batch = await _batch_for_update(session, job.batch_id)
    if batch.status is BatchStatus.queued and batch.budget_usd is None:
        await repository.mark_batch_running(session, batch.id)
    job = await repository.lock_job(session, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    if job.status is JobStatus.running and job.remote_id is not None:
        return None  # at the provider already: never submitted twice
    now = utcnow()
    # Only a running job can have an attempt left open (by a worker that died).
    abandoned = (
        await repository.open_attempt(session, job_id) if job.status is JobStatus.running else None
    )
    if abandoned is not None:
        _close_attempt(abandoned, "abandoned", "worker_lost", "the worker running it stopped")
        _release_budget(batch, price)
    if job.attempts >= max_attempts:
        error = ProviderError("attempts_exhausted", f"gave up after {job.attempts} attempts")
        return await _finish(session, job, JobStatus.failed, public_url, error=error)
    if batch.budget_usd is not None:
        if batch.reserved_usd + price > batch.budget_usd:
            error = ProviderError(
                "budget_exceeded",
                f"the batch's budget of ${batch.budget_usd:f} would be exceeded: "
                f"${batch.reserved_usd:f} spent or reserved, this job costs ${price:f}",
            )
            return await _finish(session, job, JobStatus.failed, public_url, error=error)
        batch.reserved_usd += price
    job.attempts += 1
    job.tries += 1
    job.current_attempt = job.tries
    job.status = JobStatus.running
    job.provider = account
    job.remote_id = None
    job.submitted_at = None
    job.started_at = job.started_at or now
    session.add(JobAttempt(job_id=job.id, number=job.tries, provider=account, started_at=now))
    if batch.status is BatchStatus.queued and batch.budget_usd is not None:
        batch.status = BatchStatus.running  # locked above
    return StartedJob(
        job.id,
        job.batch_id,
        job.tries,
        job.prompt,
        job.model,
        job.params,
        account=account,
        priority=batch.priority,
    )


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
    )


def with_remote(started: StartedJob, remote_id: str) -> StartedJob:
    return dataclasses.replace(started, remote_id=remote_id, submitted_at=utcnow())


async def fail_unconfigured(
    session: AsyncSession, job_id: uuid.UUID, *, public_url: str
) -> Transition | None:
    """A job whose model is no longer in the configuration fails, saying so."""
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    await _batch_for_update(session, job.batch_id)
    job = await repository.lock_job(session, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    abandoned = await repository.open_attempt(session, job_id)
    if abandoned is not None:
        _close_attempt(abandoned, "abandoned", "worker_lost", "the worker running it stopped")
    error = ProviderPermanentError("unknown_model", f"model {job.model!r} is not configured")
    return await _finish(session, job, JobStatus.failed, public_url, error=error)


async def record_submitted(session: AsyncSession, started: StartedJob, remote_id: str) -> bool:
    """Store the provider's handle at once: from here on the job resumes by polling."""
    job = await _current(session, started)
    if job is None:
        return False
    job.remote_id = remote_id
    job.submitted_at = utcnow()
    attempt = await repository.attempt_number(session, job.id, started.attempt)
    attempt.remote_id = remote_id
    return True


async def record_success(
    session: AsyncSession,
    started: StartedJob,
    image: GeneratedImage,
    stored: StoredObject,
    *,
    latency_ms: int | None,
    cost: Decimal,
    price: Decimal,
    public_url: str,
) -> Transition:
    """`price` is what start_attempt reserved against the budget, `cost` what the image
    cost in the end (the provider's figure when it reports one)."""
    owned = await _owned(session, started)
    if owned is None:
        return Transition([])
    batch, job, attempt = owned
    _close_attempt(attempt, "succeeded", latency_ms=latency_ms)
    attempt.usage = image.usage or None
    job.output_key = stored.key
    job.output_content_type = image.content_type
    job.output_width = image.width
    job.output_height = image.height
    job.output_bytes = stored.bytes
    job.output_sha256 = stored.sha256
    job.cost_usd = cost
    job.error_code = job.error_message = None
    if batch.budget_usd is not None:
        # The estimate reserved at the start becomes what it cost.
        batch.reserved_usd += cost - price
    return await _finish(session, job, JobStatus.succeeded, public_url)


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
    """A retryable error with attempts left puts the job back in line after a backoff;
    anything else fails it with the provider's code and message."""
    owned = await _owned(session, started)
    if owned is None:
        return Transition([])
    batch, job, attempt = owned
    _release_budget(batch, price)
    if error.retryable and job.attempts < max_attempts:
        _close_attempt(attempt, "retry", error.code, error.message, latency_ms, error.http_status)
        _requeue(job)
        job.error_code, job.error_message = error.code, error.message
        return Transition([], retry_in_s=retry_in_s)
    _close_attempt(attempt, "failed", error.code, error.message, latency_ms, error.http_status)
    return await _finish(session, job, JobStatus.failed, public_url, error=error)


async def record_rate_limited(
    session: AsyncSession,
    started: StartedJob,
    error: ProviderRateLimited,
    *,
    latency_ms: int,
    price: Decimal,
) -> Transition:
    """A 429 is the account's problem, not the job's: the attempt is recorded but not
    counted, and the job goes back to the front of its batch's line."""
    owned = await _owned(session, started)
    if owned is None:
        return Transition([])
    batch, job, attempt = owned
    _release_budget(batch, price)
    _close_attempt(attempt, "rate_limited", error.code, error.message, latency_ms, 429)
    job.attempts -= 1
    _requeue(job)
    return Transition([], requeue_front=True)


async def record_cancelled(
    session: AsyncSession, started: StartedJob, *, price: Decimal, public_url: str
) -> Transition:
    """The batch was cancelled while this job ran at its provider; the provider was told."""
    owned = await _owned(session, started)
    if owned is None:
        return Transition([])
    batch, job, attempt = owned
    _release_budget(batch, price)
    _close_attempt(attempt, "cancelled", "cancelled", "the batch was cancelled")
    return await _finish(session, job, JobStatus.cancelled, public_url)


def _requeue(job: Job) -> None:
    job.status = JobStatus.queued
    job.current_attempt = None
    job.remote_id = None
    job.submitted_at = None


def _release_budget(batch: Batch, price: Decimal) -> None:
    if batch.budget_usd is not None and price:
        batch.reserved_usd = max(Decimal(0), batch.reserved_usd - price)


async def _owned(
    session: AsyncSession, started: StartedJob
) -> tuple[Batch, Job, JobAttempt] | None:
    """Batch, job and attempt, locked in order, if this attempt still owns the job."""
    batch = await _batch_for_update(session, started.batch_id)
    job = await _current(session, started)
    if job is None:
        return None
    return batch, job, await repository.attempt_number(session, job.id, started.attempt)


async def _current(session: AsyncSession, started: StartedJob) -> Job | None:
    """The job, if this attempt still owns it (a worker that was presumed dead may
    come back after another took the job over)."""
    job = await repository.lock_job(session, started.job_id)
    if job is None or job.status is not JobStatus.running or job.current_attempt != started.attempt:
        return None
    return job


async def _finish(
    session: AsyncSession,
    job: Job,
    status: JobStatus,
    public_url: str,
    *,
    error: ProviderError | None = None,
) -> Transition:
    """The job's final state and its event; whether that completes the batch is
    decided after commit (complete_if_done), so jobs of one batch finish in parallel."""
    batch = await session.get(Batch, job.batch_id)
    assert batch is not None
    job.status = status
    job.finished_at = utcnow()
    if error is not None:
        job.error_code, job.error_message = error.code, error.message
    await session.flush()
    data = job_out(job, public_url).model_dump(mode="json")
    event_id = await record_event(
        session, batch=batch, type=f"job.{status.value}", data=data, job_id=job.id
    )
    return Transition([event_id] if event_id else [], batch_to_check=batch.id)


async def complete_if_done(session: AsyncSession, batch_id: uuid.UUID) -> list[str]:
    """Complete the batch if no job of it is active any more; returns the event to deliver.

    Called after a job's final state committed, in a transaction of its own: of two last
    jobs finishing at once, each sees the other's commit here, and the batch row lock
    makes exactly one of them complete the batch."""
    if await repository.batch_has_active_jobs(session, batch_id):
        return []
    batch = await batch_repository.lock_batch(session, batch_id)
    completed = await complete_batch(session, batch)
    return [completed] if completed is not None else []


async def _batch_for_update(session: AsyncSession, batch_id: uuid.UUID) -> Batch:
    """The job's batch, locked only when its budget is tracked (the reservation must be
    serialised). Lock order everywhere: batch row, then job row."""
    batch = await session.get(Batch, batch_id)
    assert batch is not None
    if batch.budget_usd is not None:
        batch = await batch_repository.lock_batch(session, batch_id)
    return batch


def _close_attempt(
    attempt: JobAttempt,
    outcome: str,
    error_code: str | None = None,
    error_message: str | None = None,
    latency_ms: int | None = None,
    http_status: int | None = None,
) -> None:
    attempt.finished_at = utcnow()
    attempt.outcome = outcome
    attempt.error_code = error_code
    attempt.error_message = error_message
    attempt.latency_ms = latency_ms
    attempt.http_status = http_status
