"""Schedules: create, change and present them, and make the run of a due time.
Never commits: the caller's scope does.

A due time becomes a batch in one transaction with its `schedule_runs` row, whose unique
(schedule, due time) pair makes it exactly one batch however many workers tick at once,
and whatever Redis forgets. The jobs are enqueued after commit, as a REST submit does;
a crash in between is what the reconciler recovers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.schemas import BatchCreate
from service.batches.service import SubmittedBatch, check_submit, submit_batch
from service.config import Settings
from service.kit.base import utcnow
from service.kit.errors import (
    ApiError,
    ErrorDetail,
    InvalidInput,
    dependency_unavailable,
    field_path,
)
from service.logging import get_logger
from service.models import ApiKey, CatchUp, RunStatus, Schedule, ScheduleRun
from service.notifications.urls import redacted
from service.providers.registry import ProviderRegistry
from service.schedules import repository
from service.schedules.cron import BadCron, latest_due, next_due
from service.schedules.schemas import (
    ScheduleCreate,
    ScheduleOut,
    ScheduleRunOut,
    ScheduleUpdate,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Planner:
    """What checking or submitting a batch body needs."""

    registry: ProviderRegistry
    settings: Settings
    redis: Redis | None


async def create_schedule(
    session: AsyncSession, *, api_key: ApiKey, body: ScheduleCreate, planner: Planner
) -> Schedule:
    await check_batch(session, api_key, body.batch, planner)
    now = utcnow()
    schedule = Schedule(
        id=uuid.uuid4(),
        api_key_id=api_key.id,
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        batch=stored_body(body.batch),
        enabled=body.enabled,
        catch_up=CatchUp(body.catch_up),
        created_at=now,
        updated_at=now,
    )
    schedule.next_run_at = _next_from_now(schedule, now)
    session.add(schedule)
    await session.flush()
    return schedule


async def update_schedule(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    schedule: Schedule,
    body: ScheduleUpdate,
    planner: Planner,
) -> Schedule:
    """The caller holds the schedule's row lock, so a tick cannot run it half-changed."""
    if body.batch is not None:
        await check_batch(session, api_key, body.batch, planner)
        schedule.batch = stored_body(body.batch)
    if body.name is not None:
        schedule.name = body.name
    if body.catch_up is not None:
        schedule.catch_up = CatchUp(body.catch_up)
    timing = False
    for name in ("cron", "timezone", "enabled"):
        value = getattr(body, name)
        if value is not None and value != getattr(schedule, name):
            setattr(schedule, name, value)
            timing = True
    if timing:
        # From now: a schedule turned back on does not catch up what it missed while off.
        schedule.next_run_at = _next_from_now(schedule, utcnow())
    schedule.updated_at = utcnow()
    await session.flush()
    return schedule


def _next_from_now(schedule: Schedule, now: datetime) -> datetime | None:
    if not schedule.enabled:
        return None
    found = next_due(schedule.cron, schedule.timezone, now)
    if found is None:
        message = "this expression is never due"
        raise InvalidInput(f"cron: {message}", details=[ErrorDetail(field="cron", message=message)])
    return found


def stored_body(body: BatchCreate) -> dict[str, Any]:
    """The body as given (defaults left out), as JSON: validated again at each run."""
    return body.model_dump(mode="json", exclude_unset=True)


async def check_batch(
    session: AsyncSession, api_key: ApiKey, body: BatchCreate, planner: Planner
) -> None:
    """The checks of a submit (templates, models, routes, media, input images), storing
    nothing; a problem is a 422 naming `batch.jobs[3].width`."""
    try:
        await check_submit(
            session,
            api_key=api_key,
            body=body,
            registry=planner.registry,
            settings=planner.settings,
            redis=planner.redis,
        )
    except InvalidInput as exc:
        details = [
            ErrorDetail(field=f"batch.{d.field}" if d.field else "batch", message=d.message)
            for d in exc.details
        ]
        raise InvalidInput(f"batch.{exc.message}", details=details, code=exc.code) from exc


def present(schedule: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.id,
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        batch=_redacted(schedule.batch),
        enabled=schedule.enabled,
        catch_up=schedule.catch_up.value,
        next_run_at=schedule.next_run_at,
        last_run_at=schedule.last_run_at,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def _redacted(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch's notify URLs carry credentials (Slack tokens, SMTP passwords): shown by
    their scheme only, as a batch shows them (notifications.urls.redacted)."""
    notify = batch.get("notify")
    if not isinstance(notify, list):
        return batch
    return {**batch, "notify": [redacted(str(url)) for url in notify]}


def present_run(run: ScheduleRun, batch_status: str | None) -> ScheduleRunOut:
    return ScheduleRunOut(
        id=run.id,
        due_at=run.due_at,
        status=run.status.value,
        batch_id=run.batch_id,
        batch_status=batch_status,
        error=run.error,
        created_at=run.created_at,
    )


@dataclass(frozen=True)
class Ran:
    """One due schedule handled: `submitted` holds the batch to enqueue after commit."""

    schedule_id: uuid.UUID
    due_at: datetime | None
    status: RunStatus | None
    submitted: SubmittedBatch | None = None


async def run_due_schedule(
    session: AsyncSession,
    *,
    now: datetime,
    planner: Planner,
    skip: frozenset[uuid.UUID] = frozenset(),
    alive_since: datetime | None = None,
) -> Ran | None:
    """Lock one due schedule (SKIP LOCKED: other workers take others), make the run of
    its most recent due time, and move next_run_at past `now`. None: nothing is due.
    `alive_since`: since when the ticks have run unbroken (the schedule clock); a due
    time is missed only if it fell due more than the grace before it. None: `now`."""
    schedule = await repository.lock_due_schedule(session, now, skip=skip)
    if schedule is None:
        return None
    try:
        return await _run(session, schedule, now, planner, alive_since or now)
    except Exception as exc:
        if dependency_unavailable(exc):
            raise
        raise ScheduleRunError(schedule.id) from exc


class ScheduleRunError(Exception):
    """Handling this schedule failed on a bug, not on Postgres or Redis being away: the
    tick leaves it due and goes on with the others."""

    def __init__(self, schedule_id: uuid.UUID) -> None:
        super().__init__(f"schedule {schedule_id} could not be run")
        self.schedule_id = schedule_id


async def _run(
    session: AsyncSession,
    schedule: Schedule,
    now: datetime,
    planner: Planner,
    alive_since: datetime,
) -> Ran:
    try:
        due = latest_due(schedule.cron, schedule.timezone, now)
        following = next_due(schedule.cron, schedule.timezone, now)
    except BadCron as exc:  # its timezone left the system's database
        log.warning("schedule_cannot_be_timed", schedule_id=str(schedule.id), error=str(exc))
        schedule.next_run_at = None
        return Ran(schedule.id, None, None)
    floor = schedule.next_run_at
    assert floor is not None  # the query found next_run_at <= now
    # Never a due time before the one recorded as next: that one's run was made.
    due = floor if due is None or due < floor else due
    # Late against when the ticks resumed, not against now: waiting in a backlog while
    # the ticks ran is no miss.
    late_s = (min(now, alive_since) - due).total_seconds()
    ran: Ran
    if schedule.catch_up is CatchUp.skip and late_s > planner.settings.schedule_grace_s:
        await repository.insert_run(
            session,
            schedule.id,
            due,
            RunStatus.skipped,
            error=f"missed by {late_s:.0f} s while nothing ran; catch_up is skip",
        )
        ran = Ran(schedule.id, due, RunStatus.skipped)
    else:
        ran = await _submit_run(session, schedule, due, planner)
    schedule.last_run_at = due
    schedule.next_run_at = following
    return ran


async def _submit_run(
    session: AsyncSession, schedule: Schedule, due: datetime, planner: Planner
) -> Ran:
    run_id = await repository.insert_run(session, schedule.id, due, RunStatus.submitted)
    if run_id is None:  # made already: this due time has its batch
        return Ran(schedule.id, due, None)
    api_key = await session.get(ApiKey, schedule.api_key_id)
    assert api_key is not None  # the query joined it
    try:
        body = BatchCreate.model_validate(schedule.batch)
        if body.name is None:
            body = body.model_copy(update={"name": schedule.name})
        async with session.begin_nested():
            submitted = await submit_batch(
                session,
                api_key=api_key,
                body=body,
                idempotency_key=f"schedule:{schedule.id}:{due.isoformat()}",
                registry=planner.registry,
                settings=planner.settings,
                redis=planner.redis,
            )
    except ValidationError as exc:
        first = exc.errors()[0]
        error = f"batch.{field_path(first['loc'])}: {first['msg']}"
    except ApiError as exc:  # the body no longer submits: a model left the config...
        error = f"batch.{exc.message}" if exc.details and exc.details[0].field else exc.message
    else:
        await _finish_run(session, run_id, RunStatus.submitted, batch_id=submitted.batch.id)
        return Ran(schedule.id, due, RunStatus.submitted, submitted)
    log.warning("schedule_run_failed", schedule_id=str(schedule.id), error=error)
    await _finish_run(session, run_id, RunStatus.failed, error=error[:2000])
    return Ran(schedule.id, due, RunStatus.failed)


async def _finish_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    status: RunStatus,
    *,
    batch_id: uuid.UUID | None = None,
    error: str | None = None,
) -> None:
    statement = (
        update(ScheduleRun)
        .where(ScheduleRun.id == run_id)
        .values(status=status, batch_id=batch_id, error=error)
    )
    await session.execute(statement)
