"""catch_up "skip" judges a due time missed against when the ticks resumed (the
schedule clock), not against when a busy tick reached it: a backlog is no miss, an
outage is, however many ticks its backlog takes."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from service.db import session_scope
from service.kit.base import utcnow
from service.models import RunStatus
from service.schedules import repository
from service.schedules.tasks import outage_s, run_schedules
from service.state import State
from tests.conftest import Caller
from tests.schedules.helpers import create, make_due, runs_of

YEARLY = "0 0 1 1 *"  # its due time is the next_run_at the test sets


async def beat(state: State, at: datetime) -> datetime:
    """A tick elsewhere, busy with the backlog, beating the clock at `at`."""
    async with session_scope(state.sessionmaker) as session:
        return await repository.beat(session, at, outage_s=outage_s(state.settings))


async def test_due_times_waiting_in_a_backlog_are_not_skipped(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.schedule_grace_s = 0  # any lateness after the ticks resumed is a miss
    start = utcnow()
    assert await run_schedules(state, now=start) == 0  # the ticks run from `start`
    ids = [
        (await create(client, caller, name=f"s{n}", cron=YEARLY, timezone="UTC", catch_up="skip"))[
            "id"
        ]
        for n in range(3)
    ]
    due = start + timedelta(seconds=1)
    for schedule_id in ids:
        await make_due(state, schedule_id, due)
    # Busy ticks beat every 40 s for three minutes before this tick reaches them.
    reached = start + timedelta(minutes=3)
    at = start
    while at < reached:
        at += timedelta(seconds=40)
        assert await beat(state, min(at, reached)) == start
    assert await run_schedules(state, now=reached) == 3
    for schedule_id in ids:
        (run,) = await runs_of(state, schedule_id)
        assert (run.due_at, run.status) == (due, RunStatus.submitted), run.error


async def test_due_times_missed_in_an_outage_are_skipped_by_every_later_tick(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.schedule_grace_s = 300
    start = utcnow() - timedelta(hours=2)
    assert await beat(state, start) == start  # then nothing ran for an hour
    resumed = start + timedelta(hours=1)
    assert await beat(state, resumed) == resumed
    missed = await create(client, caller, name="m", cron=YEARLY, timezone="UTC", catch_up="skip")
    near = await create(client, caller, name="n", cron=YEARLY, timezone="UTC", catch_up="skip")
    await make_due(state, missed["id"], resumed - timedelta(minutes=30))
    await make_due(state, near["id"], resumed - timedelta(minutes=2))  # within the grace
    # A later tick, still working off the restart's backlog, reaches them.
    later = resumed + timedelta(seconds=50)
    assert await run_schedules(state, now=later) == 2
    (run,) = await runs_of(state, missed["id"])
    assert run.status is RunStatus.skipped
    assert run.error is not None
    assert "missed by 1800 s" in run.error
    (run,) = await runs_of(state, near["id"])
    assert run.status is RunStatus.submitted, run.error
