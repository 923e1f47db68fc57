"""A job attempt's state machine, applied to a group of jobs in one transaction.

A worker running many jobs at once would otherwise pay a transaction (and a WAL flush)
for every claim and every outcome. Here a group of claims, or of outcomes, is read with
one statement per table, locked in one order (batch rows, then job rows, each by id),
and each job then goes through its own transition in Python, writing its own attempt
row and its own outbox event; the session flushes the group's writes together and the
caller commits once. A job alone is simply a group of one (service.jobs.service).

This module is the claim side (start_attempts); the outcome side is
service.jobs.outcomes (record_outcomes), and the steps both share (finish, requeue,
close_attempt, ...) and the Transition they return are in service.jobs.steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets import service as budgets
from service.budgets.service import GroupBudgets, Want
from service.catalog.config import Budgets
from service.jobs import fallbacks, repository
from service.jobs.steps import (
    Transition,
    _fail_or_hop,
    clear_remote,
    close_attempt,
    finish,
    release_budget,
)
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
from service.providers.base import ProviderError, RemoteHandle


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


# --- attempts used up (service.jobs.fallbacks decides) ----------------------------


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
