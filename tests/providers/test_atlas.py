"""The Atlas Cloud provider against its simulator, over real HTTP: its configuration,
images and videos in both documented response shapes, and reference images. Errors and
failed predictions: test_atlas_errors.py."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from service.providers.atlas import AtlasConfig, AtlasProvider
from service.providers.base import (
    InputImage,
    ProviderPermanentError,
    RemoteHandle,
)
from service.providers.config import DarkroomConfig
from simulators.atlas_control import AtlasHandle, AtlasSimConfig
from tests.providers import atlas_fixtures
from tests.providers.atlas_fixtures import (
    IMAGE_MODEL,
    SHAPES,
    VIDEO_MODEL,
    finish,
    image_request,
    make_provider,
    png,
    sent_bodies,
    video_request,
)

pytestmark = pytest.mark.usefixtures("atlas_token")
# The module's fixtures (pytest finds them by name here).
atlas_sim_url, atlas_token = atlas_fixtures.atlas_sim_url, atlas_fixtures.atlas_token
sim, provider = atlas_fixtures.sim, atlas_fixtures.provider

# --- configuration --------------------------------------------------------------------


def test_config_block_of_the_contract() -> None:
    config = DarkroomConfig.model_validate(
        {
            "providers": {
                "atlas": {
                    "kind": "atlas",
                    "base_url": "https://api.atlascloud.ai",
                    "token_env": "ATLASCLOUD_API_KEY",
                    "limits": {"rate_per_s": 5, "max_concurrent": 8},
                }
            },
            "models": {
                "seedance": {
                    "provider": "atlas",
                    "ref": VIDEO_MODEL,
                    "media": "video",
                    "price": {"per_second": 0.022},
                }
            },
        }
    )
    account = config.providers["atlas"]
    assert isinstance(account, AtlasConfig)
    assert (account.limits.rate_per_s, account.limits.max_concurrent) == (5, 8)
    assert AtlasConfig().base_url == "https://api.atlascloud.ai"
    with pytest.raises(ValidationError, match="webhook_url"):
        DarkroomConfig.model_validate(
            {"providers": {"atlas": {"kind": "atlas", "webhook_url": "https://x"}}}
        )


def test_capabilities() -> None:
    caps = AtlasProvider.capabilities
    assert caps.media == {"image", "video"}
    assert caps.inputs == {"reference"}
    assert caps.formats == {"png", "jpeg", "webp", "mp4", "webm"}
    assert not caps.callbacks
    assert not caps.cancel


# --- images and videos, in both shapes ------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_image_in_either_shape(sim: AtlasHandle, provider: AtlasProvider, shape: str) -> None:
    await sim.configure(shape=shape)
    request = image_request(negative_prompt="fog")
    handle = await provider.submit(request)
    assert handle.status == "pending"
    assert handle.id
    done = await finish(provider, handle)
    assert done.status == "succeeded"
    assert done.id == handle.id
    output = await provider.fetch_result(RemoteHandle.from_json(done.to_json()), request)
    assert (output.media, output.format, output.width, output.height) == ("image", "png", 96, 64)
    assert Image.open(io.BytesIO(output.data)).format == "PNG"
    [body] = await sent_bodies(sim, "/generateImage")
    assert body == {
        "model": IMAGE_MODEL,
        "prompt": "a lighthouse at dusk",
        "size": "96*64",
        "output_format": "png",
        "seed": 7,
        "negative_prompt": "fog",
    }
    [first, *_] = await sim.requests()
    assert first["headers"]["authorization"] == f"Bearer {AtlasSimConfig().token}"


async def test_image_usage_is_kept(sim: AtlasHandle, provider: AtlasProvider) -> None:
    request = image_request(format="webp")
    done = await finish(provider, await provider.submit(request))
    output = await provider.fetch_result(done, request)
    assert output.format == "webp"
    assert output.usage == {"predict_time": 1.5}


@pytest.mark.parametrize("shape", SHAPES)
async def test_video_in_either_shape(sim: AtlasHandle, provider: AtlasProvider, shape: str) -> None:
    await sim.configure(shape=shape)
    request = video_request()
    done = await finish(provider, await provider.submit(request))
    output = await provider.fetch_result(RemoteHandle.from_json(done.to_json()), request)
    assert (output.media, output.format, output.width, output.height) == ("video", "mp4", 128, 96)
    assert output.duration_s == pytest.approx(2.0, abs=0.2)
    assert output.frames == 16
    [body] = await sent_bodies(sim, "/generateVideo")
    assert body == {
        "model": VIDEO_MODEL,
        "prompt": "a lighthouse at dusk",
        "width": 128,
        "height": 96,
        "duration": 2,
        "fps": 8,
        "seed": 7,
    }


async def test_a_webm_job_gets_the_mp4_transcoded(
    sim: AtlasHandle, provider: AtlasProvider
) -> None:
    request = video_request(format="webm")
    done = await finish(provider, await provider.submit(request))
    output = await provider.fetch_result(done, request)
    assert (output.format, output.content_type) == ("webm", "video/webm")
    assert output.data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: Matroska/WebM
    assert output.duration_s == pytest.approx(2.0, abs=0.2)


async def test_reference_image_goes_as_a_data_uri_or_its_url(
    sim: AtlasHandle, provider: AtlasProvider
) -> None:
    inline = InputImage("reference", png(), "image/png")
    public = InputImage("reference", png(), "image/png", url="https://cdn.example/parent.png")
    for reference in (inline, public):
        request = video_request(inputs=(reference,))
        done = await finish(provider, await provider.submit(request))
        assert (await provider.fetch_result(done, request)).media == "video"
    first, second = await sent_bodies(sim, "/generateVideo")
    assert first["image_url"] == inline.data_uri()
    assert second["image_url"] == "https://cdn.example/parent.png"


async def test_options_are_sent_but_cannot_change_the_model(
    sim: AtlasHandle, provider: AtlasProvider
) -> None:
    request = video_request(options={"resolution": "480p", "model": "other/model"})
    await provider.submit(request)
    [body] = await sent_bodies(sim, "/generateVideo")
    assert body["resolution"] == "480p"
    assert body["model"] == VIDEO_MODEL


@pytest.mark.parametrize(
    "inputs",
    [
        (InputImage("reference", b"a", "image/png"), InputImage("reference", b"b", "image/png")),
        (InputImage("mask", b"m", "image/png"),),
    ],
    ids=["two references", "a mask"],
)
async def test_inputs_atlas_cannot_take_fail_before_sending(
    sim: AtlasHandle, provider: AtlasProvider, inputs: tuple[InputImage, ...]
) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.submit(video_request(inputs=inputs))
    assert caught.value.code == "invalid_input"
    assert await sim.requests() == []


async def test_base_url_with_the_api_prefix(sim: AtlasHandle) -> None:
    provider = make_provider(sim.url + "/api/v1/")
    try:
        done = await finish(provider, await provider.submit(image_request()))
    finally:
        await provider.aclose()
    assert done.status == "succeeded"
    paths = [entry["path"] for entry in await sim.requests()]
    assert paths[0] == "/api/v1/model/generateImage"
