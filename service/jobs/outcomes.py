"""The outcome side of a job attempt's state machine: each attempt's result (success,
failure, 429, cancellation) recorded for a group of jobs in one transaction, as
service.jobs.transitions describes. The steps it shares with the claim side are in
service.jobs.steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets import service as budgets
from service.jobs import fallbacks, repository
from service.jobs.steps import (
    Transition,
    _fail_or_hop,
    charge,
    close_attempt,
    finish,
    release_budget,
    requeue,
)
from service.jobs.transitions import StartedJob
from service.models import Batch, Job, JobAttempt, JobStatus
from service.providers.base import Output, ProviderError, ProviderRateLimited
from service.storage.base import StoredObject


@dataclass(frozen=True)
class Succeeded:
    """`price` is what the claim reserved against the budget, `cost` what the output
    cost in the end (the provider's figure when it reports one)."""

    started: StartedJob
    output: Output
    stored: StoredObject
    latency_ms: int | None
    cost: Decimal
    price: Decimal


@dataclass(frozen=True)
class Failed:
    """A retryable error with attempts left puts the job back in line after a backoff;
    anything else fails it with the provider's code and message."""

    started: StartedJob
    error: ProviderError
    latency_ms: int | None
    max_attempts: int
    retry_in_s: float
    price: Decimal
    # What the provider charges for this failure (service.catalog.pricing.failed).
    cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class RateLimited:
    """A 429 is the account's problem, not the job's: the attempt is recorded but not
    counted, and the job goes back to the front of its batch's line."""

    started: StartedJob
    error: ProviderRateLimited
    latency_ms: int
    price: Decimal


@dataclass(frozen=True)
class Cancelled:
    """The batch was cancelled while this job ran at its provider; the provider was told."""

    started: StartedJob
    price: Decimal


Outcome = Succeeded | Failed | RateLimited | Cancelled


async def record_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], *, public_url: str
) -> list[Transition]:
    """Record each attempt's outcome, if that attempt still owns its job (a worker that
    was presumed dead may come back after another took the job over): one Transition
    per outcome, in order. Each job appears once in a group."""
    batch_ids = {o.started.batch_id for o in outcomes}
    batches = await repository.get_batches(session, batch_ids)
    budgeted = {b.id for b in batches.values() if b.budget_usd is not None}
    batches.update(await repository.lock_batches(session, budgeted))
    # Read before the job rows are locked (an attempt not owned is skipped below), so
    # that the ledgers they reserved in are locked in order, between batches and jobs.
    keys = [(o.started.job_id, o.started.attempt) for o in outcomes]
    attempts = await repository.numbered_attempts(session, keys)
    await budgets.lock_reserved(session, attempts.values())
    jobs = await repository.lock_jobs(session, [o.started.job_id for o in outcomes])
    results: list[Transition] = []
    for outcome in outcomes:
        started = outcome.started
        job = jobs.get(started.job_id)
        attempt = attempts.get((started.job_id, started.attempt))
        if job is None or attempt is None or not _owns(job, started):
            results.append(Transition([]))
            continue
        batch = batches[job.batch_id]
        results.append(await _apply(session, outcome, batch, job, attempt, public_url))
    return results


def _owns(job: Job | None, started: StartedJob) -> bool:
    return (
        job is not None
        and job.status is JobStatus.running
        and job.current_attempt == started.attempt
    )


async def _apply(
    session: AsyncSession,
    outcome: Outcome,
    batch: Batch,
    job: Job,
    attempt: JobAttempt,
    public_url: str,
) -> Transition:
    if isinstance(outcome, Succeeded):
        output, stored = outcome.output, outcome.stored
        close_attempt(attempt, "succeeded", latency_ms=outcome.latency_ms)
        attempt.usage = output.usage or None
        job.output_key = stored.key
        job.output_content_type = output.content_type
        job.output_width = output.width
        job.output_height = output.height
        job.output_duration_s = output.duration_s
        job.output_frames = output.frames
        job.output_bytes = stored.bytes
        job.output_sha256 = stored.sha256
        charge(attempt, job, outcome.cost)
        await budgets.settle(session, attempt, outcome.cost)
        job.error_code = job.error_message = None
        if batch.budget_usd is not None:
            # The estimate reserved at the start becomes what it cost.
            batch.reserved_usd += outcome.cost - outcome.price
        return await finish(session, job, batch, JobStatus.succeeded, public_url)
    release_budget(batch, outcome.price)
    await budgets.settle(
        session, attempt, outcome.cost if isinstance(outcome, Failed) else Decimal(0)
    )
    if isinstance(outcome, Failed):
        error = outcome.error
        if error.usage:
            attempt.usage = dict(error.usage)
        if outcome.cost:
            charge(attempt, job, outcome.cost)
            if batch.budget_usd is not None:
                batch.reserved_usd += outcome.cost
        decision = _after_failure(job, attempt, outcome)
        if decision.action == "retry":
            close_attempt(
                attempt, "retry", error.code, error.message, outcome.latency_ms, error.http_status
            )
            attempt.note = decision.note or attempt.note
            requeue(job)
            job.error_code, job.error_message = error.code, error.message
            return Transition([], retry_in_s=outcome.retry_in_s)
        close_attempt(
            attempt, "failed", error.code, error.message, outcome.latency_ms, error.http_status
        )
        return await _fail_or_hop(
            session, job, batch, error, decision, public_url, outcome.started.account
        )
    if isinstance(outcome, RateLimited):
        error = outcome.error
        close_attempt(attempt, "rate_limited", error.code, error.message, outcome.latency_ms, 429)
        job.attempts -= 1
        requeue(job)
        return Transition([], requeue_front=True)
    close_attempt(attempt, "cancelled", "cancelled", "the batch was cancelled")
    return await finish(session, job, batch, JobStatus.cancelled, public_url)


# --- fallbacks (service.jobs.fallbacks decides) ---------------------------------------


def _after_failure(job: Job, attempt: JobAttempt, outcome: Failed) -> fallbacks.Decision:
    return fallbacks.decide(
        job,
        outcome.error,
        max_attempts=outcome.max_attempts,
        in_doubt=attempt.unconfirmed_since is not None,
        account=outcome.started.account,
    )
