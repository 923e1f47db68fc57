"""A job attempt's state machine, applied to a group of jobs in one transaction.

A worker running many jobs at once would otherwise pay a transaction (and a WAL flush)
for every claim and every outcome. Here a group of claims, or of outcomes, is read with
one statement per table, locked in one order (batch rows, then job rows, each by id),
and each job then goes through its own transition in Python, writing its own attempt
row and its own outbox event; the session flushes the group's writes together and the
caller commits once. A job alone is simply a group of one (service.jobs.service).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository as batch_repository
from service.batches.service import complete_batch
from service.budgets import service as budgets
from service.budgets.service import GroupBudgets, Want
from service.catalog.config import Budgets
from service.integrations.writeback.outbox import record_writeback
from service.jobs import fallbacks, repository
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
    Output,
    ProviderError,
    ProviderRateLimited,
    RemoteHandle,
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
    remote_data: dict[str, Any] | None = None
    queue_position: int | None = None
    # The job whose output this one takes (a chain).
    parent_id: uuid.UUID | None = None

    @property
    def output_key(self) -> str:
        return f"{self.batch_id}/{self.params['output_name']}"

    @property
    def handle(self) -> RemoteHandle:
        """The generation this attempt waits for, as its provider described it at submit."""
        return RemoteHandle(self.remote_id or "", data=self.remote_data or {})


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


@dataclass(frozen=True)
class Claim:
    """A job to start a new attempt of, on `account`, before anything is sent."""

    job_id: uuid.UUID
    account: str
    max_attempts: int
    price: Decimal
    # An open attempt counts as its worker's loss only once the job has been left alone
    # this long (the reconciler's own measure): a second grant of a job whose attempt is
    # under way (two reconcilers restoring it at once) gives way instead of taking it over.
    stale_after_s: float = 0.0
    # The account's provider can find a create whose answer was lost (SubmissionLookup):
    # an attempt abandoned before its handle was stored leaves a doubt to clear there.
    can_look: bool = False


ClaimResult = StartedJob | Transition | None


async def start_attempts(
    session: AsyncSession,
    claims: Sequence[Claim],
    *,
    public_url: str,
    heads: dict[uuid.UUID, repository.JobHead] | None = None,
    account_budgets: Budgets | None = None,
) -> list[ClaimResult]:
    """Claim each job for a new attempt; one result per claim, in order (see
    service.start_attempt for what each means). Each job appears once in a group.
    `heads`: the claims' jobs as this transaction already read them, if it did.
    `account_budgets`: the configuration's (registry.budgets); key budgets are read here."""
    if heads is None:
        heads = await repository.job_heads(session, [claim.job_id for claim in claims])
    live = [heads[c.job_id] for c in claims if c.job_id in heads]
    live = [h for h in live if h.status not in FINAL_JOB_STATUSES]
    batches = {h.batch.id: h.batch for h in live}
    # A tracked budget serialises its reservations (such a batch runs once an attempt
    # starts, below); any other queued batch runs from its first claim. Once the batch
    # runs, its row is neither written nor locked here.
    to_lock = {
        b.id for b in batches.values() if b.budget_usd is not None or b.status is BatchStatus.queued
    }
    batches.update(await repository.lock_batches(session, to_lock))
    for batch in batches.values():
        if batch.status is BatchStatus.queued and batch.budget_usd is None:
            batch.status = BatchStatus.running
    # Key and account budgets: their ledgers are locked between batch and job rows.
    live_ids = {h.id for h in live}
    group = await budgets.lock_for_claims(
        session,
        [_want(c, heads[c.job_id]) for c in claims if c.job_id in live_ids],
        account_budgets.accounts if account_budgets is not None else {},
    )
    jobs = await repository.lock_jobs(session, [h.id for h in live])
    running = [job.id for job in jobs.values() if job.status is JobStatus.running]
    abandoned = await repository.open_attempts(session, running)
    now = utcnow()
    results: list[ClaimResult] = []
    for claim in claims:
        job = jobs.get(claim.job_id)
        if job is None or job.status in FINAL_JOB_STATUSES:
            results.append(None)
            continue
        batch = batches[job.batch_id]
        results.append(
            await _start(session, claim, job, batch, abandoned.get(job.id), now, public_url, group)
        )
    return results


def _want(claim: Claim, head: repository.JobHead) -> Want:
    return Want(claim.job_id, head.batch, claim.account, head.status is JobStatus.running)


async def _start(
    session: AsyncSession,
    claim: Claim,
    job: Job,
    batch: Batch,
    abandoned: JobAttempt | None,
    now: datetime,
    public_url: str,
    group: GroupBudgets,
) -> ClaimResult:
    if job.status is JobStatus.running and job.remote_id is not None:
        return None  # at the provider already: never submitted twice
    # Only a running job can have an attempt left open (by a worker that died).
    if abandoned is not None and job.status is JobStatus.running:
        if job.updated_at > now - timedelta(seconds=claim.stale_after_s):
            return None  # its worker is on it: never two attempts at once
        close_attempt(abandoned, "abandoned", "worker_lost", "the worker running it stopped")
        release_budget(batch, claim.price)
        await budgets.settle(session, abandoned, Decimal(0))
    if job.attempts >= claim.max_attempts:
        exhausted = await _exhausted(session, claim, job, batch, public_url)
        if exhausted is not None:
            return exhausted
    if batch.budget_usd is not None:
        if batch.reserved_usd + claim.price > batch.budget_usd:
            error = ProviderError(
                "budget_exceeded",
                f"the batch's budget of ${batch.budget_usd:f} would be exceeded: "
                f"${batch.reserved_usd:f} spent or reserved, this job costs ${claim.price:f}",
            )
            return await finish(session, job, batch, JobStatus.failed, public_url, error=error)
    refused = group.refusal(job.id, claim.price)
    if refused is not None:  # reserved in no budget: neither the batch's nor any other
        error = ProviderError("budget_exceeded", refused)
        return await finish(session, job, batch, JobStatus.failed, public_url, error=error)
    if batch.budget_usd is not None:
        batch.reserved_usd += claim.price
    job.attempts += 1
    job.tries += 1
    job.current_attempt = job.tries
    job.status = JobStatus.running
    job.provider = claim.account
    clear_remote(job)
    job.started_at = job.started_at or now
    session.add(
        JobAttempt(
            job_id=job.id,
            number=job.tries,
            provider=claim.account,
            model=job.model,
            started_at=now,
            reserved=group.reserve(job.id, claim.price),
        )
    )
    if batch.status is BatchStatus.queued:
        batch.status = BatchStatus.running  # a budget batch, locked above
    return StartedJob(
        job.id,
        job.batch_id,
        job.tries,
        job.prompt,
        job.model,
        job.params,
        account=claim.account,
        priority=batch.priority,
        parent_id=job.parent_id,
    )


# --- outcomes -----------------------------------------------------------------------


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


async def _exhausted(
    session: AsyncSession, claim: Claim, job: Job, batch: Batch, public_url: str
) -> Transition | None:
    """A job whose attempts were used up before this claim (by workers that died, or a
    look owed after a lost create): its next model, or its end. None: the claim goes on
    (an attempt owed to look for a lost create before the job may move)."""
    error = ProviderError("attempts_exhausted", f"gave up after {job.attempts} attempts")
    in_doubt = False
    if fallbacks.next_fallback(job) is not None and job.tries:
        last = await repository.attempt_number(session, job.id, job.tries)
        lost = last.outcome == "abandoned" and last.remote_id is None
        in_doubt = last.unconfirmed_since is not None or (claim.can_look and lost)
    account = job.provider or claim.account
    decision = fallbacks.decide(
        job, error, max_attempts=claim.max_attempts, in_doubt=in_doubt, account=account
    )
    if decision.action == "retry":
        return None
    return await _fail_or_hop(session, job, batch, error, decision, public_url, account)


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
        completed = await complete_batch(session, batch)
        events[batch_id] = [completed] if completed is not None else []
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
    """An attempt's cost is the job's too: a job costs what all its attempts cost."""
    attempt.cost_usd = cost
    job.cost_usd = (job.cost_usd or Decimal(0)) + cost


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
