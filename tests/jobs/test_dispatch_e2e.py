"""The dispatch engine end to end against the provider simulator: Replicate's submit →
poll/callback → download, OpenAI's synchronous generation, 429s that slow the account
down without failing jobs, cancellation at the provider, retries, budgets, and a job
whose worker died after it was submitted (resumed by polling, never submitted twice)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.db import session_scope
from service.jobs import requests, service
from service.jobs.tasks import reconcile_jobs
from service.models import Job
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config
from tests.live import live_server


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig()) as handle:
        yield handle


@pytest.fixture
async def accounts(state: State, sim: SimulatorHandle, tmp_path: Path) -> SimulatorHandle:
    await use_config(state, sim_config(sim.url), tmp_path)
    return sim


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def attempts_of(client: httpx.AsyncClient, caller: Caller, job_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)
    return list(response.json())


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_replicate_jobs_submit_poll_and_download(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    await accounts.configure(latency={"kind": "fixed", "s": 0.3})
    body = {
        "defaults": {"model": "flux-sim", "width": 256, "height": 128},
        "jobs": [{"prompt": f"harbour {n}", "seed": n} for n in range(3)]
        + [{"prompt": "pinned version", "model": "flux-sim-pinned"}],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    jobs = await jobs_of(client, caller, batch_id)
    assert [j["status"] for j in jobs] == ["succeeded"] * 4
    for job in jobs[:3]:
        assert job["cost_usd"] == pytest.approx(0.003)
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        assert png_size(served.content) == (256, 128)
        [attempt] = await attempts_of(client, caller, job["id"])
        assert attempt["provider"] == "replicate"
        assert attempt["outcome"] == "succeeded"
        assert attempt["remote_id"]
        assert "predict_time" in attempt["usage"]
    stats = await accounts.stats()
    assert stats["creations_accepted"] == 4
    assert stats["duplicate_submissions"] == 0
    assert stats["requests_by_route"]["POST /v1/predictions"] == 1  # owner/name:version
    assert stats["requests_by_route"]["GET /v1/predictions/{prediction_id}"] >= 4
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["cost_usd"] == pytest.approx(0.009)
    # Nothing holds a slot once everything finished.
    assert (await state.dispatch.limiter("replicate").snapshot()).in_flight == 0


async def test_openai_jobs_are_synchronous_and_keep_usage(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    body = {"defaults": {"model": "gpt-sim", "width": 1024, "height": 1024, "format": "webp"}}
    body["jobs"] = [{"prompt": f"fox {n}"} for n in range(3)]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"succeeded"}, jobs[0]["error"]
    assert jobs[0]["output"]["content_type"] == "image/webp"
    attempts = await attempts_of(client, caller, jobs[0]["id"])
    assert attempts[0]["provider"] == "openai"
    assert attempts[0]["usage"]["total_tokens"] > 0
    assert attempts[0]["remote_id"] is None
    assert jobs[0]["provider"] == "openai"
    stats = await accounts.stats()
    assert stats["creations_by_provider"]["openai"] == 3


JOBS_429 = 8


async def test_429s_slow_the_account_and_never_fail_or_count(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    # The provider allows 2/s with no burst; Darkroom was told nothing about it. Slow enough
    # that even a loaded machine sends the batch's first requests faster (at 20/s it might not,
    # and then no 429 would come at all).
    await accounts.configure(rate_per_s=2, burst=1, rate_limit_hint="none")
    body = {"defaults": {"model": "gpt-sim", "width": 1024, "height": 1024}}
    body["jobs"] = [{"prompt": f"p{n}"} for n in range(JOBS_429)]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["attempts"] for j in jobs} == {1}  # a 429 never uses up an attempt
    stats = await accounts.stats()
    assert stats["rate_limited"] > 0
    limiter = await state.dispatch.limiter("openai").snapshot()
    assert limiter.cuts >= 1
    assert limiter.rate_limited == stats["rate_limited"]
    outcomes = [a["outcome"] for j in jobs for a in await attempts_of(client, caller, j["id"])]
    assert outcomes.count("rate_limited") == stats["rate_limited"]
    assert outcomes.count("succeeded") == JOBS_429


async def test_a_refusal_fails_at_once_with_the_providers_reason(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    body = {
        "jobs": [
            {"prompt": "something FORBIDDEN", "model": "gpt-sim"},
            {"prompt": "something FORBIDDEN", "model": "flux-sim"},
        ],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)
    openai_job, replicate_job = await jobs_of(client, caller, batch_id)
    for job in (openai_job, replicate_job):
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert job["error"]["code"] == "content_policy"
        assert job["error"]["message"]
    assert (await accounts.stats())["duplicate_submissions"] == 0


async def test_a_submitted_job_whose_worker_died_resumes_by_polling(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    """The prediction id was stored, then the worker died: the job is polled to the end
    and never submitted again."""

    batch_id = await submit(
        client, caller, {"jobs": [{"prompt": "lighthouse", "model": "flux-sim"}]}
    )
    job_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    await state.dispatch.queue("replicate").purge(batch_id)
    spec = state.registry.model("flux-sim")
    assert spec is not None
    async with session_scope(state.sessionmaker) as session:
        started = await service.start_attempt(
            session,
            job_id,
            account="replicate",
            max_attempts=3,
            price=Decimal(0),
            public_url="http://x",
        )
    assert isinstance(started, service.StartedJob)
    remote = await state.registry.providers["replicate"].submit(  # type: ignore[attr-defined]
        await requests.generation_request(state, spec, started)
    )
    async with session_scope(state.sessionmaker) as session:
        assert await service.record_submitted(session, started, remote)  # type: ignore[union-attr]
    # ... and here the worker died, before it enqueued the first poll.

    state.settings.reconcile_stale_after_s = 0
    assert await reconcile_jobs(state) == 1
    await run_until_idle(state, wait_for_deferred=True)
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    assert job["status"] == "succeeded"
    stats = await accounts.stats()
    assert stats["creations_accepted"] == 1
    assert stats["duplicate_submissions"] == 0


async def test_cancel_cancels_predictions_at_the_provider(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    await accounts.configure(latency={"kind": "fixed", "s": 60})
    body = {"defaults": {"model": "flux-sim"}, "jobs": [{"prompt": f"p{n}"} for n in range(3)]}
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)  # submitted; the polls wait for later
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"running"}

    response = await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)
    assert response.status_code == 200
    await run_until_idle(state)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "cancelled"
    assert batch["counts"]["cancelled"] == 3
    stats = await accounts.stats()
    assert stats["cancels"] == 3
    assert stats["predictions_by_status"]["canceled"] == 3
    assert (await state.dispatch.limiter("replicate").snapshot()).in_flight == 0


async def test_retry_requeues_failed_jobs(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    await accounts.configure(token="rotated")  # every request now fails with 401
    body = {"defaults": {"model": "gpt-sim", "width": 1024, "height": 1024}}
    body["jobs"] = [{"prompt": "a"}, {"prompt": "b"}]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "failed"
    assert {j["error"]["code"] for j in await jobs_of(client, caller, batch_id)} == {"auth"}

    await accounts.configure(token="sim-token")
    response = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert response.status_code == 202
    assert response.json()["counts"]["queued"] == 2
    await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["attempts"] for j in jobs} == {1}
    assert len(await attempts_of(client, caller, jobs[0]["id"])) == 2
    again = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "nothing_to_retry"


async def test_budget_stops_dispatch_before_it_is_exceeded(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    accounts: SimulatorHandle,
    tmp_path: Path,
) -> None:
    await use_config(state, sim_config(accounts.url, price=0.04), tmp_path)
    body = {
        "budget_usd": 0.1,
        "defaults": {"model": "gpt-sim", "width": 1024, "height": 1024},
        "jobs": [{"prompt": f"p{n}"} for n in range(5)],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    statuses = [j["status"] for j in jobs]
    assert statuses.count("succeeded") == 2
    assert statuses.count("failed") == 3
    assert {j["error"]["code"] for j in jobs if j["status"] == "failed"} == {"budget_exceeded"}
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["cost_usd"] == pytest.approx(0.08)
    assert batch["budget_usd"] == pytest.approx(0.1)
    assert (await accounts.stats())["creations_accepted"] == 2


async def test_replicate_callbacks_finish_jobs_without_waiting_for_a_poll(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: SimulatorHandle
) -> None:
    with live_server(state.settings) as api_url:
        state.settings.callback_url = api_url
        body = {"defaults": {"model": "flux-sim"}, "jobs": [{"prompt": f"p{n}"} for n in range(3)]}
        batch_id = await submit(client, caller, body)
        # Dispatch and let the callbacks arrive; the first poll is 1 s away.
        await run_until_idle(state)
        for _ in range(100):
            stats = await accounts.stats()
            if stats["webhooks_sent"] == 3:
                break
            await asyncio.sleep(0.05)
        await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"succeeded"}, [(j["status"], j["error"]) for j in jobs]
    stats = await accounts.stats()
    assert stats["webhooks_sent"] == 3
    assert stats["requests_by_route"].get("GET /v1/predictions/{prediction_id}", 0) == 0
    async with state.sessionmaker() as session:
        job = await session.get(Job, uuid.UUID(jobs[0]["id"]))
        assert job is not None
        assert job.remote_id is not None
