"""Attempts after a create lost its answer, or after a generation failed at the provider:
the lost prediction is found and resumed (never paid twice), a failed one is retried as
a new attempt unless its error says the input can never work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.jobs.tasks import reconcile_jobs
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.recovery import create_then_die, job_and_attempts
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config

# Their jobs are retried several times and waited for to the end.
pytestmark = pytest.mark.usefixtures("quick_retries")

LISTING = "GET /v1/predictions"


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig(latency={"kind": "fixed", "s": 0.2})) as handle:
        yield handle


@pytest.fixture
async def accounts(state: State, sim: SimulatorHandle, tmp_path: Path) -> SimulatorHandle:
    await use_config(state, sim_config(sim.url, timeout_s=2), tmp_path)
    return sim


async def one_job(client: httpx.AsyncClient, caller: Caller, prompt: str) -> str:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": prompt, "model": "flux-sim"}]})
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return str(response.json()["items"][0]["id"])


@pytest.mark.parametrize("fault", ["reset", "hang"])
async def test_a_create_whose_answer_was_lost_is_resumed_not_paid_twice(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    accounts: SimulatorHandle,
    fault: str,
) -> None:
    # Every create is cut after the prediction was made: only a lookup can finish the job.
    await accounts.configure(**{fault: 1.0, "hang_s": 30})
    job_id = await one_job(client, caller, "harbour at dawn")
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in attempts] == ["retry", "succeeded"]
    assert attempts[0]["error_code"] == ("connection_error" if fault == "reset" else "timeout")
    assert attempts[0]["remote_id"] is None
    stats = await accounts.stats()
    assert stats["creations_accepted"] == 1
    assert stats["duplicate_submissions"] == 0
    assert stats["requests_by_route"][LISTING] == 1
    [prediction] = [p["id"] for p in (await list_all(accounts))]
    assert attempts[1]["remote_id"] == prediction
    assert attempts[1]["note"].startswith(f"resumed {prediction}")


async def list_all(sim: SimulatorHandle) -> list[dict]:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.get(
            "/v1/predictions", headers={"Authorization": "Bearer sim-token"}
        )
    return list(response.json()["results"])


async def test_a_create_refused_before_it_was_made_is_looked_for_then_sent_again(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    accounts: SimulatorHandle,
    tmp_path: Path,
) -> None:
    await use_config(state, sim_config(accounts.url, timeout_s=2, max_attempts=2), tmp_path)
    await accounts.configure(error_503=1.0)
    job_id = await one_job(client, caller, "harbour at noon")
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "server_error"
    assert [a["outcome"] for a in attempts] == ["retry", "failed"]
    assert [a["note"] for a in attempts] == [None, None]
    stats = await accounts.stats()
    assert stats["requests_by_route"][LISTING] == 1  # nothing there: sent again
    assert stats["creation_requests"] == 2
    assert stats["creations_accepted"] == 0


async def test_a_worker_that_died_mid_create_leaves_its_prediction_to_be_found(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    job_id = await one_job(client, caller, "harbour at dusk")
    batch = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()["batch_id"]
    await state.dispatch.queue("replicate").purge(batch)
    await create_then_die(state, "flux-sim", job_id, max_attempts=3)

    state.settings.reconcile_stale_after_s = 0
    assert await reconcile_jobs(state) == 1
    await run_until_idle(state, wait_for_deferred=True)
    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in attempts] == ["abandoned", "succeeded"]
    assert attempts[1]["note"].startswith("resumed ")
    stats = await accounts.stats()
    assert stats["creations_accepted"] == 1
    assert stats["duplicate_submissions"] == 0


async def test_a_failed_generation_is_retried_as_its_own_attempt(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    # The first two predictions fail with transient errors; the third succeeds.
    await accounts.configure(failed_first=2)
    job_id = await one_job(client, caller, "lighthouse in fog")
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 3
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "succeeded"]
    assert [a["error_code"] for a in attempts] == ["provider_failed", "provider_failed", None]
    assert all("failed" in a["error_message"] for a in attempts[:2])
    assert len({a["remote_id"] for a in attempts}) == 3  # a new prediction each time
    stats = await accounts.stats()
    assert stats["creations_accepted"] == 3
    assert stats["predictions_by_status"]["failed"] == 2
    assert LISTING not in stats["requests_by_route"]  # a failure is not a lost answer


async def test_failures_use_up_the_attempts_and_a_permanent_one_fails_at_once(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    await accounts.configure(prediction_failed=1.0)
    transient = await one_job(client, caller, "lighthouse at night")
    await run_until_idle(state, wait_for_deferred=True)
    job, attempts = await job_and_attempts(client, caller, transient)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_failed"
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "failed"]

    await accounts.configure(failed_permanent=1.0)
    permanent = await one_job(client, caller, "lighthouse at sea")
    await run_until_idle(state, wait_for_deferred=True)
    job, attempts = await job_and_attempts(client, caller, permanent)
    assert job["status"] == "failed"
    assert job["error"]["code"] in {"content_policy", "invalid_input"}
    assert [a["outcome"] for a in attempts] == ["failed"]
