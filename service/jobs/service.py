"""A job's life on a worker: start an attempt, then record success, a retry or a failure.

Every transition that finishes a job also writes its event and, when it was the last
active job, completes the batch, all in one transaction under the batch row lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository as batch_repository
from service.batches.service import complete_batch
from service.jobs import repository
from service.jobs.schemas import JobError, JobOut, JobOutput
from service.kit.base import utcnow
from service.models import FINAL_JOB_STATUSES, Job, JobAttempt, JobStatus
from service.providers.base import GeneratedImage, ProviderError
from service.storage.base import StoredObject
from service.webhooks.service import record_event


@dataclass(frozen=True)
class StartedJob:
    job_id: uuid.UUID
    batch_id: uuid.UUID
    attempt: int
    prompt: str
    model: str
    params: dict[str, Any]

    @property
    def output_key(self) -> str:
        return f"{self.batch_id}/{self.params['output_name']}"


@dataclass(frozen=True)
class Transition:
    """What the task must do after commit: deliver these events, maybe run again later."""

    event_ids: list[str]
    retry_in_s: float | None = None


def job_out(job: Job, public_url: str) -> JobOut:
    output = None
    if job.status is JobStatus.succeeded and job.output_key is not None:
        output = JobOutput(
            url=f"{public_url.rstrip('/')}/v1/jobs/{job.id}/output",
            content_type=job.output_content_type or "application/octet-stream",
            width=job.output_width or 0,
            height=job.output_height or 0,
            bytes=job.output_bytes or 0,
            sha256=job.output_sha256 or "",
        )
    error = None
    if job.error_code is not None and job.status is not JobStatus.succeeded:
        error = JobError(code=job.error_code, message=job.error_message or "")
    return JobOut(
        id=job.id,
        batch_id=job.batch_id,
        index=job.index,
        status=job.status.value,
        prompt=job.prompt,
        model=job.model,
        params=job.params,
        metadata=job.metadata_,
        attempts=job.attempts,
        error=error,
        output=output,
        cost_usd=float(job.cost_usd),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def start_attempt(
    session: AsyncSession, job_id: uuid.UUID, *, provider: str, max_attempts: int, public_url: str
) -> StartedJob | Transition | None:
    """Claim the job for a new attempt. None: nothing to do (finished or cancelled).
    A Transition: the job failed here (its attempts were used up by workers that died)."""
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    # Lock order everywhere: batch row, then job row (cancel and completion do the same).
    await batch_repository.lock_batch(session, job.batch_id)
    job = await repository.lock_job(session, job_id)
    if job is None or job.status in FINAL_JOB_STATUSES:
        return None
    now = utcnow()
    abandoned = await repository.open_attempt(session, job_id)
    if abandoned is not None:
        _close_attempt(abandoned, "abandoned", "worker_lost", "the worker running it stopped")
    if job.attempts >= max_attempts:
        error = ProviderError("attempts_exhausted", f"gave up after {job.attempts} attempts")
        return await _finish(session, job, JobStatus.failed, public_url, error=error)
    job.attempts += 1
    job.status = JobStatus.running
    job.started_at = job.started_at or now
    session.add(JobAttempt(job_id=job.id, number=job.attempts, provider=provider, started_at=now))
    await repository.mark_batch_running(session, job.batch_id)
    return StartedJob(job.id, job.batch_id, job.attempts, job.prompt, job.model, job.params)


async def record_success(
    session: AsyncSession,
    started: StartedJob,
    image: GeneratedImage,
    stored: StoredObject,
    *,
    latency_ms: int,
    public_url: str,
) -> Transition:
    await batch_repository.lock_batch(session, started.batch_id)
    job = await _current(session, started)
    if job is None:
        return Transition([])
    attempt = await repository.attempt_number(session, job.id, started.attempt)
    _close_attempt(attempt, "succeeded", latency_ms=latency_ms)
    job.output_key = stored.key
    job.output_content_type = image.content_type
    job.output_width = image.width
    job.output_height = image.height
    job.output_bytes = stored.bytes
    job.output_sha256 = stored.sha256
    job.cost_usd = image.cost_usd
    job.error_code = job.error_message = None
    return await _finish(session, job, JobStatus.succeeded, public_url)


async def record_failure(
    session: AsyncSession,
    started: StartedJob,
    error: ProviderError,
    *,
    latency_ms: int,
    max_attempts: int,
    retry_in_s: float,
    public_url: str,
) -> Transition:
    """A retryable error with attempts left puts the job back in the queue; anything
    else fails it with the provider's code and message."""
    await batch_repository.lock_batch(session, started.batch_id)
    job = await _current(session, started)
    if job is None:
        return Transition([])
    attempt = await repository.attempt_number(session, job.id, started.attempt)
    if error.retryable and job.attempts < max_attempts:
        _close_attempt(attempt, "retry", error.code, error.message, latency_ms, error.http_status)
        job.status = JobStatus.queued
        job.error_code, job.error_message = error.code, error.message
        return Transition([], retry_in_s=retry_in_s)
    _close_attempt(attempt, "failed", error.code, error.message, latency_ms, error.http_status)
    return await _finish(session, job, JobStatus.failed, public_url, error=error)


async def _current(session: AsyncSession, started: StartedJob) -> Job | None:
    """The job, if this attempt still owns it (a worker that was presumed dead may
    come back after another took the job over)."""
    job = await repository.lock_job(session, started.job_id)
    if job is None or job.status is not JobStatus.running or job.attempts != started.attempt:
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
    batch = await batch_repository.lock_batch(session, job.batch_id)
    job.status = status
    job.finished_at = utcnow()
    if error is not None:
        job.error_code, job.error_message = error.code, error.message
    await session.flush()
    events: list[str] = []
    data = job_out(job, public_url).model_dump(mode="json")
    event_id = await record_event(
        session, batch=batch, type=f"job.{status.value}", data=data, job_id=job.id
    )
    if event_id is not None:
        events.append(event_id)
    if not await repository.batch_has_active_jobs(session, batch.id):
        completed = await complete_batch(session, batch)
        if completed is not None:
            events.append(completed)
    return Transition(events)


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
