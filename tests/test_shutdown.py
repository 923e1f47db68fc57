"""SIGTERM to a real `darkroom worker` in the middle of a batch against the provider
simulator: the worker stops taking grants, lets the requests in flight finish and
records them, exits within its grace; a new worker finishes the batch and every job
reached the provider exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from simulators import SimConfig
from tests.conftest import ServiceUrls
from tests.faults.processes import Process
from tests.faults.stack import Stack
from tests.jobs.sim_accounts import sim_config

GRACE_S = 20
JOBS = 12
CONCURRENCY = 4


@pytest.fixture
async def stack(services: ServiceUrls, state: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    """Worker and API processes on the test run's Postgres and Redis (`state` empties
    them before and after)."""
    servers = SimpleNamespace(
        database_url=services.database_url, redis=SimpleNamespace(url=services.redis_url)
    )
    stack = Stack(servers, tmp_path)  # type: ignore[arg-type]
    stack.env["DARKROOM_SHUTDOWN_GRACE_S"] = str(GRACE_S)
    stack.env["DARKROOM_WORKER_CONCURRENCY"] = str(CONCURRENCY)
    try:
        yield stack
    finally:
        await stack.close()


async def submit(stack: Stack, model: str, size: int) -> str:
    assert stack.api is not None
    body = {
        "defaults": {"model": model, "width": size, "height": size},
        "jobs": [{"prompt": f"shutdown {n}"} for n in range(JOBS)],
    }
    response = await stack.api.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def sigterm(worker: Process) -> int:
    """SIGTERM; the exit status, which must come within the grace (and a margin to
    record and close)."""
    worker.popen.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(worker.popen.wait, GRACE_S + 15)


async def attempts_per_job(stack: Stack) -> list[int]:
    rows = await stack.db.rows(
        "SELECT count(a.id) FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id GROUP BY j.id"
    )
    return sorted(int(row[0]) for row in rows)


async def test_sigterm_mid_batch_loses_nothing_and_runs_every_job_once(stack: Stack) -> None:
    """Two batches at once: OpenAI (synchronous: a request holds its worker for the whole
    2 s generation) and Replicate (asynchronous: the worker lets go once a prediction is
    created, and a stopped worker's predictions are polled by the next one)."""
    simulator = stack.start_simulator(
        SimConfig.model_validate({"latency": {"kind": "fixed", "s": 2.0}, "webhooks": False})
    )
    stack.config_path.write_text(sim_config(simulator.url, timeout_s=15))
    [worker] = await stack.start_workers(1)
    await stack.start_api()
    await submit(stack, "flux-sim", 64)
    await submit(stack, "gpt-sim", 1024)

    async def second_wave_in_flight() -> bool:
        stats = await simulator.stats()
        return stats["creations_by_provider"]["openai"] > CONCURRENCY and (
            stats["concurrency_current"]["openai"] > 0
        )

    await until(second_wave_in_flight, "OpenAI requests in flight after a first wave")
    assert await sigterm(worker) == 0, worker.log_tail()

    # Every request that went out was answered and recorded, no grant was taken after
    # the signal, and what is left is queued or running at the provider (a handle stored:
    # its poll resumes it), never running with nothing to resume it.
    stats = await simulator.stats()
    openai = await jobs_of(stack, "gpt-sim")
    replicate = await jobs_of(stack, "flux-sim")
    assert openai["running"] == 0, await stack.explain()
    assert stats["creations_by_provider"]["openai"] == openai["succeeded"]
    assert openai["queued"] == JOBS - openai["succeeded"] > 0
    assert stats["concurrency_current"]["openai"] == 0
    unowned = await stack.db.rows(
        "SELECT count(*) FROM jobs WHERE status = 'running' AND remote_id IS NULL"
    )
    assert unowned[0][0] == 0
    assert stats["creations_by_provider"]["replicate"] == JOBS - replicate["queued"]
    assert "worker_wound_down" in worker.log()

    [second] = await stack.start_workers(1)
    await stack.wait_until_no_active_jobs(timeout_s=60)
    stats = await simulator.stats()
    assert (await stack.db.job_counts()) == {"succeeded": 2 * JOBS}
    assert stats["creations_by_provider"] == {"openai": JOBS, "replicate": JOBS}
    assert stats["duplicate_submissions"] == 0
    assert await attempts_per_job(stack) == [1] * (2 * JOBS)

    # The same signal twice: the second cuts the grace short (nothing is left to cut).
    second.popen.send_signal(signal.SIGTERM)
    second.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.popen.wait, GRACE_S + 15) == 0, second.log_tail()

    # The API: SIGTERM while a request is being answered; it still gets its answer.
    assert stack.api is not None
    assert stack.api_process is not None
    body = {
        "defaults": {"model": "flux-sim", "width": 64, "height": 64},
        "jobs": [{"prompt": f"dry {n}"} for n in range(10_000)],
    }
    answer = asyncio.create_task(stack.api.post("/v1/batches?dry_run=true", json=body))
    await asyncio.sleep(0.3)
    stack.api_process.popen.send_signal(signal.SIGTERM)
    response = await answer
    assert response.status_code == 200, response.text
    assert response.json()["job_count"] == 10_000
    # uvicorn re-raises the signal once it has shut down gracefully (exit by SIGTERM).
    exit_status = await asyncio.to_thread(stack.api_process.popen.wait, GRACE_S + 15)
    assert exit_status in (0, -signal.SIGTERM), stack.api_process.log_tail()


async def jobs_of(stack: Stack, model: str) -> Counter[str]:
    rows = await stack.db.rows(
        "SELECT status, count(*) FROM jobs WHERE model = :model GROUP BY 1", model=model
    )
    return Counter({status: n for status, n in rows})
