"""The schedules tick: an arq cron in every worker (service.worker), and what tests call.

Each due schedule is handled in its own transaction (a big batch does not hold the
others), locked with SKIP LOCKED so that concurrent ticks share the work; the run's
unique (schedule, due time) row makes each due time one batch whatever overlaps."""

from __future__ import annotations

import math
import time
import uuid
from datetime import datetime
from typing import Any

from service.batches.actions import enqueue_submitted
from service.config import Settings
from service.db import session_scope
from service.kit.base import utcnow
from service.logging import get_logger
from service.schedules import repository
from service.schedules.service import Planner, ScheduleRunError, run_due_schedule
from service.state import State

log = get_logger(__name__)

# A tick stops taking schedules after this share of its timeout (arq's job_timeout_s):
# a backlog (thousands of schedules due at one minute) is worked off by the next ticks.
TICK_SHARE = 0.8


def outage_s(settings: Settings) -> float:
    """A gap between the ticks' beats longer than this means nothing ran: never less than
    what a working tick can leave between two beats (one schedule's run within its
    timeout, plus the interval to the next tick) however small the grace."""
    return float(
        max(settings.schedule_grace_s, settings.job_timeout_s + 2 * settings.schedule_interval_s)
    )


async def run_schedules(state: State, *, now: datetime | None = None) -> int:
    """Make the run of every due schedule, for up to TICK_SHARE of the tick's timeout;
    returns how many were handled. `now` is for tests: the instant the tick believes it is.

    Each tick beats the schedule clock (at its start, and every interval while it works),
    and a catch_up "skip" schedule's due time is judged missed against when the ticks
    resumed, not against when this tick reached it: a backlog never makes a miss."""
    settings = state.settings
    planner = Planner(state.registry, settings, state.redis)
    deadline = time.monotonic() + TICK_SHARE * settings.job_timeout_s
    handled = 0
    broken: set[uuid.UUID] = set()
    beaten = -math.inf
    alive_since = now or utcnow()
    while time.monotonic() < deadline:
        at = now or utcnow()
        if time.monotonic() - beaten >= settings.schedule_interval_s:
            async with session_scope(state.sessionmaker) as session:
                alive_since = await repository.beat(session, at, outage_s=outage_s(settings))
            beaten = time.monotonic()
        try:
            async with session_scope(state.sessionmaker) as session:
                ran = await run_due_schedule(
                    session,
                    now=at,
                    planner=planner,
                    skip=frozenset(broken),
                    alive_since=alive_since,
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
        if ran.submitted is not None:  # committed by the scope above
            batch = ran.submitted.batch
            await enqueue_submitted(state, ran.submitted)
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
