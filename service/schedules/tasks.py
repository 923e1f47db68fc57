"""The schedules tick: an arq cron in every worker (service.worker), and what tests call.

Each due schedule is handled in its own transaction (a big batch does not hold the
others), locked with SKIP LOCKED so that concurrent ticks share the work; the run's
unique (schedule, due time) row makes each due time one batch whatever overlaps."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from service.db import session_scope
from service.jobs.tasks import enqueue_jobs
from service.kit.base import utcnow
from service.logging import get_logger
from service.schedules.service import Planner, ScheduleRunError, run_due_schedule
from service.state import State

log = get_logger(__name__)

# Per tick: a backlog larger than this (thousands of schedules due at one minute) is
# worked off by the next ticks.
MAX_PER_TICK = 200


async def run_schedules(
    state: State, *, now: datetime | None = None, limit: int = MAX_PER_TICK
) -> int:
    """Make the run of every due schedule (up to `limit`); returns how many were
    handled. `now` is for tests: the instant the tick believes it is."""
    planner = Planner(state.registry, state.settings, state.redis)
    handled = 0
    broken: set[uuid.UUID] = set()
    while handled < limit:
        at = now or utcnow()
        try:
            async with session_scope(state.sessionmaker) as session:
                ran = await run_due_schedule(
                    session, now=at, planner=planner, skip=frozenset(broken)
                )
        except ScheduleRunError as exc:
            # A bug must not stop the others: this one stays due, logged, and is left
            # out for the rest of this tick.
            log.exception("schedule_run_crashed", schedule_id=str(exc.schedule_id))
            broken.add(exc.schedule_id)
            continue
        if ran is None:
            break
        handled += 1
        if ran.submitted is not None:
            batch = ran.submitted.batch
            await enqueue_jobs(state, batch.id, batch.priority, ran.submitted.jobs)
            log.info(
                "schedule_ran",
                schedule_id=str(ran.schedule_id),
                due_at=ran.due_at.isoformat() if ran.due_at else None,
                batch_id=str(batch.id),
            )
    return handled


async def schedules_tick(ctx: dict[str, Any]) -> None:
    await run_schedules(ctx["state"])


def schedule_seconds(interval_s: int) -> set[int]:
    """The seconds of each minute at which arq starts the tick, about every `interval_s`."""
    return set(range(0, 60, interval_s)) if interval_s < 60 else {0}
