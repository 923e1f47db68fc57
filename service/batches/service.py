"""Submitting, reading and cancelling batches. Never commits: the caller's scope does."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository
from service.batches.plan import PlannedJob, cooled_models, estimates, plan_jobs, route_candidates
from service.batches.schemas import (
    BatchCounts,
    BatchCreate,
    BatchCreated,
    BatchOut,
    DryRunJob,
    DryRunOut,
)
from service.config import Settings
from service.jobs.inputs import input_refs, validate_input_refs
from service.kit.base import utcnow
from service.kit.errors import Conflict, ErrorDetail, InvalidInput
from service.models import FINAL_BATCH_STATUSES, ApiKey, Batch, BatchStatus, Priority
from service.notifications.outbox import record_notifications
from service.notifications.urls import check_notify, redacted
from service.providers.registry import ProviderRegistry
from service.templates.expand import Expanded, expand_templates
from service.webhooks.service import record_event


@dataclass(frozen=True)
class SubmittedBatch:
    batch: Batch
    created: bool
    # (job id, model) of every job created, to put in line after commit.
    jobs: list[tuple[uuid.UUID, str]]
    # The batch's estimated cost, and split by model (a replay has none).
    estimate_usd: float = 0.0
    estimate_by_model: dict[str, float] = field(default_factory=dict)

    def created_out(self) -> BatchCreated:
        """The 202 body: every job queued, nothing spent yet, and the estimate."""
        out = batch_out(
            self.batch, repository.BatchTotals({"queued": len(self.jobs)}, cost_usd=Decimal(0))
        )
        return BatchCreated(
            **out.model_dump(),
            estimate_usd=self.estimate_usd,
            estimate_by_model=self.estimate_by_model,
        )


def request_hash(body: BatchCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


async def submit_batch(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    body: BatchCreate,
    idempotency_key: str | None,
    registry: ProviderRegistry,
    settings: Settings,
    redis: Redis | None = None,
    integration_id: uuid.UUID | None = None,
) -> SubmittedBatch:
    """Store a batch and all its jobs in one transaction; the caller enqueues after commit.
    `redis`: where models' health is (routes skip a model cooling down); None: all are
    healthy. `integration_id`: the CMS integration whose webhook this batch answers."""
    # Only a replay of an Idempotency-Key compares it: hashing a 50,000-job body costs 0.2 s.
    digest = request_hash(body) if idempotency_key is not None else None
    if idempotency_key is not None:
        replay = await _replay(session, api_key.id, idempotency_key, body)
        if replay is not None:
            return replay

    sent = body  # what the Idempotency-Key is bound to (its hash is above)
    expanded, planned = await check_submit(
        session, api_key=api_key, body=sent, registry=registry, settings=settings, redis=redis
    )
    body = expanded.body  # every job with its prompt
    resolved = [job.fields for job in planned]
    now = utcnow()
    batch = Batch(
        id=uuid.uuid4(),
        api_key_id=api_key.id,
        name=body.name,
        status=BatchStatus.queued,
        callback_url=str(body.callback_url) if body.callback_url else None,
        notify=list(body.notify) if body.notify else None,
        metadata_=body.metadata or {},
        idempotency_key=idempotency_key,
        request_hash=digest,
        job_count=len(resolved),
        priority=Priority(body.priority),
        budget_usd=Decimal(str(body.budget_usd)) if body.budget_usd is not None else None,
        reserved_usd=Decimal(0),
        created_at=now,
        integration_id=integration_id,
        templates=expanded.templates,
    )
    if idempotency_key is None:  # nothing to collide with: no savepoint (two round trips)
        session.add(batch)
        await session.flush()  # the jobs' COPY below goes around the ORM
    else:
        try:
            async with session.begin_nested():
                session.add(batch)
        except IntegrityError:
            # A concurrent request with this Idempotency-Key committed first: the unique
            # constraint waited for it, so its batch is visible now.
            replay = await _replay(session, api_key.id, idempotency_key, sent)
            if replay is None:
                raise
            return replay
    job_ids = [uuid.uuid4() for _ in resolved]

    def rows() -> Iterator[tuple[Any, ...]]:
        # Made as the COPY streams them: Postgres stores the first rows while the rest
        # are serialised here.
        for index, (job_id, fields, job) in enumerate(
            zip(job_ids, resolved, body.jobs, strict=True)
        ):
            parent = fields.pop("parent")
            yield repository.job_copy_row(
                job_id=job_id,
                batch_id=batch.id,
                index=index,
                now=now,
                parent_id=job_ids[parent] if parent is not None else None,
                variables=job.variables,
                **fields,
            )

    await repository.copy_jobs(session, rows())
    # A chained job waits out of line until its parent has succeeded.
    ready = [
        (job_id, fields["model"])
        for job, job_id, fields in zip(body.jobs, job_ids, resolved, strict=True)
        if job.input is None
    ]
    total, by_model = estimates(planned)
    return SubmittedBatch(
        batch, created=True, jobs=ready, estimate_usd=total, estimate_by_model=by_model
    )


async def check_submit(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    body: BatchCreate,
    registry: ProviderRegistry,
    settings: Settings,
    redis: Redis | None,
) -> tuple[Expanded, list[PlannedJob]]:
    """The one check of a batch body, whatever takes it (a submit, a dry run, a schedule):
    its templates expanded, then every job planned. Stores nothing; a 422 names each
    problem. Checking in one place keeps what a schedule accepts what a submit accepts."""
    expanded = await expand_templates(session, api_key.id, body)
    planned = await plan_batch(
        session,
        api_key=api_key,
        body=expanded.body,
        registry=registry,
        settings=settings,
        redis=redis,
    )
    return expanded, planned


async def plan_batch(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    body: BatchCreate,
    registry: ProviderRegistry,
    settings: Settings,
    redis: Redis | None,
) -> list[PlannedJob]:
    """Every job resolved, routed, mapped and estimated, and its input images checked
    (they exist and are the key's); stores nothing. A 422 names every problem."""
    notify_problems = await check_notify(body.notify, settings)
    if notify_problems:
        first = notify_problems[0]
        raise InvalidInput(f"{first.field}: {first.message}", details=notify_problems)
    cooled = await cooled_models(redis, route_candidates(body, registry, settings))
    planned = plan_jobs(body, registry, settings, cooled)
    refs = [
        ref
        for index, job in enumerate(body.jobs)
        for ref in input_refs(job.reference_images or [], job.mask, prefix=f"jobs[{index}].")
    ]
    if refs:
        problems = await validate_input_refs(session, api_key, refs, settings=settings)
        if problems:
            first = problems[0]
            raise InvalidInput(f"{first.field}: {first.message}", details=problems[:100])
    return planned


async def dry_run(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    body: BatchCreate,
    registry: ProviderRegistry,
    settings: Settings,
    redis: Redis | None,
) -> DryRunOut:
    """What a submit of this body would do: the same checks and the same 422, nothing
    stored, nothing queued."""
    _, planned = await check_submit(
        session, api_key=api_key, body=body, registry=registry, settings=settings, redis=redis
    )
    total, by_model = estimates(planned)
    jobs = []
    for index, job in enumerate(planned):
        params = job.fields["params"]
        jobs.append(
            DryRunJob(
                index=index,
                model=job.fields["model"],
                route=job.fields["route"],
                routing=params.get("routing"),
                mapped=params.get("mapped"),
                fallbacks=[hop["model"] for hop in params.get("fallbacks", [])],
                estimate_usd=float(job.estimate_usd),
            )
        )
    return DryRunOut(
        valid=True,
        job_count=len(planned),
        estimate_usd=total,
        estimate_by_model=by_model,
        jobs=jobs,
    )


async def _replay(
    session: AsyncSession, api_key_id: uuid.UUID, idempotency_key: str, body: BatchCreate
) -> SubmittedBatch | None:
    existing = await repository.get_by_idempotency_key(session, api_key_id, idempotency_key)
    if existing is None:
        return None
    ensure_same_request(existing, body)
    return SubmittedBatch(existing, created=False, jobs=[])


def ensure_same_request(batch: Batch, body: BatchCreate) -> None:
    """An Idempotency-Key replay must carry the body it was first used with."""
    if batch.request_hash != request_hash(body):
        raise Conflict(
            "Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
            details=[ErrorDetail(field="Idempotency-Key", message="used with another body")],
        )


def batch_out(batch: Batch, totals: repository.BatchTotals) -> BatchOut:
    counts = totals.counts
    return BatchOut(
        id=batch.id,
        name=batch.name,
        status=batch.status.value,
        priority=batch.priority.value,
        counts=BatchCounts(
            total=batch.job_count,
            queued=counts.get("queued", 0),
            running=counts.get("running", 0),
            succeeded=counts.get("succeeded", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
        ),
        cost_usd=float(totals.cost_usd),
        cost_by_model={model: float(usd) for model, usd in sorted(totals.by_model.items())},
        budget_usd=float(batch.budget_usd) if batch.budget_usd is not None else None,
        created_at=batch.created_at,
        completed_at=batch.completed_at,
        metadata=batch.metadata_,
        callback_url=batch.callback_url,
        notify=[redacted(url) for url in batch.notify or []],
    )


async def present_batch(session: AsyncSession, batch: Batch) -> BatchOut:
    totals = await repository.totals_for(session, [batch.id])
    return batch_out(batch, totals[batch.id])


def final_status(batch: Batch, totals: repository.BatchTotals) -> BatchStatus:
    if batch.cancel_requested_at is not None:
        return BatchStatus.cancelled
    succeeded = totals.counts.get("succeeded", 0)
    failed = totals.counts.get("failed", 0)
    if failed == 0:
        return BatchStatus.succeeded
    return BatchStatus.failed if succeeded == 0 else BatchStatus.partially_failed


async def complete_batch(session: AsyncSession, batch: Batch) -> list[str]:
    """Give a batch with no active job left its final status and write batch.completed
    and its notifications.

    The caller holds the batch row lock (repository.lock_batch), so exactly one
    transaction completes a batch. Returns the ids of the events to deliver."""
    if batch.status in FINAL_BATCH_STATUSES:
        return []
    totals = (await repository.totals_for(session, [batch.id], by_model=False))[batch.id]
    if totals.active:
        return []
    split = await repository.costs_by_model(session, [batch.id])
    totals = replace(totals, by_model=split.get(batch.id, {}))
    batch.status = final_status(batch, totals)
    batch.completed_at = utcnow()
    await session.flush()
    data = batch_out(batch, totals).model_dump(mode="json")
    completed = await record_event(session, batch=batch, type="batch.completed", data=data)
    notified = await record_notifications(session, batch, data)
    return ([completed] if completed is not None else []) + notified


async def cancel_batch(session: AsyncSession, batch: Batch) -> list[str]:
    """Queued jobs become cancelled. Running ones are cancelled at their provider after
    commit (jobs.tasks.enqueue_cancel) or finish; the batch ends cancelled once nothing
    runs. The caller holds the batch row lock."""
    if batch.status in FINAL_BATCH_STATUSES:
        if batch.status is BatchStatus.cancelled:
            return []
        raise Conflict(
            f"batch already finished with status {batch.status.value}", code="batch_finished"
        )
    now = utcnow()
    if batch.cancel_requested_at is None:
        batch.cancel_requested_at = now
    await repository.cancel_queued_jobs(session, batch.id, now)
    return await complete_batch(session, batch)


async def retry_batch(session: AsyncSession, batch: Batch) -> list[tuple[uuid.UUID, str]]:
    """Put the batch's failed jobs back in line with fresh attempts; returns (job id,
    model) of each, to enqueue after commit. The caller holds the batch row lock."""
    if batch.cancel_requested_at is not None:
        raise Conflict("a cancelled batch cannot be retried", code="batch_cancelled")
    jobs = await repository.requeue_failed_jobs(session, batch.id)
    if not jobs:
        raise Conflict("the batch has no failed jobs to retry", code="nothing_to_retry")
    batch.status = BatchStatus.running
    batch.completed_at = None
    return jobs
