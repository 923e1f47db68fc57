"""Videos and chains end to end: an image animated into a video in one batch of two jobs,
a parent's failure passed on, retries that follow the chain, and what is refused at
submit."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat

from service.providers.base import ProviderPermanentError
from service.providers.video import inspect_video
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install
from tests.jobs.sim_accounts import use_config

IMAGE = {"model": "local/procedural", "width": 256, "height": 144}
VIDEO = {"model": "local/procedural-video", "width": 256, "height": 144, "duration_s": 2, "fps": 8}


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def output_bytes(client: httpx.AsyncClient, caller: Caller, job: dict) -> bytes:  # type: ignore[type-arg]
    response = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.content


async def test_an_image_animated_into_a_video(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "jobs": [
            {"prompt": "a red kite over the dunes", **IMAGE, "seed": 3},
            {"prompt": "the kite drifts", **VIDEO, "input": {"job": 0}, "seed": 4},
        ]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    image, video = await jobs_of(client, caller, batch_id)
    assert (image["status"], video["status"]) == ("succeeded", "succeeded"), video["error"]
    assert video["parent_job_id"] == image["id"]
    assert video["params"]["media"] == "video"
    output = video["output"]
    assert output["media"] == "video"
    assert output["content_type"] == "video/mp4"
    assert (output["width"], output["height"]) == (256, 144)
    assert output["duration_s"] == pytest.approx(2, abs=0.2)
    assert output["frames"] == 16
    info = inspect_video(await output_bytes(client, caller, video))
    assert (info.format, info.codec, info.width, info.height) == ("mp4", "h264", 256, 144)
    assert info.frames == 16
    # The first frame is the parent's image: the chain really fed it in.
    assert image["output"]["media"] == "image"


async def test_a_webm_video_without_a_parent(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {"jobs": [{"prompt": "tide pools", **VIDEO, "format": "webm", "resolution": "480p"}]}
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    [job] = await jobs_of(client, caller, batch_id)
    assert job["status"] == "succeeded", job["error"]
    # width and height were given, so the resolution name does not override them
    assert (job["output"]["width"], job["output"]["height"]) == (256, 144)
    info = inspect_video(await output_bytes(client, caller, job))
    assert (info.format, info.codec) == ("webm", "vp9")
    assert job["output"]["content_type"] == "video/webm"


async def test_a_failed_parent_fails_its_chain_and_a_retry_runs_it_again(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider(errors=[ProviderPermanentError("content_policy", "refused")])
    install(state, provider)
    body = {
        "jobs": [
            {"prompt": "a parent", "model": "test/scripted", "width": 64, "height": 64},
            {"prompt": "its child", **VIDEO, "input": {"job": 0}},
            {"prompt": "a grandchild", **IMAGE, "input": {"job": 0}},
            {"prompt": "unrelated", **IMAGE},
        ]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["failed", "failed", "failed", "succeeded"]
    assert jobs[0]["error"]["code"] == "content_policy"
    for child in jobs[1:3]:
        assert child["error"]["code"] == "parent_failed"
        assert "job 0" in child["error"]["message"]
        assert "refused" in child["error"]["message"]
        assert child["attempts"] == 0  # never sent anywhere
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "partially_failed"

    retried = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert retried.status_code == 202, retried.text
    await run_until_idle(state)
    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
    assert provider.calls == 2


@pytest.mark.parametrize(
    ("jobs", "field", "words"),
    [
        ([{"prompt": "a", "input": {"job": 5}}], "jobs[0].input.job", "no job 5"),
        ([{"prompt": "a", "input": {"job": 0}}], "jobs[0].input.job", "its own output"),
        (
            [{"prompt": "a", "input": {"job": 1}}, {"prompt": "b", "input": {"job": 0}}],
            "jobs[0].input.job",
            "loops back",
        ),
        (
            [{"prompt": "a", **VIDEO}, {"prompt": "b", **VIDEO, "input": {"job": 0}}],
            "jobs[1].input.job",
            "makes a video",
        ),
        ([{"prompt": "a", **IMAGE, "duration_s": 3}], "jobs[0].duration_s", "only a video"),
        ([{"prompt": "a", **IMAGE, "format": "mp4"}], "jobs[0].format", "not a image format"),
        ([{"prompt": "a", **IMAGE, "media": "video"}], "jobs[0].media", "makes images"),
        ([{"prompt": "a", **VIDEO, "format": "png"}], "jobs[0].format", "not a video format"),
        ([{"prompt": "a", **IMAGE, "mask": "up_1"}], "jobs[0].mask", "takes no mask"),
    ],
)
async def test_what_cannot_run_is_refused_at_submit(
    client: httpx.AsyncClient,
    caller: Caller,
    jobs: list[dict],
    field: str,
    words: str,  # type: ignore[type-arg]
) -> None:
    response = await client.post("/v1/batches", json={"jobs": jobs}, headers=caller.headers)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert any(d["field"] == field and words in d["message"] for d in details), details
    listed = await client.get("/v1/batches", headers=caller.headers)
    assert listed.json()["items"] == []  # nothing half-created


async def test_a_model_without_inputs_refuses_a_chain(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    install(state, ScriptedProvider())
    body = {
        "jobs": [
            {"prompt": "a", **IMAGE},
            {"prompt": "b", "model": "test/scripted", "input": {"job": 0}},
        ]
    }
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "jobs[1].input"
    assert "takes no input image" in detail["message"]


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def test_an_uploaded_reference_image_reaches_the_provider(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    files = {"file": ("ref.png", png("crimson"), "image/png")}
    uploaded = await client.post("/v1/uploads", files=files, headers=caller.headers)
    assert uploaded.status_code == 201, uploaded.text
    upload_id = uploaded.json()["id"]
    job = {"prompt": "a harbour", **IMAGE, "seed": 9}
    body = {"jobs": [{**job, "reference_images": [upload_id]}, job]}
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    with_ref, without = await jobs_of(client, caller, batch_id)
    assert (with_ref["status"], without["status"]) == ("succeeded", "succeeded")
    assert with_ref["params"]["reference_images"] == [upload_id]
    # The local renderer paints over the reference: the crimson shows through.
    red = Image.open(io.BytesIO(await output_bytes(client, caller, with_ref))).convert("RGB")
    plain = Image.open(io.BytesIO(await output_bytes(client, caller, without))).convert("RGB")
    assert ImageStat.Stat(red).mean[0] > ImageStat.Stat(plain).mean[0] + 40


async def test_a_reference_that_is_not_an_upload_of_the_caller_is_refused(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    missing = str(uuid.uuid4())
    body = {
        "jobs": [
            {"prompt": "a", **IMAGE, "reference_images": [missing, "http://example.com/a.png"]}
        ]
    }
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422, response.text
    fields = {d["field"]: d["message"] for d in response.json()["error"]["details"]}
    assert missing in fields["jobs[0].reference_images[0]"]
    assert "https" in fields["jobs[0].reference_images[1]"]


async def test_a_model_whose_credentials_are_not_set_is_refused(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    auth = {
        "type": "oauth_client_credentials",
        "token_url": "https://aip.example/oauth/2.0/token",
        "client_id_env": "DARKROOM_TEST_UNSET_CLIENT_ID",
        "client_secret_env": "DARKROOM_TEST_UNSET_CLIENT_SECRET",
    }
    config = {
        "providers": {
            "ernie": {"kind": "openai", "base_url": "https://x.example/v2", "auth": auth}
        },
        "models": {"ernie-image": {"provider": "ernie", "ref": "irag-1.0"}},
    }
    await use_config(state, json.dumps(config), tmp_path)
    body = {"jobs": [{"prompt": "a", "model": "ernie-image"}]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "jobs[0].model"
    assert "DARKROOM_TEST_UNSET_CLIENT_ID, DARKROOM_TEST_UNSET_CLIENT_SECRET" in detail["message"]
