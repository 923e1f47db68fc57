"""Due times follow the schedule's timezone across DST (Europe/Amsterdam): on the
spring-forward day a 02:30 job runs once, at 03:00 (02:30 does not exist); on the
fall-back day it runs once, at the first 02:30. A weekly job keeps its local time."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from service.models import RunStatus
from service.schedules.cron import latest_due, next_due
from service.schedules.tasks import run_schedules
from service.state import State
from tests.conftest import Caller
from tests.schedules.helpers import create, make_due, runs_of, stored

AMS = "Europe/Amsterdam"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_spring_forward_runs_the_missing_time_once_at_the_first_minute_that_exists() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    first = next_due("30 2 * * *", AMS, utc(2026, 3, 28, 12))
    assert first == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert next_due("30 2 * * *", AMS, first) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    assert latest_due("30 2 * * *", AMS, utc(2026, 3, 29, 1, 10)) == first


def test_fall_back_runs_a_repeated_time_once_but_a_clock_expression_twice() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00-02:59 happens twice.
    first = next_due("30 2 * * *", AMS, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    assert next_due("30 2 * * *", AMS, first) == utc(2026, 10, 26, 1, 30)  # 02:30 CET
    # During the second 02:30 (01:30 UTC), the latest due time is still the first one.
    assert latest_due("30 2 * * *", AMS, utc(2026, 10, 25, 1, 45)) == first

    every_half_hour = []
    at = utc(2026, 10, 24, 23, 50)
    for _ in range(4):
        found = next_due("*/30 * * * *", AMS, at)
        assert found is not None
        every_half_hour.append(found)
        at = found
    assert every_half_hour == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 0),  # 02:00 CET
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
    ]


def test_a_weekly_job_keeps_its_local_time_across_the_change() -> None:
    before = next_due("30 6 * * 1", AMS, utc(2026, 3, 20))
    assert before == utc(2026, 3, 23, 5, 30)  # 06:30 CET
    assert next_due("30 6 * * 1", AMS, before) == utc(2026, 3, 30, 4, 30)  # 06:30 CEST


async def test_the_tick_runs_each_dst_day_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    schedule = await create(client, caller, cron="30 2 * * *", timezone=AMS)
    # Spring forward: due at 03:00 CEST; ticks at 03:00:05 and 03:40 make one batch.
    await make_due(state, schedule["id"], utc(2026, 3, 29, 1, 0))
    assert await run_schedules(state, now=utc(2026, 3, 29, 1, 0, 5)) == 1
    assert await run_schedules(state, now=utc(2026, 3, 29, 1, 40)) == 0
    assert (await stored(state, schedule["id"])).next_run_at == utc(2026, 3, 30, 0, 30)

    # Fall back: the first 02:30 runs; the second 02:30, an hour later, does not.
    await make_due(state, schedule["id"], utc(2026, 10, 25, 0, 30))
    assert await run_schedules(state, now=utc(2026, 10, 25, 0, 30, 5)) == 1
    assert await run_schedules(state, now=utc(2026, 10, 25, 1, 30, 5)) == 0
    assert (await stored(state, schedule["id"])).next_run_at == utc(2026, 10, 26, 1, 30)

    runs = await runs_of(state, schedule["id"])
    assert [(r.due_at, r.status) for r in runs] == [
        (utc(2026, 3, 29, 1, 0), RunStatus.submitted),
        (utc(2026, 10, 25, 0, 30), RunStatus.submitted),
    ]
