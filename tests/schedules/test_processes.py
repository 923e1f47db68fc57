"""Another worker process ticking at the same moment as this one (each with several
concurrent ticks) still makes each due time one batch: the guarantee is in Postgres,
not in one process's memory."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx

from service.models import RunStatus
from service.schedules.tasks import run_schedules
from service.state import State
from tests.conftest import Caller
from tests.schedules.helpers import count_batches, create, make_due, runs_of

# Ready once its state is built (imports take seconds); ticks when told to go.
TICKS = """
import asyncio, sys
from service.config import Settings
from service.schedules.tasks import run_schedules
from service.state import build_state, close_state

async def main() -> None:
    state = await build_state(Settings())
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        handled = await asyncio.gather(*(run_schedules(state) for _ in range(4)))
    finally:
        await close_state(state)
    print(sum(handled), flush=True)

asyncio.run(main())
"""


async def test_two_processes_make_each_due_time_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    ids = [(await create(client, caller, name=f"s{n}", cron="*/5 * * * *"))["id"] for n in range(8)]
    env = {
        **os.environ,
        "DARKROOM_DATABASE_URL": state.settings.database_url,
        "DARKROOM_REDIS_URL": state.settings.redis_url,
        "DARKROOM_LOG_LEVEL": "WARNING",
    }
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TICKS,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert other.stdin is not None
    assert other.stdout is not None
    assert (await other.stdout.readline()).strip() == b"ready"
    for schedule_id in ids:
        await make_due(state, schedule_id)
    other.stdin.write(b"go\n")
    await other.stdin.drain()
    here = await asyncio.gather(*(run_schedules(state) for _ in range(4)))
    out, _ = await other.communicate()
    assert other.returncode == 0
    assert sum(here) + int(out.decode().split()[-1]) == 8
    assert await count_batches(state) == 8
    for schedule_id in ids:
        (run,) = await runs_of(state, schedule_id)
        assert run.status is RunStatus.submitted
