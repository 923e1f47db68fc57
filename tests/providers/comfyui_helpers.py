"""The ComfyUI simulator on a real port for a test module, and helpers to drive the
provider against it."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from service.config import Settings
from service.providers.base import GenerationRequest, InputImage, RemoteHandle
from service.providers.comfyui import ComfyUIConfig, ComfyUIProvider
from service.providers.kinds import ProviderDeps
from simulators.comfyui import comfyui_app
from simulators.control import ControlClient
from simulators.runner import serving_in_thread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "comfyui"
TXT2IMG_INJECT = {
    "prompt": "6.text",
    "negative_prompt": "7.text",
    "seed": "3.seed",
    "width": "5.width",
    "height": "5.height",
}
IMG2IMG_INJECT = {
    "prompt": "6.text",
    "negative_prompt": "7.text",
    "seed": "3.seed",
    "width": "11.width",
    "height": "11.height",
    "reference_image": "10.image",
}


def start_simulator() -> Iterator[str]:
    with serving_in_thread(comfyui_app()) as url:
        yield url


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """One simulator for a test module (reset before each test)."""
    yield from start_simulator()


@pytest.fixture
async def sim(server_url: str) -> Control:
    control = Control(server_url)
    await control.reset()
    return control


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return workflows_dir(tmp_path)


class Control(ControlClient):
    """The simulator's /_sim routes."""

    async def reset(self) -> None:
        await self.call("POST", "/_sim/reset")

    async def configure(self, **settings: Any) -> None:
        await self.call("PATCH", "/_sim/config", settings)

    async def fault(self, **spec: Any) -> None:
        await self.call("POST", "/_sim/faults", spec)

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/_sim/state")
        return result

    async def requests(self, method: str, path: str) -> list[dict[str, Any]]:
        logged = await self.call("GET", "/_sim/requests")
        return [item for item in logged if item["method"] == method and item["path"] == path]


def workflows_dir(tmp_path: Path) -> Path:
    """A DARKROOM_CONFIG folder with the shipped example workflows under workflows/."""
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for name in ("sdxl.json", "sdxl-img2img.json"):
        shutil.copy(EXAMPLES / name, folder / name)
    config = tmp_path / "darkroom.yaml"
    config.write_text("providers: {}\n")
    return config


def make_provider(url: str, config_file: Path, **overrides: Any) -> ComfyUIProvider:
    config = ComfyUIConfig(base_url=url, timeout_s=overrides.pop("timeout_s", 5.0), **overrides)
    deps = ProviderDeps(settings=Settings(config=config_file))
    return ComfyUIProvider("comfy", config, deps)


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def request(
    *,
    ref: str = "workflows/sdxl.json",
    inject: dict[str, str] | None = None,
    inputs: tuple[InputImage, ...] = (),
    **fields: Any,
) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "fog",
        "width": 320,
        "height": 192,
        "seed": 42,
        "format": "png",
        "job_id": "job-1",
    }
    return GenerationRequest(
        model_ref=ref,
        inject=TXT2IMG_INJECT if inject is None else inject,
        inputs=inputs,
        **(values | fields),
    )


def reference(data: bytes | None = None) -> InputImage:
    return InputImage("reference", data or png(), "image/png")


async def poll_until_finished(
    provider: ComfyUIProvider, handle: RemoteHandle, polls: int = 400
) -> RemoteHandle:
    import asyncio

    for _ in range(polls):
        current = await provider.poll(handle)
        if current.finished:
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {handle.id} did not finish")


def workflow_of(logged: dict[str, Any]) -> dict[str, Any]:
    body = logged["json"]
    assert isinstance(body, dict)
    prompt: dict[str, Any] = json.loads(json.dumps(body["prompt"]))
    return prompt
