"""Shared by the schedule tests: a schedule body, making one due without waiting, and
counting what the ticks made."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from service.kit.base import utcnow
from service.models import Batch, Schedule, ScheduleRun
from service.state import State
from tests.conftest import Caller


def schedule_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "weekly visuals",
        "cron": "30 6 * * 1",
        "timezone": "Europe/Amsterdam",
        "batch": {"jobs": [{"prompt": "a red bicycle", "width": 64, "height": 64}]},
        **fields,
    }


async def create(client: httpx.AsyncClient, caller: Caller, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/schedules", json=schedule_body(**fields), headers=caller.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_due(state: State, schedule_id: str | uuid.UUID, at: datetime | None = None) -> None:
    """As if the workers had been down since `at` (a minute ago by default)."""
    at = at or utcnow() - timedelta(minutes=1)
    async with state.sessionmaker() as session:
        await session.execute(
            update(Schedule)
            .where(Schedule.id == uuid.UUID(str(schedule_id)))
            .values(next_run_at=at)
        )
        await session.commit()


async def count_batches(state: State) -> int:
    async with state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Batch)) or 0


async def runs_of(state: State, schedule_id: str | uuid.UUID) -> list[ScheduleRun]:
    async with state.sessionmaker() as session:
        query = (
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == uuid.UUID(str(schedule_id)))
            .order_by(ScheduleRun.due_at)
        )
        return list((await session.execute(query)).scalars())


async def stored(state: State, schedule_id: str | uuid.UUID) -> Schedule:
    async with state.sessionmaker() as session:
        schedule = await session.get(Schedule, uuid.UUID(str(schedule_id)))
    assert schedule is not None
    return schedule
