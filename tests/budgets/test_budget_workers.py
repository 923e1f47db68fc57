"""A key budget under real concurrency: four `darkroom worker` processes claim 1,000
jobs at $0.003 against a daily budget of $1.00 on the same Postgres and Redis, and
exactly 333 of them run (the ledger rows serialise the reservations)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service.state import State
from tests.budgets.helpers import batch_body, budget_config, ledgers
from tests.conftest import Caller, ServiceUrls, submit
from tests.faults.processes import Processes
from tests.jobs.sim_accounts import use_config

WORKERS = 4
JOBS = 1000
BATCHES = 4
DEADLINE_S = 240.0


@pytest.fixture
def workers(services: ServiceUrls, state: State, tmp_path: Path) -> Iterator[Processes]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "HOME": str(tmp_path),
        "DARKROOM_ENV": "development",
        "DARKROOM_DATABASE_URL": services.database_url,
        "DARKROOM_REDIS_URL": services.redis_url,
        "DARKROOM_LOCAL_DEFAULTS": "false",
        "DARKROOM_CONFIG": str(tmp_path / "darkroom.yaml"),
        "DARKROOM_STORAGE_DIR": str(state.settings.storage_dir),
        "DARKROOM_DATA_DIR": str(tmp_path / "data"),
        "DARKROOM_SECRET_KEY": state.settings.secret_key,
    }
    processes = Processes(env, tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


async def _counts(state: State) -> dict[str, int]:
    async with state.engine.connect() as connection:
        rows = await connection.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
        return {status: int(n) for status, n in rows}


async def _wait_until_done(state: State, processes: Processes) -> dict[str, int]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        counts = await _counts(state)
        if counts.get("queued", 0) + counts.get("running", 0) == 0:
            return counts
        dead = [w for w in processes.workers if not w.alive]
        assert not dead, "\n".join(f"{w.name}:\n{w.log_tail()}" for w in dead)
        assert time.monotonic() < deadline, f"unfinished after {DEADLINE_S:.0f} s: {counts}"
        await asyncio.sleep(0.25)


async def test_four_workers_dispatch_exactly_what_a_key_budget_allows(
    client: httpx.AsyncClient, caller: Caller, state: State, workers: Processes, tmp_path: Path
) -> None:
    await use_config(state, budget_config(), tmp_path)  # the workers read the same file
    response = await client.post(
        "/v1/keys/current/budget", json={"daily_usd": 1.0}, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    size = JOBS // BATCHES
    for n in range(BATCHES):
        await submit(client, caller, batch_body(size, tag=f"batch {n}"))
    await asyncio.to_thread(workers.start_workers, WORKERS)
    counts = await _wait_until_done(state, workers)
    assert counts == {"succeeded": 333, "failed": 667}
    async with state.engine.connect() as connection:
        failures = list(
            await connection.execute(
                text(
                    "SELECT error_code, count(*), min(error_message) FROM jobs "
                    "WHERE status = 'failed' GROUP BY error_code"
                )
            )
        )
        attempts = list(
            await connection.execute(
                text("SELECT count(*), sum(cost_usd) FROM job_attempts WHERE outcome = 'succeeded'")
            )
        )
    [(code, failed, message)] = failures
    assert (code, failed) == ("budget_exceeded", 667)
    assert message.startswith("the API key's daily budget of $1.000000 would be exceeded: ")
    assert attempts == [(333, Decimal("0.999000"))]
    assert await ledgers(state) == {f"key:{caller.api_key_id}:day": Decimal("0.999")}
    assert [w.name for w in workers.workers if not w.alive] == []
