"""SIGTERM to a real `darkroom worker` in the middle of a batch against the provider
simulator: the worker stops taking grants, lets the requests in flight finish and
records them, exits within its grace; a new worker finishes the batch and every job
reached the provider exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
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


async def submit(stack: Stack, model: str) -> str:
    assert stack.api is not None
    body = {
        "defaults": {"model": model, "width": 64, "height": 64},
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


async def test_sigterm_lets_synchronous_requests_finish_and_a_new_worker_ends_the_batch(
    stack: Stack,
) -> None:
    # OpenAI is synchronous: a request holds its worker for the whole 2 s generation.
    simulator = stack.start_simulator(
        SimConfig.model_validate({"latency": {"kind": "fixed", "s": 2.0}})
    )
    stack.config_path.write_text(sim_config(simulator.url, timeout_s=15))
    [worker] = await stack.start_workers(1)
    await stack.start_api()
    await submit(stack, "gpt-sim")

    async def second_wave_in_flight() -> bool:
        stats = await simulator.stats()
        return stats["creations_accepted"] > CONCURRENCY and (
            stats["concurrency_current"]["openai"] > 0
        )

    await until(second_wave_in_flight, "requests in flight after a first wave")
    sent_before = (await simulator.stats())["creations_accepted"]
    assert await sigterm(worker) == 0, worker.log_tail()

    # Every request that went out was answered and recorded; nothing was left running,
    # and no grant was taken after the signal.
    stats = await simulator.stats()
    counts = await stack.db.job_counts()
    assert counts["running"] == 0, await stack.explain()
    assert stats["creations_accepted"] == counts["succeeded"] == sent_before
    assert stats["concurrency_current"]["openai"] == 0
    assert counts["queued"] == JOBS - sent_before > 0
    assert "worker_wound_down" in worker.log()

    await stack.start_workers(1)
    await stack.wait_until_no_active_jobs(timeout_s=60)
    stats = await simulator.stats()
    assert (await stack.db.job_counts()) == {"succeeded": JOBS}
    assert stats["creations_by_provider"]["openai"] == JOBS
    assert stats["duplicate_submissions"] == 0
    assert await attempts_per_job(stack) == [1] * JOBS


async def test_sigterm_with_generations_running_at_the_provider_resumes_them_by_polling(
    stack: Stack,
) -> None:
    # Replicate is asynchronous: the worker lets go once a prediction is created; what
    # a stopped worker leaves is polled by the next one, never created again.
    simulator = stack.start_simulator(
        SimConfig.model_validate({"latency": {"kind": "fixed", "s": 4.0}, "webhooks": False})
    )
    [worker] = await stack.start_workers(1)
    await stack.start_api()
    await submit(stack, "flux-sim")

    async def all_submitted() -> bool:
        rows = await stack.db.rows("SELECT count(*) FROM jobs WHERE remote_id IS NOT NULL")
        return int(rows[0][0]) == JOBS

    await until(all_submitted, "every job submitted")
    assert await sigterm(worker) == 0, worker.log_tail()
    assert (await stack.db.job_counts())["running"] == JOBS  # at the provider, owned by polls

    await stack.start_workers(1)
    await stack.wait_until_no_active_jobs(timeout_s=60)
    stats = await simulator.stats()
    assert (await stack.db.job_counts()) == {"succeeded": JOBS}
    assert stats["creations_by_provider"]["replicate"] == JOBS
    assert stats["duplicate_submissions"] == 0
    assert await attempts_per_job(stack) == [1] * JOBS
