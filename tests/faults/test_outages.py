"""Redis stopped for a minute, Postgres restarted, both under load: the API answers 2xx
(what it accepted is stored in Postgres) or 503, never 500; `darkroom worker` lives
through it and goes on working; everything submitted completes once the server is back."""

from __future__ import annotations

import asyncio
import logging
import time

from simulators import SimConfig
from tests.faults.stack import Stack, StatusLog

log = logging.getLogger(__name__)

WORKERS = 2
LOAD_JOBS = 200
SMALL_BATCH = 2
# Submit and read batches this often while a server is down.
REQUEST_EVERY_S = 1.0
REDIS_OUTAGE_S = 60.0
POSTGRES_DOWN_S = 5.0
# After the restart, the API goes on being used for this long (stale pooled connections).
AFTER_RESTART_S = 3.0
RECOVERY_DEADLINE_S = 120.0
SIM = SimConfig.model_validate({"latency": {"kind": "uniform", "low": 0.2, "high": 0.5}})


async def _start(stack: Stack) -> list[str]:
    stack.start_simulator(SIM)
    await stack.start_workers(WORKERS)
    await stack.start_api()
    batch_id = await stack.submit(LOAD_JOBS, tag="load")
    assert batch_id is not None
    while (await stack.db.job_counts())["succeeded"] < 20:  # work is in flight now
        stack.assert_workers_alive()
        await asyncio.sleep(0.1)
    return [batch_id]


async def _use_the_api(
    stack: Stack, batches: list[str], requests: StatusLog, seconds: float
) -> None:
    """Small batches in, batches read back, the whole time."""
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < seconds:
        stack.assert_workers_alive()
        batch_id = await stack.submit(SMALL_BATCH, tag=f"during {n}", log=requests)
        if batch_id is not None:
            batches.append(batch_id)
        for known in batches[-3:]:
            await stack.get_batch(known, requests)
        n += 1
        await asyncio.sleep(REQUEST_EVERY_S)


async def _finished_jobs_of(stack: Stack, batches: list[str]) -> dict[str, int]:
    rows = await stack.db.rows(
        "SELECT batch_id::text, count(*) FROM jobs WHERE status = 'succeeded' GROUP BY batch_id"
    )
    return {batch_id: n for batch_id, n in rows if batch_id in batches}


def _problems(stack: Stack, requests: StatusLog) -> list[str]:
    problems = []
    unexpected = {
        code: n
        for code, n in requests.codes.items()
        if not (code.isdigit() and (200 <= int(code) < 300 or code == "503"))
    }
    if unexpected:
        problems.append(f"the API answered {unexpected} (all: {dict(requests.codes)})")
        problems += requests.server_errors[:5]
    # An exception that escapes the app reaches uvicorn, which answers 500 or, when the
    # app had answered already, drops the connection: the next request on it gets no
    # answer at all.
    assert stack.api_process is not None
    crashes = stack.api_process.log().count("Exception in ASGI application")
    if crashes:
        problems.append(f"{crashes} requests raised out of the app into uvicorn (api.log)")
    return problems


async def test_redis_stopped_for_60_s_under_load(stack: Stack) -> None:
    batches = await _start(stack)
    requests = StatusLog()

    stack.servers.redis.stop()
    await _use_the_api(stack, batches, requests, REDIS_OUTAGE_S)
    stack.servers.redis.start()
    restarted = time.monotonic()
    await _use_the_api(stack, batches, requests, AFTER_RESTART_S)

    await stack.wait_until_no_active_jobs(timeout_s=RECOVERY_DEADLINE_S)
    took = time.monotonic() - restarted
    stack.assert_workers_alive()
    counts = await stack.db.job_counts()
    finished = await _finished_jobs_of(stack, batches)
    rebuilt = sum(w.log().count("worker_lost_redis_restarting") for w in stack.processes.workers)
    log.warning(
        "redis outage: requests=%s batches_accepted=%d jobs=%s workers_rebuilt=%d "
        "all_done_after_restart_s=%.1f",
        dict(requests.codes),
        len(batches),
        dict(counts),
        rebuilt,
        took,
    )
    assert _problems(stack, requests) == []
    expected = LOAD_JOBS + SMALL_BATCH * (len(batches) - 1)
    # What ended the jobs that did not succeed, attempt by attempt, and what crashed.
    failures = await stack.db.rows(
        "SELECT j.error_code, a.outcome, a.error_code, left(a.error_message, 200), count(*)"
        " FROM jobs j JOIN job_attempts a ON a.job_id = j.id"
        " WHERE j.status <> 'succeeded' GROUP BY 1, 2, 3, 4"
    )
    crashes = [
        line for w in stack.processes.workers for line in w.log().splitlines() if "crash" in line
    ]
    assert counts == {"succeeded": expected}, (dict(counts), failures, crashes[:3])
    assert sum(finished.values()) == expected


async def test_postgres_restarted_under_load(stack: Stack) -> None:
    batches = await _start(stack)
    requests = StatusLog()

    stack.servers.postgres.stop()
    await _use_the_api(stack, batches, requests, POSTGRES_DOWN_S)
    stack.servers.postgres.start()
    restarted = time.monotonic()
    await _use_the_api(stack, batches, requests, AFTER_RESTART_S)

    await stack.wait_until_no_active_jobs(timeout_s=RECOVERY_DEADLINE_S)
    took = time.monotonic() - restarted
    stack.assert_workers_alive()
    counts = await stack.db.job_counts()
    finished = await _finished_jobs_of(stack, batches)
    log.warning(
        "postgres restart: requests=%s batches_accepted=%d jobs=%s all_done_after_restart_s=%.1f",
        dict(requests.codes),
        len(batches),
        dict(counts),
        took,
    )
    assert _problems(stack, requests) == []
    expected = LOAD_JOBS + SMALL_BATCH * (len(batches) - 1)
    assert counts == {"succeeded": expected}, dict(counts)
    assert sum(finished.values()) == expected
