"""The steps both sides of a job attempt's state machine share: the claim side
(service.jobs.transitions) and the outcome side (service.jobs.outcomes) both end jobs,
move them to their next model, put them back in line and close their attempts. Here
too is what either side hands the task to do after commit (Transition).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository as batch_repository
from service.batches.service import complete_batch
from service.catalog.pricing import MAX_USD
from service.integrations.writeback.outbox import record_writeback
from service.jobs import fallbacks, repository
from service.jobs.presenter import job_out
from service.kit.base import utcnow
from service.models import Batch, Job, JobAttempt, JobStatus, Priority
from service.providers.base import ProviderError
from service.webhooks.service import record_event


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
    # Chained jobs that waited for this one and may now run: (job id, model), to put in
    # line (at `priority`) after commit.
    released: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    priority: Priority = Priority.bulk
    # The job moved to another model (a fallback): put it in line on that model's account.
    hopped: Hopped | None = None


@dataclass(frozen=True)
class Hopped:
    job_id: uuid.UUID
    batch_id: uuid.UUID
    model: str


async def _fail_or_hop(
    session: AsyncSession,
    job: Job,
    batch: Batch,
    error: ProviderError,
    decision: fallbacks.Decision,
    public_url: str,
    account: str | None = None,
) -> Transition:
    """The current model failed for good: move to the next one, or fail with every
    model's reason. The attempt is already closed."""
    account = account or job.provider or ""
    # A batch being cancelled starts nothing new, on any model.
    moving = decision.action == "hop" and batch.cancel_requested_at is None
    if moving and decision.fallback is not None:
        fallbacks.hop(job, decision.fallback, error, account)
        requeue(job)
        job.error_code, job.error_message = error.code, error.message
        hopped = Hopped(job.id, job.batch_id, job.model)
        return Transition([], priority=batch.priority, hopped=hopped)
    final = fallbacks.final_error(job, error, account, decision.note)
    return await finish(session, job, batch, JobStatus.failed, public_url, error=final)


async def complete_idle_batches(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """Complete each batch with no active job left; the events to deliver, by batch.

    Run after the jobs' final states committed, in a transaction of its own: of two
    last jobs finishing at once, each sees the other's commit here, and the batch row
    lock makes exactly one of them complete the batch."""
    active = await repository.batches_with_active_jobs(session, batch_ids)
    events: dict[uuid.UUID, list[str]] = {}
    for batch_id in sorted(set(batch_ids) - active):
        batch = await batch_repository.lock_batch(session, batch_id)
        events[batch_id] = await complete_batch(session, batch)
    return events


# --- one job's steps ------------------------------------------------------------------


async def finish(
    session: AsyncSession,
    job: Job,
    batch: Batch,
    status: JobStatus,
    public_url: str,
    *,
    error: ProviderError | None = None,
) -> Transition:
    """The job's final state and its event; whether that completes the batch is
    decided after commit (complete_idle_batches), so jobs of one batch finish in
    parallel."""
    job.status = status
    job.finished_at = utcnow()
    if error is not None:
        job.error_code, job.error_message = error.code, error.message
    event_ids: list[str] = []
    if batch.callback_url:  # the event's body costs a render: only when it is sent
        data = job_out(job, public_url).model_dump(mode="json")
        event_id = await record_event(
            session, batch=batch, type=f"job.{status.value}", data=data, job_id=job.id
        )
        event_ids += [event_id] if event_id else []
    if status is JobStatus.succeeded and batch.integration_id is not None:
        writeback_id = await record_writeback(session, batch, job)
        event_ids += [writeback_id] if writeback_id else []
    released: list[tuple[uuid.UUID, str]] = []
    if status is JobStatus.succeeded:
        released = await repository.waiting_children(session, job.id)
    elif status is JobStatus.failed:
        event_ids += await _fail_children(session, job, batch, public_url)
    return Transition(
        event_ids, batch_to_check=batch.id, released=released, priority=batch.priority
    )


async def _fail_children(
    session: AsyncSession, parent: Job, batch: Batch, public_url: str
) -> list[str]:
    """Chained jobs cannot run without their parent's output: they fail with it (and
    theirs with them), in the same transaction."""
    event_ids: list[str] = []
    for child in await repository.lock_waiting_children(session, parent.id):
        error = ProviderError(
            "parent_failed",
            f"job {parent.index}, whose output this job takes, failed: "
            f"{parent.error_code}: {parent.error_message}",
        )
        done = await finish(session, child, batch, JobStatus.failed, public_url, error=error)
        event_ids += done.event_ids
    return event_ids


def requeue(job: Job) -> None:
    job.status = JobStatus.queued
    job.current_attempt = None
    clear_remote(job)


def clear_remote(job: Job) -> None:
    """The job no longer waits at a provider."""
    job.remote_id = None
    job.remote_data = None
    job.queue_position = None
    job.submitted_at = None


def charge(attempt: JobAttempt, job: Job, cost: Decimal) -> None:
    """An attempt's cost is the job's too: a job costs what all its attempts cost (held
    at what the column can hold, as each attempt's is: an overflow would fail the
    transaction, and the job would run, and be paid for, again)."""
    attempt.cost_usd = cost
    job.cost_usd = min((job.cost_usd or Decimal(0)) + cost, MAX_USD)


def release_budget(batch: Batch, price: Decimal) -> None:
    if batch.budget_usd is not None and price:
        batch.reserved_usd = max(Decimal(0), batch.reserved_usd - price)


def close_attempt(
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
