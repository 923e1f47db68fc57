"""A command account (kind command) end to end through the engine, running the AnyCap-style
simulator CLI: images made and stored, a permanent failure with the CLI's own message, and
a CLI that hangs, killed at its timeout and failed once its attempts are used up."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from service.state import State
from service.worker import run_until_idle
from simulators import anycap
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import use_config

CLI = [sys.executable, str(Path(anycap.__file__).resolve())]
# The contract's anycap argv, with the simulator as the program, plus the size.
ARGV = [*CLI, "image", "generate", "--prompt", "{prompt}", "--model", "{ref}"]
ARGV += ["--width", "{width}", "--height", "{height}", "--output-format", "json", "-o", "{output}"]


def config(*, timeout_s: float = 30, max_attempts: int = 2) -> str:
    account = {
        "kind": "command",
        "argv": ARGV,
        "timeout_s": timeout_s,
        "errors": {"exit_codes": {anycap.EXIT_PERMANENT: "permanent"}},
        "limits": {"max_concurrent": 2},
    }
    models = {
        name: {"provider": "anycap", "ref": ref, "max_attempts": max_attempts}
        for name, ref in (
            ("anycap", "flux-schnell"),
            ("anycap-refuses", "fault:permanent"),
            ("anycap-hangs", "fault:spawn_hang"),
        )
    }
    return json.dumps({"providers": {"anycap": account}, "models": models})


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def attempts_of(client: httpx.AsyncClient, caller: Caller, job_id: str) -> list[Any]:
    response = await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)
    return list(response.json())


async def test_the_cli_makes_images_that_are_stored(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    await use_config(state, config(), tmp_path)
    body: dict[str, object] = {
        "defaults": {"model": "anycap", "width": 200, "height": 96, "format": "jpeg"},
        "jobs": [{"prompt": "-o /etc/passwd", "seed": 1}, {"prompt": "a fox; rm -rf /"}],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    for job in jobs:
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        with Image.open(io.BytesIO(served.content)) as image:
            assert (image.format, image.size) == ("JPEG", (200, 96))
        [attempt] = await attempts_of(client, caller, job["id"])
        assert (attempt["provider"], attempt["outcome"]) == ("anycap", "succeeded")


async def test_a_permanent_exit_fails_the_job_at_once_with_the_clis_message(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    await use_config(state, config(), tmp_path)
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "x", "model": "anycap-refuses"}]})
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "content policy violation" in job["error"]["message"]


async def test_a_hanging_cli_is_killed_at_its_timeout_and_retried(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    await use_config(state, config(timeout_s=1, max_attempts=2), tmp_path)
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "x", "model": "anycap-hangs"}]})
    await run_until_idle(state, wait_for_deferred=True)

    [job] = await jobs_of(client, caller, batch_id)
    assert (job["status"], job["attempts"]) == ("failed", 2)
    assert job["error"]["code"] == "timeout"
    outcomes = [a["outcome"] for a in await attempts_of(client, caller, job["id"])]
    assert len(outcomes) == 2
