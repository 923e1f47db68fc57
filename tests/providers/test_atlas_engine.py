"""Atlas Cloud end to end through the engine: batches on an account pointed at the Atlas
simulator, submitted over the API, run by the dispatcher and real workers (polls
included), stored and served."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.state import State
from service.worker import run_until_idle
from simulators.atlas import MODERATION_ERROR, run_atlas
from simulators.atlas_control import AtlasHandle, AtlasSimConfig
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import account_config, use_config

# Their jobs are retried several times and waited for to the end.
pytestmark = pytest.mark.usefixtures("quick_retries")

TOKEN_ENV = "DARKROOM_TEST_ATLAS_ENGINE_KEY"
IMAGE_REF = "bytedance/seedream-v4"


def atlas_config(url: str) -> str:
    """A DARKROOM_CONFIG with one Atlas account (the issue's block, at the simulator)."""
    account = {
        "kind": "atlas",
        "base_url": url,
        "token_env": TOKEN_ENV,
        "limits": {"rate_per_s": 50, "max_concurrent": 8},
        "timeout_s": 5,
    }
    models = {
        "atlas-image": {
            "ref": IMAGE_REF,
            "price": {"per_image": 0.027},
            "max_attempts": 3,
        }
    }
    return account_config("atlas", account, models)


@pytest.fixture
async def atlas(
    state: State, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[AtlasHandle]:
    monkeypatch.setenv(TOKEN_ENV, AtlasSimConfig().token)
    async with run_atlas() as sim:
        await use_config(state, atlas_config(sim.url), tmp_path)
        yield sim


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def attempts_of(client: httpx.AsyncClient, caller: Caller, job_id: str) -> list[Any]:
    response = await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)
    return list(response.json())


@pytest.mark.parametrize("shape", ["data", "flat"])
async def test_a_batch_on_an_atlas_account_succeeds(
    client: httpx.AsyncClient, caller: Caller, state: State, atlas: AtlasHandle, shape: str
) -> None:
    await atlas.configure(shape=shape)
    body: dict[str, object] = {
        "defaults": {"model": "atlas-image", "width": 96, "height": 64},
        "jobs": [
            {"prompt": "a lighthouse", "seed": 1},
            {"prompt": "a fox", "format": "jpeg", "seed": 2},
        ],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    jobs = await jobs_of(client, caller, batch_id)
    for job, fmt in zip(jobs, ["PNG", "JPEG"], strict=True):
        assert job["status"] == "succeeded", job["error"]
        assert job["provider"] == "atlas"
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        assert served.status_code == 200
        image = Image.open(io.BytesIO(served.content))
        assert (image.format, image.size) == (fmt, (96, 64))
        [attempt] = await attempts_of(client, caller, job["id"])
        assert attempt["outcome"] == "succeeded"
        assert attempt["remote_id"] in await atlas.predictions()
    sent = [r["json"] for r in await atlas.requests() if r["path"].endswith("/generateImage")]
    assert sorted((r["prompt"], r["size"], r["output_format"]) for r in sent) == [
        ("a fox", "96*64", "jpeg"),
        ("a lighthouse", "96*64", "png"),
    ]
    assert {r["model"] for r in sent} == {IMAGE_REF}


async def test_a_moderated_job_fails_with_atlas_reason_and_the_rest_go_on(
    client: httpx.AsyncClient, caller: Caller, state: State, atlas: AtlasHandle
) -> None:
    body: dict[str, object] = {
        "defaults": {"model": "atlas-image", "width": 64, "height": 64},
        "jobs": [{"prompt": "a FORBIDDEN scene"}, {"prompt": "a quiet harbour"}],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    failed, succeeded = await jobs_of(client, caller, batch_id)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "content_policy"
    assert MODERATION_ERROR in failed["error"]["message"]
    assert "error_code 1039" in failed["error"]["message"]
    assert failed["attempts"] == 1  # moderation is permanent: not tried again
    assert failed["output"] is None
    assert succeeded["status"] == "succeeded"
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["counts"]["failed"] == 1
    assert batch["counts"]["succeeded"] == 1


async def test_a_transient_failure_is_tried_again_and_says_why(
    client: httpx.AsyncClient, caller: Caller, state: State, atlas: AtlasHandle
) -> None:
    await atlas.configure(fail_next=1, failure_error="GPU worker lost, please retry")
    body: dict[str, object] = {
        "jobs": [{"prompt": "tide pools", "model": "atlas-image", "width": 64, "height": 64}]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded"
    first, second = await attempts_of(client, caller, job["id"])
    assert first["outcome"] == "retry"
    assert first["error_code"] == "generation_failed"
    assert "GPU worker lost, please retry" in first["error_message"]
    assert second["outcome"] == "succeeded"


async def test_a_job_that_keeps_failing_fails_with_the_last_reason(
    client: httpx.AsyncClient, caller: Caller, state: State, atlas: AtlasHandle
) -> None:
    await atlas.configure(fail_next=3, failure_error="Inference timed out")
    body: dict[str, object] = {
        "jobs": [{"prompt": "dunes", "model": "atlas-image", "width": 64, "height": 64}]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert job["error"]["code"] == "generation_failed"
    assert job["error"]["message"].endswith("failed: Inference timed out")


async def test_a_429_slows_the_account_without_using_an_attempt(
    client: httpx.AsyncClient, caller: Caller, state: State, atlas: AtlasHandle
) -> None:
    await atlas.fault(429, path="generateImage", count=1, headers={"Retry-After": "1"})
    body: dict[str, object] = {
        "jobs": [{"prompt": "a kite", "model": "atlas-image", "width": 64, "height": 64}]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    outcomes = [a["outcome"] for a in await attempts_of(client, caller, job["id"])]
    assert outcomes == ["rate_limited", "succeeded"]
    assert (await state.dispatch.limiter("atlas").snapshot()).rate_limited == 1
