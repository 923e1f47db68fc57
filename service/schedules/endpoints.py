"""/v1/schedules: thin handlers; the work is in service.py. A key sees only its own
schedules: another key's is a 404, as if it did not exist."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.errors import ERROR_RESPONSES, NotFound
from service.kit.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    after_created,
    decode_time_uuid_cursor,
    encode_time_cursor,
    keyset_page,
)
from service.models import Schedule
from service.schedules import repository, service
from service.schedules.schemas import (
    ScheduleCreate,
    ScheduleOut,
    SchedulePage,
    ScheduleRunPage,
    ScheduleUpdate,
)
from service.state import State

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], responses=ERROR_RESPONSES)


def _planner(state: State) -> service.Planner:
    return service.Planner(state.registry, state.settings, state.redis)


@router.post("", status_code=201)
async def create_schedule(
    body: ScheduleCreate,
    response: Response,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> ScheduleOut:
    """Submit `batch` at every due time of `cron` in `timezone`. The batch body is
    checked now, as POST /v1/batches would check it."""
    schedule = await service.create_schedule(
        session, api_key=api_key, body=body, planner=_planner(state)
    )
    response.headers["Location"] = f"/v1/schedules/{schedule.id}"
    return service.present(schedule)


@router.get("")
async def list_schedules(
    session: SessionDep, api_key: ApiKeyDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> SchedulePage:
    """The key's schedules, newest first."""
    after = decode_time_uuid_cursor(cursor)
    rows = await repository.list_schedules(session, api_key.id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(rows, limit, after_created)
    return SchedulePage(items=[service.present(s) for s in page], next_cursor=next_cursor)


@router.get("/{schedule_id}")
async def get_schedule(
    schedule_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep
) -> ScheduleOut:
    return service.present(await _own(session, api_key.id, schedule_id))


@router.patch("/{schedule_id}")
async def update_schedule(
    schedule_id: uuid.UUID,
    body: ScheduleUpdate,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> ScheduleOut:
    """Change what is given; a new cron, timezone or `enabled` recomputes the next due
    time from now (a schedule turned back on does not catch up what it missed)."""
    schedule = await _own(session, api_key.id, schedule_id, for_update=True)
    await service.update_schedule(
        session, api_key=api_key, schedule=schedule, body=body, planner=_planner(state)
    )
    return service.present(schedule)


@router.delete("/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep) -> None:
    """No further runs; its run history goes with it, the batches it made stay."""
    schedule = await _own(session, api_key.id, schedule_id, for_update=True)
    await session.delete(schedule)


@router.get("/{schedule_id}/runs")
async def list_runs(
    schedule_id: uuid.UUID,
    session: SessionDep,
    api_key: ApiKeyDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> ScheduleRunPage:
    """The schedule's runs, newest due time first: the batch each made, and its status
    now, or why none was made."""
    await _own(session, api_key.id, schedule_id)
    after = decode_time_uuid_cursor(cursor)
    rows = await repository.list_runs(session, schedule_id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(
        rows, limit, lambda row: encode_time_cursor(row[0].due_at, row[0].id)
    )
    items = [service.present_run(run, status.value if status else None) for run, status in page]
    return ScheduleRunPage(items=items, next_cursor=next_cursor)


async def _own(
    session: SessionDep, api_key_id: uuid.UUID, schedule_id: uuid.UUID, *, for_update: bool = False
) -> Schedule:
    schedule = await repository.own_schedule(
        session, api_key_id, schedule_id, for_update=for_update
    )
    if schedule is None:
        raise NotFound(f"no schedule {schedule_id}")
    return schedule
