"""Declarative HTTP accounts (kind http) end to end through the engine, against the Thena
simulator: the synchronous Thena API, its asynchronous variant (submit, poll, fetch), a
429 with its wait in the body, and errors that fail a job with the provider's reason."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.providers.video import inspect_video
from service.state import State
from service.worker import run_until_idle
from simulators.cms.base import run_cms
from simulators.thena import API_KEY, build_app, rate_limited_body
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import use_config

KEY_ENV = "DARKROOM_TEST_LUCKDATA_KEY"
BODY = {
    "model": "{{ ref }}",
    "width": "{{ width | string }}",
    "height": "{{ height | string }}",
    "prompt": "{{ prompt }}",
    "creative": "false",
}


def config(url: str, *, max_attempts: int = 3) -> str:
    """Two accounts on the simulator: the contract's Thena block, and an asynchronous
    task API described the same way."""
    thena: dict[str, Any] = {
        "kind": "http",
        "base_url": url,
        "headers": {"X-Luckdata-Api-Key": {"env": KEY_ENV}},
        "submit": {"method": "POST", "path": "/api/thena/9wsC1QKXEoPh?user-agent=THENA"},
        "result": {"image_url": "$.data.image_url"},
        "errors": {
            "rate_limited": [429],
            "permanent": [400, 401, 403, 422],
            "retry_after": "$.retry_after",
        },
        "timeout_s": 5,
    }
    thena["submit"]["body"] = BODY
    tasks = copy.deepcopy(thena)
    tasks["submit"]["path"] = "/api/thena/tasks"
    tasks |= {
        "id": "$.data.task_id",
        "poll": {"path": "/api/thena/tasks/{{ id }}"},
        "status": {
            "path": "$.data.status",
            "succeeded": ["succeeded"],
            "failed": ["failed"],
            "error": "$.data.error",
        },
    }
    videos = copy.deepcopy(tasks)
    videos["submit"]["body"]["duration"] = "{{ duration_s | int | string }}"
    videos["result"] = {"video_url": "$.data.video_url"}
    model = {"ref": "default", "price": {"per_image": 0.01}, "max_attempts": max_attempts}
    video = {"ref": "default", "price": {"per_second": 0.02}, "media": "video"}
    return json.dumps(
        {
            "providers": {"thena": thena, "tasks": tasks, "videos": videos},
            "models": {
                "thena": {"provider": "thena", **model},
                "thena-tasks": {"provider": "tasks", **model},
                "thena-video": {"provider": "videos", **video},
            },
        }
    )


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with run_cms(partial(build_app, None)) as url:
        yield url


@pytest.fixture
async def accounts(state: State, sim: str, tmp_path: Path) -> str:
    await use_config(state, config(sim), tmp_path)
    return sim


async def control(url: str, path: str, body: Any, method: str = "POST") -> Any:
    async with httpx.AsyncClient(base_url=url, verify=False) as client:
        response = await client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def attempts_of(client: httpx.AsyncClient, caller: Caller, job_id: str) -> list[Any]:
    response = await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)
    return list(response.json())


async def served_size(client: httpx.AsyncClient, caller: Caller, job_id: str) -> tuple[int, int]:
    served = await client.get(f"/v1/jobs/{job_id}/output", headers=caller.headers)
    assert served.status_code == 200
    with Image.open(io.BytesIO(served.content)) as image:
        return image.size


async def test_thena_jobs_run_with_string_sizes(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: str
) -> None:
    body: dict[str, object] = {
        "defaults": {"model": "thena", "width": 256, "height": 128},
        "jobs": [{"prompt": "a dreamy castle", "seed": 1}, {"prompt": "a fox", "seed": 2}],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    for job in jobs:
        assert job["cost_usd"] == pytest.approx(0.01)
        assert await served_size(client, caller, job["id"]) == (256, 128)
        [attempt] = await attempts_of(client, caller, job["id"])
        assert (attempt["provider"], attempt["outcome"]) == ("thena", "succeeded")
    sent = await control(accounts, "/_sim/requests", None, "GET")
    bodies = [entry["json"] for entry in sent if entry["path"].startswith("/api/")]
    assert {(b["width"], b["height"], b["model"]) for b in bodies} == {("256", "128", "default")}


async def test_a_429_with_its_wait_in_the_body_never_uses_up_an_attempt(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: str
) -> None:
    fault = {"path": "^/api/", "status": 429, "body": rate_limited_body(0.5), "count": 1}
    await control(accounts, "/_sim/faults", fault)
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "a tower", "model": "thena"}]})
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    outcomes = [a["outcome"] for a in await attempts_of(client, caller, job["id"])]
    assert outcomes == ["rate_limited", "succeeded"]


async def test_a_permanent_status_fails_the_job_at_once_with_the_reason(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    accounts: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-key")
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "a tower", "model": "thena"}]})
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert job["error"]["code"] == "auth"
    assert "Invalid or missing API key" in job["error"]["message"]
    assert "not-the-key" not in json.dumps(job)


async def test_a_batch_is_refused_while_a_header_variable_is_unset(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    accounts: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    body = {"jobs": [{"prompt": "a tower", "model": "thena"}]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422
    assert KEY_ENV in response.text


async def test_an_asynchronous_api_is_submitted_polled_and_fetched(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: str
) -> None:
    await control(accounts, "/_sim/config", {"polls_until_done": 2}, "PATCH")
    body: dict[str, object] = {"defaults": {"model": "thena-tasks", "width": 192, "height": 96}}
    body["jobs"] = [{"prompt": "a lighthouse", "seed": 5}]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded"
    assert await served_size(client, caller, job["id"]) == (192, 96)
    [attempt] = await attempts_of(client, caller, job["id"])
    assert attempt["provider"] == "tasks"
    assert attempt["remote_id"].startswith("task")
    state_of_sim = await control(accounts, "/_sim/state", None, "GET")
    assert state_of_sim["tasks"][attempt["remote_id"]]["polls"] >= 2


async def test_a_video_from_an_asynchronous_api(
    client: httpx.AsyncClient, caller: Caller, state: State, accounts: str
) -> None:
    job = {"prompt": "waves", "model": "thena-video", "width": 128, "height": 96}
    batch_id = await submit(client, caller, {"jobs": [job | {"duration_s": 2, "fps": 8}]})
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded", job["error"]
    output = job["output"]
    assert (output["media"], output["content_type"]) == ("video", "video/mp4")
    assert (output["width"], output["height"]) == (128, 96)
    assert output["duration_s"] == pytest.approx(2, abs=0.3)
    served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    info = inspect_video(served.content)
    assert (info.format, info.width, info.height) == ("mp4", 128, 96)


async def test_a_failed_remote_generation_fails_the_job_with_the_providers_reason(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: str, tmp_path: Path
) -> None:
    await use_config(state, config(sim, max_attempts=1), tmp_path)
    jobs: dict[str, object] = {"jobs": [{"prompt": "FAIL this one", "model": "thena-tasks"}]}
    batch_id = await submit(client, caller, jobs)
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "failed"
    assert "Content rejected by safety filter" in job["error"]["message"]
