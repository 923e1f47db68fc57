"""The tick: each due time becomes exactly one batch, however many ticks run at once,
across a Redis flush and a crash between commit and enqueue; missed due times are
caught up once or skipped; disabled schedules and revoked keys do not run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import update

from service.db import session_scope
from service.jobs.tasks import reconcile_jobs
from service.kit.base import utcnow
from service.models import ApiKey, Batch, RunStatus, Schedule
from service.schedules.service import Planner, run_due_schedule
from service.schedules.tasks import run_schedules
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller
from tests.schedules.helpers import count_batches, create, make_due, runs_of, stored


async def test_a_due_schedule_makes_one_batch_and_moves_on(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="0 * * * *", timezone="UTC")
    assert await run_schedules(state) == 0  # not due yet
    now = utcnow()  # fixed: the hour must not turn between the ticks
    due = now.replace(minute=0, second=0, microsecond=0)
    await make_due(state, schedule["id"], due)

    assert await run_schedules(state, now=now) == 1
    assert await run_schedules(state, now=now) == 0
    (run,) = await runs_of(state, schedule["id"])
    assert run.due_at == due
    assert run.status is RunStatus.submitted
    assert run.batch_id is not None
    after = await stored(state, schedule["id"])
    assert after.last_run_at == due
    assert after.next_run_at == due + timedelta(hours=1)
    assert await state.dispatch.queue("local").backlog() == 1  # enqueued after commit

    await run_until_idle(state)
    batch = (await client.get(f"/v1/batches/{run.batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["name"] == "weekly visuals"  # the schedule's name, as the body gave none
    runs = (await client.get(f"/v1/schedules/{schedule['id']}/runs", headers=caller.headers)).json()
    assert runs["next_cursor"] is None
    (listed,) = runs["items"]
    assert listed["id"] == str(run.id)
    assert listed["batch_id"] == str(run.batch_id)
    assert listed["status"] == "submitted"
    assert listed["batch_status"] == "succeeded"
    assert listed["error"] is None
    assert listed["due_at"].startswith(due.strftime("%Y-%m-%dT%H:00:00"))
    got = (await client.get(f"/v1/schedules/{schedule['id']}", headers=caller.headers)).json()
    assert got["last_run_at"] is not None


async def test_many_concurrent_ticks_make_each_due_time_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    ids = [(await create(client, caller, name=f"s{n}", cron="*/5 * * * *"))["id"] for n in range(6)]
    for schedule_id in ids:
        await make_due(state, schedule_id)
    # Each tick runs in its own sessions, as separate workers would.
    handled = await asyncio.gather(*(run_schedules(state) for _ in range(12)))
    assert sum(handled) == 6
    assert await count_batches(state) == 6
    for schedule_id in ids:
        (run,) = await runs_of(state, schedule_id)
        assert run.status is RunStatus.submitted


async def test_the_unique_run_row_stops_a_second_batch_for_a_due_time(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    """Even if next_run_at were stale (a worker that died before advancing it would look
    like this, had its transaction not been one), the due time's run already exists."""
    schedule = await create(client, caller, cron="*/5 * * * *")
    now = utcnow()
    due = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
    await make_due(state, schedule["id"], due)
    assert await run_schedules(state, now=now) == 1
    await make_due(state, schedule["id"], due)
    assert await run_schedules(state, now=now) == 1  # handled: found made, moved on
    assert await count_batches(state) == 1
    assert len(await runs_of(state, schedule["id"])) == 1
    assert (await stored(state, schedule["id"])).next_run_at == due + timedelta(minutes=5)


async def test_a_redis_flush_neither_repeats_nor_loses_a_run(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.reconcile_stale_after_s = 0
    schedule = await create(client, caller, cron="0 * * * *")
    await make_due(state, schedule["id"])
    assert await run_schedules(state) == 1
    await state.redis.flushdb()  # the queued jobs and arq's cron locks are gone
    assert await run_schedules(state) == 0
    assert await count_batches(state) == 1
    assert await reconcile_jobs(state) == 1  # the lost job, back in line from Postgres
    await run_until_idle(state)
    assert await the_one_runs_batch_status(state, schedule["id"]) == "succeeded"


async def test_a_crash_between_commit_and_enqueue_is_recovered_by_the_reconciler(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="0 * * * *")
    await make_due(state, schedule["id"])
    # What the tick does, up to a crash right after the commit: the enqueue never happens.
    planner = Planner(state.registry, state.settings, state.redis)
    async with session_scope(state.sessionmaker) as session:
        ran = await run_due_schedule(session, now=utcnow(), planner=planner)
    assert ran is not None
    assert ran.submitted is not None
    assert await count_batches(state) == 1
    assert await state.dispatch.queue("local").backlog() == 0
    assert await run_schedules(state) == 0  # not due any more: no second batch
    state.settings.reconcile_stale_after_s = 0
    assert await reconcile_jobs(state) == 1
    await run_until_idle(state)
    assert await the_one_runs_batch_status(state, schedule["id"]) == "succeeded"


async def test_missed_due_times_are_caught_up_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="0 * * * *", timezone="UTC")
    now = utcnow()
    await make_due(state, schedule["id"], now - timedelta(days=3))  # 72 missed
    assert await run_schedules(state, now=now) == 1
    (run,) = await runs_of(state, schedule["id"])
    latest = now.replace(minute=0, second=0, microsecond=0)
    assert run.due_at == latest  # the most recent missed one
    assert run.status is RunStatus.submitted
    assert await count_batches(state) == 1
    assert (await stored(state, schedule["id"])).next_run_at == latest + timedelta(hours=1)


async def test_missed_due_times_are_skipped_with_catch_up_skip(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="0 * * * *", catch_up="skip")
    now = utcnow()
    await make_due(state, schedule["id"], now - timedelta(days=3))
    state.settings.schedule_grace_s = 0  # any lateness is a miss
    assert await run_schedules(state, now=now) == 1
    (run,) = await runs_of(state, schedule["id"])
    assert run.status is RunStatus.skipped
    assert run.batch_id is None
    assert run.error is not None
    assert "catch_up is skip" in run.error
    assert await count_batches(state) == 0
    assert (await stored(state, schedule["id"])).next_run_at > now
    runs = (await client.get(f"/v1/schedules/{schedule['id']}/runs", headers=caller.headers)).json()
    assert [(r["status"], r["batch_status"]) for r in runs["items"]] == [("skipped", None)]

    # A due time within the grace is not a miss: it runs.
    state.settings.schedule_grace_s = 3600
    await make_due(state, schedule["id"], now - timedelta(days=3))
    assert await run_schedules(state, now=now) == 1  # the same latest due time: made already
    other = await create(client, caller, name="b", cron="* * * * *", catch_up="skip")
    await make_due(state, other["id"])
    assert await run_schedules(state) == 1
    (run,) = await runs_of(state, other["id"])
    assert run.status is RunStatus.submitted


async def test_disabled_schedules_and_revoked_keys_do_not_run(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    off = await create(client, caller, name="off", enabled=False)
    assert off["next_run_at"] is None
    mine = await create(client, caller, name="mine")
    await make_due(state, mine["id"])
    async with state.sessionmaker() as session:  # disabled behind the API's back
        await session.execute(
            update(Schedule)
            .where(Schedule.id == uuid.UUID(off["id"]))
            .values(next_run_at=utcnow() - timedelta(minutes=1))
        )
        await session.execute(
            update(ApiKey).where(ApiKey.id == caller.api_key_id).values(revoked_at=utcnow())
        )
        await session.commit()
    assert await run_schedules(state) == 0
    assert await count_batches(state) == 0
    assert await runs_of(state, mine["id"]) == []


async def test_a_body_that_no_longer_submits_is_a_failed_run(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="0 * * * *")
    await make_due(state, schedule["id"])
    body = {"jobs": [{"prompt": "x"}, {"prompt": "y", "model": "retired-model"}]}
    async with state.sessionmaker() as session:  # as if the model left the configuration
        await session.execute(
            update(Schedule).where(Schedule.id == uuid.UUID(schedule["id"])).values(batch=body)
        )
        await session.commit()
    assert await run_schedules(state) == 1
    (run,) = await runs_of(state, schedule["id"])
    assert run.status is RunStatus.failed
    assert run.batch_id is None
    assert run.error is not None
    assert run.error.startswith("batch.jobs[1].model: ")
    assert await count_batches(state) == 0
    assert (await stored(state, schedule["id"])).next_run_at > utcnow()  # it moved on


async def test_the_worker_runs_due_schedules_by_itself(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    """The tick is registered as an arq cron of the worker (run at its start too)."""
    schedule = await create(client, caller, cron="0 * * * *")
    await make_due(state, schedule["id"])
    for _ in range(20):  # the workers go idle when nothing is due: start them until it ran
        await run_until_idle(state)
        if (run := await runs_of(state, schedule["id"])) and run[0].batch_id is not None:
            break
    await run_until_idle(state)
    runs = (await client.get(f"/v1/schedules/{schedule['id']}/runs", headers=caller.headers)).json()
    assert [(r["status"], r["batch_status"]) for r in runs["items"]] == [("submitted", "succeeded")]


async def the_one_runs_batch_status(state: State, schedule_id: str) -> str:
    """The status of the batch made by the schedule's only run."""
    (run,) = await runs_of(state, schedule_id)
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, run.batch_id)
    assert batch is not None
    return batch.status.value
