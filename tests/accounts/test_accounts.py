"""GET /v1/accounts against provider accounts at the simulator: limits, queued jobs,
latencies, 429s and callbacks, as an operator sees them; never a credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.ratelimit import now_ms
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config

TOKEN = "sim-token-not-to-be-shown"


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    """A simulator that sends no webhooks, whatever it is asked."""
    monkeypatch.setenv(SIM_TOKEN_ENV, TOKEN)
    async with run_simulator(SimConfig(token=TOKEN, webhooks=False)) as handle:
        yield handle


@pytest.fixture
async def accounts(state: State, sim: SimulatorHandle, tmp_path: Path) -> SimulatorHandle:
    limits = {"rate_per_s": 50, "burst": 2, "max_concurrent": 8}
    await use_config(state, sim_config(sim.url, replicate_limits=limits), tmp_path)
    return sim


async def listed(client: httpx.AsyncClient, caller: Caller) -> dict[str, dict]:  # type: ignore[type-arg]
    response = await client.get("/v1/accounts", headers=caller.headers)
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text
    return {item["name"]: item for item in response.json()["items"]}


async def test_accounts_need_an_api_key(client: httpx.AsyncClient, accounts: object) -> None:
    response = await client.get("/v1/accounts")
    assert response.status_code == 401
    assert response.json()["error"]["code"]
    bad = await client.get("/v1/accounts", headers={"authorization": "Bearer dk_nope"})
    assert bad.status_code == 401


async def test_accounts_show_limits_and_queued_jobs_by_priority(
    client: httpx.AsyncClient, caller: Caller, accounts: SimulatorHandle
) -> None:
    await submit(client, caller, {"defaults": {"model": "flux-sim"}, "jobs": [{"prompt": "a"}] * 3})
    realtime = {
        "priority": "realtime",
        "defaults": {"model": "flux-sim"},
        "jobs": [{"prompt": "b"}],
    }
    await submit(client, caller, realtime)

    items = await listed(client, caller)

    assert sorted(items) == ["local", "openai", "replicate"]
    replicate = items["replicate"]
    assert replicate["kind"] == "replicate"
    assert replicate["limits"] == {"rate_per_s": 50.0, "burst": 2, "max_concurrent": 8}
    assert replicate["effective_rate_per_s"] == 50.0
    assert replicate["queued"] == {"realtime": 1, "bulk": 3}
    assert replicate["slots_in_use"] == 0
    assert replicate["latency"] == {"p50_s": None, "p90_s": None, "samples": 0}
    assert replicate["rate_limited_last_minute"] == 0
    assert replicate["callbacks"]["requested"] is False
    openai = items["openai"]
    assert openai["limits"] == {"rate_per_s": None, "burst": 1, "max_concurrent": None}
    assert openai["effective_rate_per_s"] is None
    assert openai["queued"] == {"realtime": 0, "bulk": 0}


async def test_accounts_show_429s_of_the_last_minute_and_the_rate_in_force(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    limiter = state.dispatch.limiter("replicate")
    await limiter.rate_limited(sent_at_ms=now_ms(), retry_after_s=None)  # lone: forgiven
    await limiter.rate_limited(sent_at_ms=now_ms(), retry_after_s=None)  # cuts

    replicate = (await listed(client, caller))["replicate"]

    assert replicate["rate_limited_last_minute"] == 2
    assert replicate["effective_rate_per_s"] == pytest.approx(35.0)


async def test_callbacks_requested_that_never_arrive_are_shown_missing(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    # A callback URL nothing answers on; the simulator sends no webhooks anyway.
    state.settings.callback_url = "http://127.0.0.1:9"
    await accounts.configure(latency={"kind": "fixed", "s": 0.2})
    body = {"defaults": {"model": "flux-sim"}, "jobs": [{"prompt": f"p{n}"} for n in range(25)]}
    await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    replicate = (await listed(client, caller))["replicate"]

    assert replicate["callbacks"]["requested"] is True
    assert replicate["callbacks"]["missing"] is True
    assert replicate["callbacks"]["arriving"] is False
    assert replicate["callbacks"]["completed_by_polls_in_a_row"] == 25
    assert replicate["callbacks"]["last_arrived_at"] is None
    # Latencies come from the provider's own timestamps of each prediction.
    assert replicate["latency"]["samples"] == 25
    assert replicate["latency"]["p50_s"] == pytest.approx(0.2, abs=0.1)
    assert replicate["slots_in_use"] == 0
    assert replicate["queued"] == {"realtime": 0, "bulk": 0}

    await state.dispatch.callbacks.arrived("replicate")  # what a verified callback does
    callbacks = (await listed(client, caller))["replicate"]["callbacks"]
    assert (callbacks["arriving"], callbacks["missing"]) == (True, False)
    assert callbacks["last_arrived_at"] is not None
