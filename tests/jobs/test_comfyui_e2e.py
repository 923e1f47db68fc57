"""ComfyUI end to end through the engine: a batch on a comfyui account limited to one
prompt in flight, against the ComfyUI simulator (one simulated GPU)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.state import State
from service.worker import run_until_idle
from simulators.comfyui import run_comfyui
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import use_config
from tests.providers.comfyui_helpers import EXAMPLES, TXT2IMG_INJECT, Control


def comfy_config(url: str, workdir: Path) -> str:
    """A comfyui account (max_concurrent 1) and two models: the shipped text-to-image
    workflow, and a copy that loads a checkpoint the server does not have."""
    folder = workdir / "workflows"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "sdxl.json", folder / "sdxl.json")
    broken = json.loads((EXAMPLES / "sdxl.json").read_text())
    broken["4"]["inputs"]["ckpt_name"] = "flux1-dev.safetensors"
    (folder / "missing-model.json").write_text(json.dumps(broken))
    config = {
        "providers": {
            "comfy": {
                "kind": "comfyui",
                "base_url": url,
                "limits": {"max_concurrent": 1},
                "timeout_s": 5,
            }
        },
        "models": {
            "comfy-sdxl": {
                "provider": "comfy",
                "ref": "workflows/sdxl.json",
                "inject": TXT2IMG_INJECT,
                "price": {"per_image": 0},
            },
            "comfy-missing-model": {
                "provider": "comfy",
                "ref": "workflows/missing-model.json",
                "inject": TXT2IMG_INJECT,
            },
        },
    }
    return json.dumps(config)


@pytest.fixture
async def comfy(state: State, tmp_path: Path) -> AsyncIterator[Control]:
    async with run_comfyui() as url:
        await use_config(state, comfy_config(url, tmp_path), tmp_path)
        yield Control(url)


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def test_a_batch_on_a_one_gpu_account_runs_one_prompt_at_a_time_to_success(
    client: httpx.AsyncClient, caller: Caller, state: State, comfy: Control
) -> None:
    await comfy.configure(run_s=0.2)
    body = {
        "defaults": {"model": "comfy-sdxl", "width": 256, "height": 192},
        "jobs": [{"prompt": f"harbour {n}", "seed": n} for n in range(4)],
    }
    batch_id = await submit(client, caller, body)

    await run_until_idle(state, wait_for_deferred=True)

    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded"] * 4, jobs[0]["error"]
    for job in jobs:
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        assert Image.open(io.BytesIO(served.content)).size == (256, 192)
        [attempt] = (
            await client.get(f"/v1/jobs/{job['id']}/attempts", headers=caller.headers)
        ).json()
        assert (attempt["provider"], attempt["outcome"]) == ("comfy", "succeeded")
        assert attempt["remote_id"]
    sim = await comfy.state()
    assert len(sim["history"]) == 4
    # Never more than one prompt at ComfyUI, running or waiting: the account's limit.
    assert sim["most_queued"] == 1
    prompts = await comfy.requests("POST", "/prompt")
    assert sorted(p["json"]["prompt"]["6"]["inputs"]["text"] for p in prompts) == [
        f"harbour {n}" for n in range(4)
    ]
    assert (await state.dispatch.limiter("comfy").snapshot()).in_flight == 0


async def test_a_workflow_comfyui_refuses_fails_once_with_the_node_message(
    client: httpx.AsyncClient, caller: Caller, state: State, comfy: Control
) -> None:
    body = {"defaults": {"model": "comfy-missing-model"}, "jobs": [{"prompt": "a fox"}]}
    batch_id = await submit(client, caller, body)

    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "failed"
    message = json.dumps(job["error"])
    assert "node 4 (CheckpointLoaderSimple): Value not in list" in message
    assert "flux1-dev.safetensors" in message
    assert len(await comfy.requests("POST", "/prompt")) == 1


async def test_an_out_of_memory_run_is_retried_and_succeeds(
    client: httpx.AsyncClient, caller: Caller, state: State, comfy: Control
) -> None:
    await comfy.configure(execution_error={"count": 1, "exception_type": "torch.OutOfMemoryError"})
    body = {
        "defaults": {"model": "comfy-sdxl", "width": 128, "height": 128},
        "jobs": [{"prompt": "x"}],
    }
    batch_id = await submit(client, caller, body)

    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded", job["error"]
    attempts = (await client.get(f"/v1/jobs/{job['id']}/attempts", headers=caller.headers)).json()
    assert [a["outcome"] for a in attempts][-1] == "succeeded"
    assert len(attempts) == 2
    assert "OutOfMemoryError" in json.dumps(attempts[0])
