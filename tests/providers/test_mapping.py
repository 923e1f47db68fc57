"""What each provider receives once a job's size was mapped for its model (issue 10:
"map what can be mapped"), against the simulators over real HTTP: a model that takes
aspect ratios gets the ratio and not the size, and the output is the size the model
made; OpenAI gets one of its listed sizes (any other is refused, as OpenAI refuses it);
ComfyUI gets the latent size rounded to its multiple."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from service.db import session_scope
from service.models import Job
from service.providers.atlas import AtlasProvider
from service.providers.base import GenerationRequest, ProviderPermanentError
from service.providers.catalogue import account_config, build_provider
from service.providers.comfyui import ComfyUIProvider
from service.providers.openai import OpenAIImagesProvider
from service.providers.replicate import ReplicateProvider
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from simulators.atlas_control import AtlasHandle
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config
from tests.providers import atlas_fixtures, comfyui_helpers
from tests.providers.atlas_fixtures import finish, image_request, sent_bodies, video_request
from tests.providers.comfyui_helpers import Control, make_provider, poll_until_finished
from tests.providers.polling import until_finished

TOKEN_ENV = "DARKROOM_TEST_MAPPING_TOKEN"
FLUX = "black-forest-labs/flux-schnell"

# The module's Atlas and ComfyUI simulators (each reset before a test), by fixture name.
atlas_sim_url, atlas_sim, atlas_token = (
    atlas_fixtures.atlas_sim_url,
    atlas_fixtures.sim,
    atlas_fixtures.atlas_token,
)
server_url, comfy_sim = comfyui_helpers.server_url, comfyui_helpers.sim
config_file = comfyui_helpers.config_file


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig(latency={"kind": "fixed", "s": 0.02})) as handle:
        yield handle


@pytest.fixture
async def replicate(sim: SimulatorHandle) -> AsyncIterator[ReplicateProvider]:
    values = {"kind": "replicate", "base_url": sim.url, "token_env": TOKEN_ENV, "timeout_s": 5}
    provider = build_provider("replicate", account_config(values))
    assert isinstance(provider, ReplicateProvider)
    yield provider
    await provider.aclose()


@pytest.fixture
async def openai(sim: SimulatorHandle) -> AsyncIterator[OpenAIImagesProvider]:
    values = {"kind": "openai", "base_url": f"{sim.url}/v1", "token_env": TOKEN_ENV}
    provider = build_provider("openai", account_config(values | {"timeout_s": 5}))
    assert isinstance(provider, OpenAIImagesProvider)
    yield provider
    await provider.aclose()


@pytest.fixture
async def atlas(atlas_sim: AtlasHandle, atlas_token: None) -> AsyncIterator[AtlasProvider]:
    provider = atlas_fixtures.make_provider(atlas_sim.url, timeout_s=5)
    yield provider
    await provider.aclose()


@pytest.fixture
async def comfy(comfy_sim: Control, config_file: Path) -> AsyncIterator[ComfyUIProvider]:
    provider = make_provider(comfy_sim.url, config_file)
    yield provider
    await provider.aclose()


def request(**overrides: Any) -> GenerationRequest:
    """A 1920x1080 job, as its caller asked it (fit keeps width and height as asked)."""
    values: dict[str, Any] = {"prompt": "a harbour at dawn", "model_ref": FLUX, "seed": 3}
    values |= {"width": 1920, "height": 1080, "format": "png"}
    return GenerationRequest(**(values | overrides))


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# --- Replicate ----------------------------------------------------------------------------


async def test_replicate_gets_the_ratio_alone_and_the_output_has_flux_size(
    replicate: ReplicateProvider,
) -> None:
    job = request(aspect_ratio="16:9")
    remote = await replicate.submit(job)
    received = (await replicate.poll(remote)).data["input"]
    assert received["aspect_ratio"] == "16:9"
    assert "width" not in received
    assert "height" not in received

    output = await replicate.fetch_result(await until_finished(replicate, remote), job)

    # The size FLUX makes for 16:9, not the 1920x1080 the job asked: the output says so.
    assert (output.width, output.height) == (1344, 768)
    assert decoded_size(output.data) == (1344, 768)


async def test_replicate_options_that_change_the_size_are_honoured(
    replicate: ReplicateProvider,
) -> None:
    job = request(aspect_ratio="16:9", options={"megapixels": "0.25"})
    remote = await replicate.submit(job)
    output = await replicate.fetch_result(await until_finished(replicate, remote), job)
    assert (output.width, output.height) == (672, 384)


async def test_replicate_finds_a_lost_create_of_a_mapped_job(
    replicate: ReplicateProvider,
) -> None:
    """The lookup that keeps a retry from paying twice matches the input as sent: the
    ratio, without width and height."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    job = request(aspect_ratio="3:2")
    remote = await replicate.submit(job)
    found = await replicate.find_submitted(job, since, exclude=frozenset())
    assert found is not None
    assert found.id == remote.id
    assert await replicate.find_submitted(request(), since, exclude=frozenset()) is None


async def test_replicate_without_a_mapped_ratio_sends_the_size_as_before(
    replicate: ReplicateProvider,
) -> None:
    job = request(width=512, height=384)
    remote = await replicate.submit(job)
    received = (await replicate.poll(remote)).data["input"]
    assert (received["width"], received["height"], received["aspect_ratio"]) == (512, 384, "4:3")
    output = await replicate.fetch_result(await until_finished(replicate, remote), job)
    assert (output.width, output.height) == (512, 384)


# --- Atlas --------------------------------------------------------------------------------


async def test_atlas_gets_the_ratio_alone_and_the_output_has_the_model_size(
    atlas: AtlasProvider, atlas_sim: AtlasHandle
) -> None:
    job = image_request(width=1920, height=1080, aspect_ratio="16:9")
    handle = await finish(atlas, await atlas.submit(job))
    [body] = await sent_bodies(atlas_sim, "/generateImage")
    assert body["aspect_ratio"] == "16:9"
    assert "size" not in body

    output = await atlas.fetch_result(handle, job)

    assert (output.width, output.height) == (1344, 768)
    assert decoded_size(output.data) == (1344, 768)


async def test_atlas_without_a_mapped_ratio_sends_the_size(
    atlas: AtlasProvider, atlas_sim: AtlasHandle
) -> None:
    job = image_request(width=96, height=64)
    output = await atlas.fetch_result(await finish(atlas, await atlas.submit(job)), job)
    [body] = await sent_bodies(atlas_sim, "/generateImage")
    assert body["size"] == "96*64"
    assert "aspect_ratio" not in body
    assert (output.width, output.height) == (96, 64)


async def test_an_atlas_video_gets_the_ratio_instead_of_width_and_height(
    atlas: AtlasProvider, atlas_sim: AtlasHandle
) -> None:
    job = video_request(width=1280, height=720, aspect_ratio="16:9")
    output = await atlas.fetch_result(await finish(atlas, await atlas.submit(job)), job)
    [body] = await sent_bodies(atlas_sim, "/generateVideo")
    assert body["aspect_ratio"] == "16:9"
    assert not {"width", "height"} & set(body)
    assert (output.media, output.width, output.height) == ("video", 426, 240)


# --- OpenAI -------------------------------------------------------------------------------


async def test_openai_refuses_a_size_not_in_its_list_as_openai_does(
    openai: OpenAIImagesProvider, sim: SimulatorHandle
) -> None:
    with pytest.raises(ProviderPermanentError) as refused:
        await openai.generate(request(model_ref="gpt-image-1"))
    error = refused.value
    assert (error.code, error.http_status, error.retryable) == ("invalid_input", 400, False)
    assert "1920x1080" in error.message
    assert "1536x1024" in error.message

    async with httpx.AsyncClient(base_url=sim.url) as client:
        raw = await client.post(
            "/v1/images/generations",
            json={"model": "gpt-image-1", "prompt": "a harbour", "size": "1920x1080"},
            headers={"Authorization": "Bearer sim-token"},
        )
    assert raw.status_code == 400
    assert raw.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
    }
    assert (await sim.stats())["creations_accepted"] == 0


async def test_openai_gets_the_listed_size_fit_chose(openai: OpenAIImagesProvider) -> None:
    # 1920x1080 asked, mapped by fit to the nearest listed size.
    output = await openai.generate(request(model_ref="gpt-image-1", width=1536, height=1024))
    assert (output.width, output.height) == (1536, 1024)
    assert decoded_size(output.data) == (1536, 1024)
    assert output.usage["output_tokens"] > 0


# --- ComfyUI ------------------------------------------------------------------------------


async def test_comfyui_gets_the_size_rounded_to_its_multiple(
    comfy: ComfyUIProvider, comfy_sim: Control
) -> None:
    """1000x700 asked, 1024x704 sent (a multiple of 64): the latent is exactly that."""
    job = comfyui_helpers.request(width=1024, height=704)
    done = await poll_until_finished(comfy, await comfy.submit(job))
    output = await comfy.fetch_result(done, job)
    [posted] = await comfy_sim.requests("POST", "/prompt")
    latent = comfyui_helpers.workflow_of(posted)["5"]["inputs"]
    assert (latent["width"], latent["height"]) == (1024, 704)
    assert (output.width, output.height) == (1024, 704)


async def test_comfyui_shrinks_an_unrounded_size_to_its_latent_grid(
    comfy: ComfyUIProvider,
) -> None:
    """Why the rounding matters: ComfyUI's latent is an eighth of the image, so an
    unrounded side comes back shorter than asked (700 makes 696)."""
    job = comfyui_helpers.request(width=1000, height=700)
    output = await comfy.fetch_result(
        await poll_until_finished(comfy, await comfy.submit(job)), job
    )
    assert (output.width, output.height) == (1000, 696)


# --- the engine ---------------------------------------------------------------------------


async def test_a_mapped_job_records_the_size_its_model_made(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    sim: SimulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job keeps the size it asked for; its output has the size the model made, and
    nothing along the way takes the difference for a broken output."""
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    await use_config(state, sim_config(sim.url), tmp_path)
    asked = {"prompt": "a cover", "model": "flux-sim", "width": 1920, "height": 1080}
    body: dict[str, object] = {"jobs": [asked]}
    batch_id = await submit(client, caller, body)
    async with session_scope(state.sessionmaker) as session:
        job = (await session.execute(select(Job).where(Job.batch_id == batch_id))).scalar_one()
        # What fit records at submit for a model that takes ratios.
        job.params = {**job.params, "aspect_ratio": "16:9"}
    await run_until_idle(state, wait_for_deferred=True)

    listed = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    [shown] = listed.json()["items"]
    assert shown["status"] == "succeeded", shown["error"]
    assert (shown["params"]["width"], shown["params"]["height"]) == (1920, 1080)
    assert (shown["output"]["width"], shown["output"]["height"]) == (1344, 768)
    served = await client.get(f"/v1/jobs/{shown['id']}/output", headers=caller.headers)
    assert decoded_size(served.content) == (1344, 768)
    attempts = await client.get(f"/v1/jobs/{shown['id']}/attempts", headers=caller.headers)
    [attempt] = attempts.json()
    async with httpx.AsyncClient(base_url=sim.url) as raw:
        prediction = await raw.get(
            f"/v1/predictions/{attempt['remote_id']}", headers={"Authorization": "Token sim-token"}
        )
    received = prediction.json()["input"]
    assert received["aspect_ratio"] == "16:9"
    assert "width" not in received
