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
from tests.jobs.sim_accounts import account_config, use_config
from tests.providers.comfyui_helpers import EXAMPLES, IMG2IMG_INJECT, TXT2IMG_INJECT, Control


def comfy_config(url: str, workdir: Path) -> str:
    """A comfyui account (max_concurrent 1) and two models: the shipped text-to-image
    workflow, and a copy that loads a checkpoint the server does not have."""
    folder = workdir / "workflows"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "sdxl.json", folder / "sdxl.json")
    shutil.copy(EXAMPLES / "sdxl-img2img.json", folder / "sdxl-img2img.json")
    broken = json.loads((EXAMPLES / "sdxl.json").read_text())
    broken["4"]["inputs"]["ckpt_name"] = "flux1-dev.safetensors"
    (folder / "missing-model.json").write_text(json.dumps(broken))
    account = {
        "kind": "comfyui",
        "base_url": url,
        "limits": {"max_concurrent": 1},
        "timeout_s": 5,
    }
    models = {
        "comfy-sdxl": {
            "ref": "workflows/sdxl.json",
            "inject": TXT2IMG_INJECT,
            "price": {"per_image": 0},
        },
        "comfy-img2img": {
            "ref": "workflows/sdxl-img2img.json",
            "inject": IMG2IMG_INJECT,
        },
        "comfy-missing-model": {
            "ref": "workflows/missing-model.json",
            "inject": TXT2IMG_INJECT,
        },
    }
    return account_config("comfy", account, models)


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


async def test_a_chain_uploads_the_parents_image_into_the_img2img_workflow(
    client: httpx.AsyncClient, caller: Caller, state: State, comfy: Control
) -> None:
    body = {
        "defaults": {"width": 192, "height": 128},
        "jobs": [
            {"prompt": "a harbour at dawn", "model": "comfy-sdxl"},
            {"prompt": "as a watercolour", "model": "comfy-img2img", "input": {"job": 0}},
        ],
    }
    batch_id = await submit(client, caller, body)

    await run_until_idle(state, wait_for_deferred=True)

    parent, child = await jobs_of(client, caller, batch_id)
    assert [parent["status"], child["status"]] == ["succeeded", "succeeded"], child["error"]
    [[kind, subfolder, name]] = (await comfy.state())["uploads"]
    assert (kind, subfolder) == ("input", "darkroom")
    first, second = await comfy.requests("POST", "/prompt")
    assert "10" not in first["json"]["prompt"]
    assert second["json"]["prompt"]["10"]["inputs"]["image"] == f"darkroom/{name}"
    async with httpx.AsyncClient(base_url=comfy.url) as sim:
        view = {"filename": name, "subfolder": subfolder, "type": kind}
        uploaded = (await sim.get("/view", params=view)).content
    output = await client.get(f"/v1/jobs/{parent['id']}/output", headers=caller.headers)
    assert uploaded == output.content
    served = await client.get(f"/v1/jobs/{child['id']}/output", headers=caller.headers)
    assert Image.open(io.BytesIO(served.content)).size == (192, 128)


async def test_a_text_to_image_workflow_takes_no_reference(
    client: httpx.AsyncClient, caller: Caller, comfy: Control
) -> None:
    jobs = [
        {"prompt": "a", "model": "comfy-sdxl"},
        {"prompt": "b", "model": "comfy-sdxl", "input": {"job": 0}},
    ]
    response = await client.post("/v1/batches", json={"jobs": jobs}, headers=caller.headers)

    assert response.status_code == 422, response.text
    assert "jobs[1]" in response.text
