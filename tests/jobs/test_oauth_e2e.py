"""An `ernie`-style account (openai kind, OAuth client credentials) end to end through the
engine: jobs share one token, a token revoked mid-life is refreshed without failing a
job, a token endpoint outage is retried, and credentials the endpoint refuses fail jobs
at once with its reason, never with the secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.state import State
from service.worker import run_until_idle
from simulators import SimulatorHandle, run_simulator
from simulators.oauth import TokenServerHandle
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import account_config, use_config

ID_ENV, SECRET_ENV = "DARKROOM_TEST_ERNIE_API_KEY", "DARKROOM_TEST_ERNIE_SECRET_KEY"
SECRET = "sim-client-secret"


def ernie_config(url: str) -> str:
    account = {
        "kind": "openai",
        "base_url": url + "/v1",
        "timeout_s": 5,
        "auth": {
            "type": "oauth_client_credentials",
            "token_url": url + "/oauth/2.0/token",
            "client_id_env": ID_ENV,
            "client_secret_env": SECRET_ENV,
        },
    }
    models = {"ernie-image": {"ref": "irag-1.0", "max_attempts": 3}}
    return account_config("ernie", account, models)


@pytest.fixture
async def tokens(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TokenServerHandle]:
    monkeypatch.setenv(ID_ENV, "sim-client-id")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with run_simulator() as sim:
        server = TokenServerHandle(sim.url)
        await server.configure(enabled=True)
        await use_config(state, ernie_config(sim.url), tmp_path)
        yield server


async def run_batch(
    client: httpx.AsyncClient, caller: Caller, state: State, count: int
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "defaults": {"model": "ernie-image", "width": 128, "height": 128},
        "jobs": [{"prompt": f"a lantern, {n}"} for n in range(count)],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def test_jobs_share_one_token_and_survive_a_revocation(
    client: httpx.AsyncClient, caller: Caller, state: State, tokens: TokenServerHandle
) -> None:
    jobs = await run_batch(client, caller, state, 4)
    assert {job["status"] for job in jobs} == {"succeeded"}, jobs[0]["error"]
    assert (await tokens.stats())["fetches"] == 1

    await tokens.revoke()  # the API refuses the token from now on, mid-life
    jobs = await run_batch(client, caller, state, 3)

    assert {job["status"] for job in jobs} == {"succeeded"}, jobs[0]["error"]
    assert {job["attempts"] for job in jobs} == {1}  # the refresh used up no attempt
    stats = await tokens.stats()
    assert stats["fetches"] == 2  # however many jobs in flight were refused the old token
    assert 1 <= stats["rejected_tokens"] <= 3
    sim = await SimulatorHandle(tokens.url).stats()
    assert sim["creations_by_provider"]["openai"] == 7


async def test_a_token_endpoint_outage_is_retried(
    client: httpx.AsyncClient, caller: Caller, state: State, tokens: TokenServerHandle
) -> None:
    await tokens.configure(faults=["error_503"])

    [job] = await run_batch(client, caller, state, 1)

    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert (await tokens.stats())["fetches"] == 2


async def test_refused_credentials_fail_jobs_at_once_with_the_endpoints_reason(
    client: httpx.AsyncClient, caller: Caller, state: State, tokens: TokenServerHandle
) -> None:
    await tokens.configure(client_secret="rotated-at-baidu")

    jobs = await run_batch(client, caller, state, 2)

    for job in jobs:
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert job["error"]["code"] == "provider_auth_failed"
        assert "ernie" in job["error"]["message"]
        assert "Client authentication failed" in job["error"]["message"]
        assert SECRET not in json.dumps(job)
    assert (await SimulatorHandle(tokens.url).stats())["creations_by_provider"]["openai"] == 0
