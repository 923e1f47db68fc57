"""The ComfyUI provider against the ComfyUI simulator, over real HTTP and websockets."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from service.providers.base import (
    CompletionWatch,
    ProviderPermanentError,
    RemoteHandle,
)
from service.providers.comfyui import ComfyUIConfig, ComfyUIProvider
from service.providers.comfyui_ws import websocket_url
from service.providers.http import may_have_reached_provider
from tests.providers import comfyui_helpers
from tests.providers.comfyui_helpers import (
    IMG2IMG_INJECT,
    TXT2IMG_INJECT,
    Control,
    make_provider,
    poll_until_finished,
    reference,
    request,
    workflow_of,
)

# The module's simulator (reset before each test) and workflows folder.
server_url, sim = comfyui_helpers.server_url, comfyui_helpers.sim
config_file = comfyui_helpers.config_file


@pytest.fixture
async def provider(sim: Control, config_file: Path) -> AsyncIterator[ComfyUIProvider]:
    provider = make_provider(sim.url, config_file)
    yield provider
    await provider.aclose()


async def test_text_to_image_fills_the_workflow_and_returns_the_png(
    provider: ComfyUIProvider, sim: Control
) -> None:
    handle = await provider.submit(request(prompt="a red fox", seed=7, width=320, height=192))
    done = await poll_until_finished(provider, handle)
    assert done.status == "succeeded", done.error

    output = await provider.fetch_result(done, request())

    assert (output.width, output.height, output.format) == (320, 192, "png")
    with Image.open(io.BytesIO(output.data)) as image:
        assert image.size == (320, 192)
    [posted] = await sim.requests("POST", "/prompt")
    workflow = workflow_of(posted)
    assert workflow["6"]["inputs"]["text"] == "a red fox"
    assert workflow["7"]["inputs"]["text"] == "fog"
    assert workflow["3"]["inputs"]["seed"] == 7
    assert (workflow["5"]["inputs"]["width"], workflow["5"]["inputs"]["height"]) == (320, 192)
    assert posted["json"]["client_id"] == provider.client_id
    assert posted["json"]["extra_data"] == {"darkroom_job": "job-1"}
    assert done.data["created_at"] <= done.data["completed_at"]


async def test_a_field_the_inject_map_does_not_name_keeps_the_workflow_value(
    provider: ComfyUIProvider, sim: Control
) -> None:
    inject = {key: value for key, value in TXT2IMG_INJECT.items() if key != "negative_prompt"}
    await provider.submit(request(inject=inject))

    [posted] = await sim.requests("POST", "/prompt")
    assert workflow_of(posted)["7"]["inputs"]["text"] == "blurry, low quality, watermark, text"


async def test_the_reference_image_is_uploaded_then_injected(
    provider: ComfyUIProvider, sim: Control
) -> None:
    job = request(ref="workflows/sdxl-img2img.json", inject=IMG2IMG_INJECT, inputs=(reference(),))
    handle = await provider.submit(job)
    done = await poll_until_finished(provider, handle)
    output = await provider.fetch_result(done, job)

    state = await sim.state()
    [[kind, subfolder, name]] = state["uploads"]
    assert (kind, subfolder) == ("input", "darkroom")
    [posted] = await sim.requests("POST", "/prompt")
    assert workflow_of(posted)["10"]["inputs"]["image"] == f"darkroom/{name}"
    assert (output.width, output.height) == (320, 192)
    # A retry uploads the same file under the same name.
    await provider.submit(job)
    assert len((await sim.state())["uploads"]) == 1


async def test_a_workflow_that_takes_a_reference_refuses_a_job_without_one(
    provider: ComfyUIProvider, sim: Control
) -> None:
    job = request(ref="workflows/sdxl-img2img.json", inject=IMG2IMG_INJECT)
    with pytest.raises(ProviderPermanentError, match=r"reference image \(inject.reference_image\)"):
        await provider.submit(job)
    assert await sim.requests("POST", "/prompt") == []


def test_a_model_takes_only_the_inputs_its_inject_map_names(provider: ComfyUIProvider) -> None:
    assert provider.model_inputs(TXT2IMG_INJECT) == frozenset()
    assert provider.model_inputs(IMG2IMG_INJECT) == {"reference"}
    assert provider.model_inputs({"mask": "20.image", "reference_image": "10.image"}) == {
        "reference",
        "mask",
    }


@pytest.mark.parametrize(
    ("field", "target", "message"),
    [
        ("prompt", "99.text", "workflow sdxl.json has no node '99'"),
        ("prompt", "6.txt", "node 6 (CLIPTextEncode) of workflow sdxl.json has no input 'txt'"),
        ("prompt", "6", "expected 'node id.input name'"),
        ("steps", "3.steps", "inject.steps: unknown field"),
    ],
)
async def test_an_inject_target_missing_from_the_workflow_is_permanent_and_named(
    provider: ComfyUIProvider, sim: Control, field: str, target: str, message: str
) -> None:
    with pytest.raises(ProviderPermanentError, match=re.escape(message)) as raised:
        await provider.submit(request(inject={**TXT2IMG_INJECT, field: target}))
    assert raised.value.code == "workflow_invalid"
    assert await sim.requests("POST", "/prompt") == []


async def test_workflow_files_are_found_next_to_the_config_then_in_the_current_folder(
    sim: Control, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    (elsewhere / "flows").mkdir(parents=True)
    (elsewhere / "flows" / "mine.json").write_text(
        (config_file.parent / "workflows" / "sdxl.json").read_text()
    )
    monkeypatch.chdir(elsewhere)
    provider = make_provider(sim.url, config_file)
    try:
        handle = await provider.submit(request(ref="flows/mine.json"))
        assert handle.id
        with pytest.raises(
            ProviderPermanentError, match=r"workflow file 'flows/gone.json' not found"
        ):
            await provider.submit(request(ref="flows/gone.json"))
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"nodes": [], "links": [], "version": 0.4}',
            "UI format; export it with 'Export \\(API\\)'",
        ),
        ("{not json", "is not JSON"),
        ('{"3": {"inputs": {}}}', "node '3' is not an API-format node"),
    ],
)
async def test_a_broken_workflow_file_is_a_permanent_error_naming_it(
    provider: ComfyUIProvider, config_file: Path, content: str, message: str
) -> None:
    (config_file.parent / "workflows" / "broken.json").write_text(content)
    with pytest.raises(ProviderPermanentError, match=message) as raised:
        await provider.submit(request(ref="workflows/broken.json"))
    assert "broken.json" in raised.value.message


async def test_node_errors_are_permanent_with_the_node_and_its_message(
    provider: ComfyUIProvider, config_file: Path
) -> None:
    path = config_file.parent / "workflows" / "sdxl.json"
    workflow = json.loads(path.read_text())
    workflow["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    path.write_text(json.dumps(workflow))

    with pytest.raises(ProviderPermanentError) as raised:
        await provider.submit(request())

    error = raised.value
    assert error.http_status == 400
    assert not may_have_reached_provider(error)
    assert "Prompt outputs failed validation" in error.message
    assert (
        "node 4 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'missing.safetensors'"
        in error.message
    )


async def test_an_unknown_node_class_is_permanent_with_the_server_message(
    provider: ComfyUIProvider, config_file: Path
) -> None:
    path = config_file.parent / "workflows" / "sdxl.json"
    workflow = json.loads(path.read_text())
    workflow["12"] = {"class_type": "IPAdapterFaceID", "inputs": {}}
    path.write_text(json.dumps(workflow))

    with pytest.raises(ProviderPermanentError, match="Node 'IPAdapterFaceID' not found"):
        await provider.submit(request())


async def test_completion_is_read_from_the_history(provider: ComfyUIProvider, sim: Control) -> None:
    await sim.configure(run_s=0.4)
    handle = await provider.submit(request())
    first = await provider.poll(handle)
    assert first.status == "pending"
    assert first.queue_position in (0, 1)

    done = await poll_until_finished(provider, first)

    assert done.status == "succeeded"
    assert done.data["images"][0]["type"] == "output"


async def test_the_websocket_wakes_a_watcher_when_the_prompt_ends(
    provider: ComfyUIProvider, sim: Control
) -> None:
    await sim.configure(run_s=0.3)
    provider.listener.ensure_running()
    await asyncio.wait_for(provider.listener.connected.wait(), 5)
    handle = await provider.submit(request())
    woken = asyncio.Event()

    assert isinstance(provider, CompletionWatch)
    assert provider.watch(handle, woken.set)
    await asyncio.wait_for(woken.wait(), 10)

    # `executing` {node: null} comes after the history entry: one poll finds it done.
    assert (await provider.poll(handle)).status == "succeeded"


async def test_a_prompt_of_another_process_or_with_the_socket_off_is_not_watched(
    sim: Control, config_file: Path
) -> None:
    provider = make_provider(sim.url, config_file, websocket=False)
    try:
        handle = await provider.submit(request())
        assert not provider.watch(handle, lambda: None)
        other = RemoteHandle(handle.id, data={"client_id": "darkroom-elsewhere"})
        assert not provider.watch(other, lambda: None)
        assert (await poll_until_finished(provider, handle)).status == "succeeded"
    finally:
        await provider.aclose()


async def test_a_server_that_refuses_the_websocket_still_completes_by_polling(
    provider: ComfyUIProvider, sim: Control
) -> None:
    await sim.configure(websocket="off")
    handle = await provider.submit(request())
    assert not await provider.listener.wait(handle.id, 0.5)
    assert (await poll_until_finished(provider, handle)).status == "succeeded"


def test_an_account_without_limits_runs_one_prompt_at_a_time() -> None:
    assert ComfyUIConfig().limits.max_concurrent == 1
    assert ComfyUIConfig(limits={"max_concurrent": 2}).limits.max_concurrent == 2
    assert websocket_url("https://gpu.example:8443/comfy/", "c1") == (
        "wss://gpu.example:8443/comfy/ws?clientId=c1"
    )


def test_a_model_can_be_checked_before_any_job(provider: ComfyUIProvider) -> None:
    provider.check_model("workflows/sdxl-img2img.json", IMG2IMG_INJECT)
    with pytest.raises(ProviderPermanentError, match=re.escape("has no node '5'")):
        provider.check_model("workflows/sdxl-img2img.json", TXT2IMG_INJECT)
