"""The Atlas simulator, a provider pointed at it, and requests, for the Atlas tests
(test_atlas.py, test_atlas_errors.py). The fixtures are imported by name there."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from PIL import Image

from service.providers.atlas import AtlasConfig, AtlasProvider
from service.providers.base import GenerationRequest, RemoteHandle
from service.providers.catalogue import build_provider
from simulators.atlas import create_app
from simulators.atlas_control import AtlasHandle, AtlasSimConfig
from simulators.runner import serving_in_thread

TOKEN_ENV = "DARKROOM_TEST_ATLAS_KEY"
IMAGE_MODEL = "bytedance/seedream-v4"
VIDEO_MODEL = "bytedance/seedance-v1.5-pro/text-to-video"
SHAPES = ["data", "flat"]


# Videos are checked by service.providers.video, which another branch brings.
@pytest.fixture(scope="module")
def atlas_sim_url() -> Iterator[str]:
    """One simulator for the module (reset before each test): starting one per test
    would cost more than the tests."""
    with serving_in_thread(create_app()) as url:
        yield url


@pytest.fixture
async def sim(atlas_sim_url: str) -> AtlasHandle:
    handle = AtlasHandle(atlas_sim_url)
    await handle.reset()
    await handle.configure(**AtlasSimConfig().model_dump())
    return handle


@pytest.fixture
def atlas_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, AtlasSimConfig().token)


def make_provider(url: str, **overrides: Any) -> AtlasProvider:
    values: dict[str, Any] = {"kind": "atlas", "base_url": url, "token_env": TOKEN_ENV}
    provider = build_provider("atlas", AtlasConfig.model_validate(values | overrides))
    assert isinstance(provider, AtlasProvider)
    return provider


@pytest.fixture
async def provider(sim: AtlasHandle, atlas_token: None) -> AsyncIterator[AtlasProvider]:
    provider = make_provider(sim.url, timeout_s=5)
    yield provider
    await provider.aclose()


def image_request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model_ref": IMAGE_MODEL,
        "width": 96,
        "height": 64,
        "format": "png",
        "seed": 7,
    }
    return GenerationRequest(**(values | overrides))


def video_request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {"model_ref": VIDEO_MODEL, "media": "video", "format": "mp4"}
    values |= {"width": 128, "height": 96, "duration_s": 2.0, "fps": 8}
    return image_request(**(values | overrides))


def png(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


async def finish(provider: AtlasProvider, handle: RemoteHandle) -> RemoteHandle:
    for _ in range(5):
        if handle.finished:
            return handle
        # What the engine does between polls: the handle is stored as JSON.
        handle = await provider.poll(RemoteHandle.from_json(handle.to_json()))
    raise AssertionError(f"prediction {handle.id} did not finish")


async def sent_bodies(sim: AtlasHandle, suffix: str) -> list[dict[str, Any]]:
    return [entry["json"] for entry in await sim.requests() if entry["path"].endswith(suffix)]
