"""A fal account end to end through the engine, against the fal simulator: batches run to
succeeded by polls and by signed webhooks, queue positions are kept on the job while it
waits at fal, forged webhooks are refused (polling finishes the job), fal's errors fail
jobs with fal's message, and a cancel reaches fal while the request is queued."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from service.models import Job
from service.state import State
from service.worker import run_until_idle
from simulators.fal import FalHandle, FalSimConfig, run_fal
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import FAL_KEY_ENV, account_config, fal_account, use_config
from tests.live import live_server


def fal_config(url: str) -> str:
    models = {
        "flux-dev-fal": {
            "ref": "fal-ai/flux/dev",
            "price": {"per_image": 0.025},
            "max_attempts": 2,
        },
        "kling-fal": {
            "ref": "fal-ai/kling-video/v2/master/image-to-video",
            "media": "video",
            "price": {"per_second": 0.05},
        },
    }
    return account_config("fal", fal_account(url), models)


@pytest.fixture
async def fal(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FalHandle]:
    monkeypatch.setenv(FAL_KEY_ENV, "sim-fal-key")
    async with run_fal(FalSimConfig(run_s=0.05, concurrency=4, webhook_retries=0)) as sim:
        await use_config(state, fal_config(sim.url), tmp_path)
        yield sim


def batch(count: int, **defaults: Any) -> dict[str, Any]:
    base = {"model": "flux-dev-fal", "width": 128, "height": 96} | defaults
    return {"defaults": base, "jobs": [{"prompt": f"harbour {n}", "seed": n} for n in range(count)]}


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def queue_positions(state: State, batch_id: str) -> list[int | None]:
    async with state.sessionmaker() as session:
        rows = await session.execute(
            select(Job.queue_position)
            .where(Job.batch_id == uuid.UUID(batch_id))
            .order_by(Job.index)
        )
        return list(rows.scalars())


async def test_a_batch_runs_to_succeeded_by_polls(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    batch_id = await submit(client, caller, batch(3))
    await run_until_idle(state, wait_for_deferred=True)
    jobs = await jobs_of(client, caller, batch_id)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]
    for job in jobs:
        assert job["cost_usd"] == pytest.approx(0.025)
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        image = Image.open(io.BytesIO(served.content))
        assert (image.format, image.size) == ("PNG", (128, 96))
    stats = await fal.stats()
    assert stats["submitted"] == 3
    assert stats["status_polls"] >= 3
    assert stats.get("webhook_attempts", 0) == 0  # no callback URL: none asked for


async def test_queue_position_is_kept_while_the_job_waits_at_fal(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    await fal.configure(concurrency=1, hold=True)
    batch_id = await submit(client, caller, batch(3))
    await run_until_idle(state)  # submitted; fal runs one, two wait in its queue
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"running"}
    positions = await queue_positions(state, batch_id)
    assert sorted(p for p in positions if p is not None)[-1] == 1  # the last one in line
    assert [j["queue_position"] for j in jobs] == positions  # shown on the job
    await fal.configure(hold=False)
    await run_until_idle(state, wait_for_deferred=True)
    jobs = await jobs_of(client, caller, batch_id)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3
    assert [j["queue_position"] for j in jobs] == [None] * 3  # no longer waiting
    assert (await fal.stats())["max_running"] == 1


async def until_webhooks(fal: FalHandle, count: int, key: str = "webhooks_sent") -> None:
    for _ in range(200):
        if (await fal.stats()).get(key, 0) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never reached {count}: {await fal.stats()}")


async def test_signed_webhooks_finish_jobs_when_polls_cannot(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    # fal's status route answers 503 throughout: only the webhooks can finish these jobs.
    await fal.fault(method="GET", path="/status$", status=503, count=1000, body={"detail": "x"})
    with live_server(state.settings) as api_url:
        state.settings.callback_url = api_url
        batch_id = await submit(client, caller, batch(3))
        await run_until_idle(state)
        await until_webhooks(fal, 3)
        await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]
    [state_entry, *_] = await fal.call("GET", "/_sim/state")
    assert state_entry["webhook"] == f"{api_url}/v1/callbacks/fal"
    stats = await fal.stats()
    assert stats["webhooks_sent"] == 3
    assert stats.get("result_reads", 0) == 0  # the webhook's payload was the result


async def test_forged_webhooks_are_refused_and_polls_finish_the_jobs(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    await fal.configure(webhook_signature="forged")
    with live_server(state.settings) as api_url:
        state.settings.callback_url = api_url
        batch_id = await submit(client, caller, batch(2))
        await run_until_idle(state)
        await until_webhooks(fal, 2, key="webhooks_failed")
        await run_until_idle(state, wait_for_deferred=True)
    jobs = await jobs_of(client, caller, batch_id)
    assert [j["status"] for j in jobs] == ["succeeded"] * 2
    stats = await fal.stats()
    assert stats.get("webhooks_sent", 0) == 0  # every delivery got a 401
    assert stats["webhooks_failed"] == 2


async def test_fals_error_fails_the_job_with_its_message(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    await fal.call("POST", "/_sim/outcomes", {"outcome": "invalid_input", "count": 1})
    batch_id = await submit(client, caller, batch(1))
    await run_until_idle(state, wait_for_deferred=True)
    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_input"
    assert "simulated validation error" in job["error"]["message"]
    assert job["attempts"] == 1  # permanent: not retried


async def test_cancel_reaches_fal_while_queued(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    await fal.configure(concurrency=1, hold=True)
    batch_id = await submit(client, caller, batch(3))
    await run_until_idle(state)
    response = await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)
    assert response.status_code == 200
    await run_until_idle(state)
    await fal.configure(hold=False)
    body = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert body["counts"]["cancelled"] == 3
    assert (await fal.stats())["cancelled"] == 2  # the queued two; the running one ran on


async def test_an_image_on_fal_animated_into_a_video_on_fal(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    video = {"model": "kling-fal", "width": 128, "height": 96, "duration_s": 1, "fps": 8}
    body = {
        "defaults": {"model": "flux-dev-fal", "width": 128, "height": 96},
        "jobs": [
            {"prompt": "a red kite over the dunes", "seed": 3},
            {"prompt": "the kite drifts", **video, "input": {"job": 0}, "seed": 4},
        ],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)
    image, clip = await jobs_of(client, caller, batch_id)
    assert (image["status"], clip["status"]) == ("succeeded", "succeeded"), clip["error"]
    output = clip["output"]
    assert (output["media"], output["content_type"]) == ("video", "video/mp4")
    assert (output["width"], output["height"], output["frames"]) == (128, 96, 8)
    assert clip["cost_usd"] == pytest.approx(0.05)
    _, animated = await fal.call("GET", "/_sim/state")
    head, _, data = animated["arguments"]["image_url"].partition(",")
    assert head == "data:image/png;base64"  # the parent's output, as fal takes it
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (128, 96)
    assert (animated["arguments"]["duration"], animated["arguments"]["aspect_ratio"]) == (
        "1",
        "4:3",
    )


def png_bytes(colour: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


async def test_uploaded_reference_and_mask_reach_fal_as_data_uris(
    client: httpx.AsyncClient, caller: Caller, state: State, fal: FalHandle
) -> None:
    ids = []
    for name, colour in (("ref.png", "crimson"), ("mask.png", "white")):
        files = {"file": (name, png_bytes(colour), "image/png")}
        uploaded = await client.post("/v1/uploads", files=files, headers=caller.headers)
        assert uploaded.status_code == 201, uploaded.text
        ids.append(uploaded.json()["id"])
    job = {"prompt": "a harbour", "seed": 9, "reference_images": [ids[0]], "mask": ids[1]}
    batch_id = await submit(client, caller, batch(0) | {"jobs": [job]})
    await run_until_idle(state, wait_for_deferred=True)
    [done] = await jobs_of(client, caller, batch_id)
    assert done["status"] == "succeeded", done["error"]
    [sent] = await fal.call("GET", "/_sim/state")
    reference = sent["arguments"]["image_url"].partition(",")[2]
    mask = sent["arguments"]["mask_url"].partition(",")[2]
    assert base64.b64decode(reference) == png_bytes("crimson")
    assert base64.b64decode(mask) == png_bytes("white")
