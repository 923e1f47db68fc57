"""Submitting, reading and cancelling batches. Never commits: the caller's scope does."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches import repository
from service.batches.media import check_chains, resolve_media
from service.batches.schemas import BatchCounts, BatchCreate, BatchOut, JobCreate, JobFields
from service.config import Settings
from service.jobs.inputs import input_refs, validate_input_refs
from service.kit.base import utcnow
from service.kit.errors import Conflict, ErrorDetail, InvalidInput
from service.models import FINAL_BATCH_STATUSES, ApiKey, Batch, BatchStatus, Priority
from service.providers.registry import ProviderRegistry
from service.storage.naming import output_file_name, safe_output_stem
from service.webhooks.service import record_event


@dataclass(frozen=True)
class SubmittedBatch:
    batch: Batch
    created: bool
    # (job id, model) of every job created, to put in line after commit.
    jobs: list[tuple[uuid.UUID, str]]


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
    integration_id: uuid.UUID | None = None,
) -> SubmittedBatch:
    """Store a batch and all its jobs in one transaction; the caller enqueues after commit.
    `integration_id`: the CMS integration whose webhook this batch answers."""
    digest = request_hash(body)
    if idempotency_key is not None:
        replay = await _replay(session, api_key.id, idempotency_key, body)
        if replay is not None:
            return replay

    resolved = _resolve_jobs(body, registry, settings)
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
    now = utcnow()
    batch = Batch(
        id=uuid.uuid4(),
        api_key_id=api_key.id,
        name=body.name,
        status=BatchStatus.queued,
        callback_url=str(body.callback_url) if body.callback_url else None,
        metadata_=body.metadata or {},
        idempotency_key=idempotency_key,
        request_hash=digest,
        job_count=len(resolved),
        priority=Priority(body.priority),
        budget_usd=Decimal(str(body.budget_usd)) if body.budget_usd is not None else None,
        reserved_usd=Decimal(0),
        created_at=now,
        integration_id=integration_id,
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
            replay = await _replay(session, api_key.id, idempotency_key, body)
            if replay is None:
                raise
            return replay
    job_ids = [uuid.uuid4() for _ in resolved]
    rows = []
    for index, (job_id, fields) in enumerate(zip(job_ids, resolved, strict=True)):
        parent = fields.pop("parent")
        parent_id = job_ids[parent] if parent is not None else None
        rows.append(
            repository.job_copy_row(
                job_id=job_id,
                batch_id=batch.id,
                index=index,
                now=now,
                parent_id=parent_id,
                **fields,
            )
        )
    await repository.copy_jobs(session, rows)
    # A chained job waits out of line until its parent has succeeded.
    ready = [
        (job_id, fields["model"])
        for job, job_id, fields in zip(body.jobs, job_ids, resolved, strict=True)
        if job.input is None
    ]
    return SubmittedBatch(batch, created=True, jobs=ready)


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


def _resolve_jobs(
    body: BatchCreate, registry: ProviderRegistry, settings: Settings
) -> list[dict[str, Any]]:
    """Apply job -> defaults -> settings fallbacks and check what the schema cannot:
    that models exist and that no two jobs write the same file."""
    defaults = body.defaults or JobFields()
    errors: list[ErrorDetail] = []
    resolved: list[dict[str, Any]] = []
    taken: dict[str, int] = {}
    for index, job in enumerate(body.jobs):
        fields = _resolve_one(index, job, defaults, settings)
        problem = _model_problem(fields["model"], registry)
        if problem is not None:
            errors.append(ErrorDetail(field=f"jobs[{index}].model", message=problem))
        spec = registry.model(fields["model"])
        params = fields["params"]
        errors += resolve_media(index, job, defaults, spec, params, settings.default_format)
        if params["output_name"]:  # named before its format was known
            params["output_name"] = output_file_name(
                params["output_name"].rsplit(".", 1)[0], params["format"]
            )
        name = fields["params"]["output_name"]
        if name:  # a name that sanitised to nothing is named by index below
            clash = taken.get(name.lower())
            if clash is not None:
                errors.append(
                    ErrorDetail(
                        field=f"jobs[{index}].output_name",
                        message=f"writes the same file {name!r} as jobs[{clash}]",
                    )
                )
            taken.setdefault(name.lower(), index)
        resolved.append(fields)
    _name_unnamed_jobs(body.jobs, resolved, taken)
    errors += check_chains(
        body.jobs, [fields["params"].get("media", "image") for fields in resolved]
    )
    if errors:
        first = errors[0]
        raise InvalidInput(f"{first.field}: {first.message}", details=errors[:100])
    return resolved


def _model_problem(model: str, registry: ProviderRegistry) -> str | None:
    """Why jobs cannot use this model, if they cannot: unknown, or its provider account
    has no token in this environment (it would fail at the provider anyway)."""
    spec = registry.model(model)
    if spec is None:
        return f"unknown model {model!r}; known: {sorted(registry.models)}"
    account = registry.accounts.get(spec.provider)
    missing = account.missing_env() if account is not None else []
    if missing:
        return (
            f"model {model!r} runs on provider {spec.provider!r}, whose credentials "
            f"({', '.join(missing)}) are not set"
        )
    return None


def _resolve_one(
    index: int, job: JobCreate, defaults: JobFields, settings: Settings
) -> dict[str, Any]:
    fmt = job.format or defaults.format or settings.default_format
    seed = job.seed if job.seed is not None else defaults.seed
    stem = safe_output_stem(job.output_name) if job.output_name else ""
    params = {
        "width": job.width or defaults.width or settings.default_width,
        "height": job.height or defaults.height or settings.default_height,
        "format": fmt,
        # An unseeded job gets a seed now, so what it made can be made again.
        "seed": seed if seed is not None else secrets.randbelow(2**32),
        "output_name": output_file_name(stem, fmt) if stem else "",
    }
    return {
        "prompt": job.prompt,
        "model": job.model or defaults.model or settings.default_model,
        "params": params,
        "metadata": {**(defaults.metadata or {}), **(job.metadata or {})},
        "parent": job.input.job if job.input is not None else None,
    }


def _name_unnamed_jobs(
    jobs: list[JobCreate], resolved: list[dict[str, Any]], taken: dict[str, int]
) -> None:
    for index, fields in enumerate(resolved):
        params = fields["params"]
        if params["output_name"]:
            continue
        name = output_file_name(f"{index:05d}", params["format"])
        if name.lower() in taken:
            name = output_file_name(f"{index:05d}-{secrets.token_hex(4)}", params["format"])
        params["output_name"] = name
        taken[name.lower()] = index


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
        budget_usd=float(batch.budget_usd) if batch.budget_usd is not None else None,
        created_at=batch.created_at,
        completed_at=batch.completed_at,
        metadata=batch.metadata_,
        callback_url=batch.callback_url,
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


async def complete_batch(session: AsyncSession, batch: Batch) -> str | None:
    """Give a batch with no active job left its final status and write batch.completed.

    The caller holds the batch row lock (repository.lock_batch), so exactly one
    transaction completes a batch. Returns the id of the event to deliver, if any."""
    if batch.status in FINAL_BATCH_STATUSES:
        return None
    totals = (await repository.totals_for(session, [batch.id]))[batch.id]
    if totals.active:
        return None
    batch.status = final_status(batch, totals)
    batch.completed_at = utcnow()
    await session.flush()
    data = batch_out(batch, totals).model_dump(mode="json")
    return await record_event(session, batch=batch, type="batch.completed", data=data)


async def cancel_batch(session: AsyncSession, batch: Batch) -> str | None:
    """Queued jobs become cancelled. Running ones are cancelled at their provider after
    commit (jobs.tasks.enqueue_cancel) or finish; the batch ends cancelled once nothing
    runs. The caller holds the batch row lock."""
    if batch.status in FINAL_BATCH_STATUSES:
        if batch.status is BatchStatus.cancelled:
            return None
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
