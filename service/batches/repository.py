"""Queries for batches and their jobs."""

from __future__ import annotations

import json
import json.encoder
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.jobs import fallbacks
from service.models import Batch, Job, JobAttempt, JobStatus

_QUEUED = JobStatus.queued.value
_ZERO = Decimal(0)


def _json_encoder() -> Callable[[Any], str]:
    """json.dumps with its defaults, minus the ~8 us each call spends building its C
    encoder: a 50,000-job COPY dumps 150,000 small dicts. The values come from parsed
    JSON (never cyclic), so the circular-reference markers are left out."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)  # not in the stubs
    if make is None:  # no _json C module: the plain way
        return json.dumps
    iterencode = make(
        None,  # markers
        json.JSONEncoder().default,  # raises TypeError for what JSON cannot hold
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def dumps(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return dumps


_dumps = _json_encoder()

JOB_COPY_COLUMNS = (
    "id",
    "batch_id",
    "index",
    "status",
    "prompt",
    "model",
    "params",
    "metadata",
    "attempts",
    "cost_usd",
    "created_at",
    "updated_at",
    "parent_id",
    "route",
    "variables",
)


@dataclass(frozen=True)
class BatchTotals:
    counts: dict[str, int]
    cost_usd: Decimal
    # cost_usd split by the model of each attempt (they sum to cost_usd).
    by_model: dict[str, Decimal] = field(default_factory=dict)

    @property
    def active(self) -> int:
        return self.counts.get("queued", 0) + self.counts.get("running", 0)


async def copy_jobs(session: AsyncSession, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert many jobs with one COPY, inside the session's transaction.

    One INSERT per job costs a round trip each; COPY streams them all at once. `rows`
    may be a generator: asyncpg sends each ~512 KiB as it is encoded."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_records_to_table("jobs", records=rows, columns=JOB_COPY_COLUMNS)


def job_copy_row(
    *,
    job_id: uuid.UUID,
    batch_id: uuid.UUID,
    index: int,
    prompt: str,
    model: str,
    params: dict[str, Any],
    metadata: dict[str, Any],
    now: datetime,
    parent_id: uuid.UUID | None = None,
    route: str | None = None,
    variables: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    return (
        job_id,
        batch_id,
        index,
        _QUEUED,
        prompt,
        model,
        _dumps(params),
        _dumps(metadata) if metadata else "{}",
        0,
        _ZERO,
        now,
        now,
        parent_id,
        route,
        _dumps(variables) if variables is not None else None,
    )


async def get_batch(
    session: AsyncSession, batch_id: uuid.UUID, api_key_id: uuid.UUID, *, for_update: bool = False
) -> Batch | None:
    query = select(Batch).where(Batch.id == batch_id, Batch.api_key_id == api_key_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def lock_batch(session: AsyncSession, batch_id: uuid.UUID) -> Batch:
    """Serialises the transitions that decide whether a batch is complete."""
    query = (
        select(Batch)
        .where(Batch.id == batch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one()


async def get_by_idempotency_key(
    session: AsyncSession, api_key_id: uuid.UUID, key: str
) -> Batch | None:
    query = select(Batch).where(Batch.api_key_id == api_key_id, Batch.idempotency_key == key)
    return (await session.execute(query)).scalar_one_or_none()


async def totals_for(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID], *, by_model: bool = True
) -> dict[uuid.UUID, BatchTotals]:
    """Job counts by status and spend (in all, and by model), for each batch: derived,
    never stored twice. Two queries whatever the number of batches (one without
    `by_model`)."""
    query = (
        select(Job.batch_id, Job.status, func.count(), func.coalesce(func.sum(Job.cost_usd), 0))
        .where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.status)
    )
    counts: dict[uuid.UUID, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
    costs: dict[uuid.UUID, Decimal] = dict.fromkeys(batch_ids, Decimal(0))
    for batch_id, status, count, cost in await session.execute(query):
        counts[batch_id][JobStatus(status).value] = count
        costs[batch_id] += Decimal(cost)
    split = await costs_by_model(session, batch_ids) if by_model else {}
    return {
        batch_id: BatchTotals(counts[batch_id], costs[batch_id], split.get(batch_id, {}))
        for batch_id in batch_ids
    }


async def costs_by_model(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Decimal]]:
    """What each batch's attempts cost, by the model each ran (an attempt made before
    models were recorded counts for its job's model). Attempts that cost nothing are
    left out."""
    model = func.coalesce(JobAttempt.model, Job.model)
    query = (
        select(Job.batch_id, model, func.sum(JobAttempt.cost_usd))
        .join(JobAttempt, JobAttempt.job_id == Job.id)
        .where(Job.batch_id.in_(batch_ids), JobAttempt.cost_usd != 0)
        .group_by(Job.batch_id, model)
    )
    out: dict[uuid.UUID, dict[str, Decimal]] = {}
    for batch_id, name, cost in await session.execute(query):
        out.setdefault(batch_id, {})[name] = Decimal(cost)
    return out


async def list_batches(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Batch]:
    query = select(Batch).where(Batch.api_key_id == api_key_id)
    if after is not None:
        query = query.where(tuple_(Batch.created_at, Batch.id) < tuple_(*after))
    query = query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_jobs(
    session: AsyncSession,
    batch_id: uuid.UUID,
    *,
    status: JobStatus | None,
    limit: int,
    after_index: int | None,
) -> list[Job]:
    query = select(Job).where(Job.batch_id == batch_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after_index is not None:
        query = query.where(Job.index > after_index)
    query = query.order_by(Job.index).limit(limit)
    return list((await session.execute(query)).scalars())


async def cancel_queued_jobs(session: AsyncSession, batch_id: uuid.UUID, now: datetime) -> int:
    result = await session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def requeue_failed_jobs(
    session: AsyncSession, batch_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    """Failed jobs become queued with their attempt count reset (their attempt rows stay);
    one that moved to fallbacks starts again from its first model."""
    moved = await session.scalars(
        select(Job)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.failed)
        .where(Job.params.has_key("origin"))
    )
    for job in moved:
        fallbacks.restart(job)
    await session.flush()
    result = await session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.failed)
        .values(
            status=JobStatus.queued,
            attempts=0,
            current_attempt=None,
            remote_id=None,
            remote_data=None,
            queue_position=None,
            submitted_at=None,
            error_code=None,
            error_message=None,
            finished_at=None,
            updated_at=func.now(),
        )
        .returning(Job.id, Job.model, Job.parent_id)
        .execution_options(synchronize_session=False)
    )
    rows = list(result)
    # A chained job goes back in line only once its parent has succeeded; one whose
    # parent is retried too waits for it.
    parents = {parent_id for _, _, parent_id in rows if parent_id is not None}
    done = set()
    if parents:
        query = select(Job.id).where(Job.id.in_(parents), Job.status == JobStatus.succeeded)
        done = set((await session.execute(query)).scalars())
    return [
        (job_id, model)
        for job_id, model, parent_id in rows
        if parent_id in done or parent_id is None
    ]
