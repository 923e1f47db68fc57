"""Polls timed from observed latencies, against the provider simulator: the first poll
where the model's completions begin (or at its tail when callbacks are known to arrive), a submitted
generation polled once by the process that submitted it, one poll of a job at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from service.db import session_scope
from service.dispatch import latency
from service.jobs import polls, requests, service, tasks
from service.state import State
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config

POLL_ROUTE = "GET /v1/predictions/{prediction_id}"


@pytest.fixture
async def accounts(
    state: State, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig()) as sim:
        await use_config(state, sim_config(sim.url), tmp_path)
        yield sim


async def observe(state: State, seconds: list[float]) -> None:
    for value in seconds:
        await state.dispatch.latencies.observe("replicate", "flux-sim", value)


async def test_the_first_poll_follows_the_models_latencies(
    state: State, accounts: SimulatorHandle
) -> None:
    provider = state.registry.providers["replicate"]
    first = polls.first_poll_delay_s

    assert await first(state, provider, "flux-sim") == latency.UNKNOWN_FIRST_S
    await observe(state, [1.0] + [2.0] * 7 + [9.0] * 2)
    state.dispatch.latencies._cache.clear()  # this process read "nothing" a moment ago
    assert await first(state, provider, "flux-sim") == 1.0  # p10

    # Callbacks requested and arriving: the first poll waits for the tail.
    state.settings.callback_url = "http://127.0.0.1:9"
    assert await first(state, provider, "flux-sim") == 1.0  # none has arrived yet
    await state.dispatch.callbacks.arrived("replicate")
    assert await first(state, provider, "flux-sim") == 9.0


async def submitted_job(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> service.StartedJob:
    """A job submitted at the simulator, its prediction id stored, no poll scheduled."""
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "tide", "model": "flux-sim"}]})
    await state.dispatch.queue("replicate").purge(batch_id)
    listed = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    job_id = uuid.UUID(listed.json()["items"][0]["id"])
    spec = state.registry.model("flux-sim")
    assert spec is not None
    async with session_scope(state.sessionmaker) as session:
        started = await service.start_attempt(
            session, job_id, account="replicate", max_attempts=3, price=Decimal(0), public_url="x"
        )
    assert isinstance(started, service.StartedJob)
    remote = await state.registry.providers["replicate"].submit(  # type: ignore[attr-defined]
        await requests.generation_request(state, spec, started)
    )
    async with session_scope(state.sessionmaker) as session:
        assert await service.record_submitted(session, started, remote)  # type: ignore[union-attr]
    return started


async def test_the_on_time_poll_finishes_the_job_and_notes_its_latency(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    started = await submitted_job(client, caller, state)

    await tasks.poll_once(state, started.job_id)

    job = (await client.get(f"/v1/jobs/{started.job_id}", headers=caller.headers)).json()
    assert job["status"] == "succeeded"
    assert (await accounts.stats())["requests_by_route"][POLL_ROUTE] == 1
    assert (await state.dispatch.limiter("replicate").snapshot()).in_flight == 0
    profile = await state.dispatch.latencies.account_profile("replicate")
    assert profile is None  # one observation is not a profile yet ...
    raw = await state.redis.lrange(latency.model_key("replicate", "flux-sim"), 0, -1)  # type: ignore[misc]
    assert len(raw) == 1  # ... but it was kept, from the provider's own timestamps


async def test_only_one_poll_of_a_job_runs_at_a_time(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    started = await submitted_job(client, caller, state)

    async with polls.polling(state, started.job_id) as mine:
        assert mine
        again_in = await tasks._poll_job(state, started.job_id, polls=1)

    assert again_in == latency.FLOOR_S
    assert (await accounts.stats())["requests_by_route"].get(POLL_ROUTE, 0) == 0
    assert await tasks._poll_job(state, started.job_id, polls=1) is None  # done now
    assert (await accounts.stats())["requests_by_route"][POLL_ROUTE] == 1


async def test_a_stopping_worker_drops_its_due_on_time_polls_and_leaves_them_to_arq(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    started = await submitted_job(client, caller, state)
    provider = state.registry.providers["replicate"]

    await polls.schedule_polls(state, provider, started)  # nothing observed: due in 1 s
    await polls.stop_on_time_polls(grace_s=1)
    await asyncio.sleep(1.5)

    assert POLL_ROUTE not in (await accounts.stats())["requests_by_route"]
    poll_id = polls.poll_job_id(started.job_id)
    deferred = await state.redis.zscore(state.settings.queue_name, poll_id)
    assert deferred is not None  # arq's deferred poll makes it instead
