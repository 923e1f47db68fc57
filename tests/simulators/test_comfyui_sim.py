"""The ComfyUI simulator speaks ComfyUI's API: its answers, its refusals and its websocket
messages, as a plain client sees them (websockets_api_example.py's way)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from tests.providers.comfyui_helpers import EXAMPLES, Control, png, start_simulator


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    yield from start_simulator()


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await Control(server_url).reset()
    async with httpx.AsyncClient(base_url=server_url, timeout=10, verify=False) as client:
        yield client


def sdxl(**latent: int) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((EXAMPLES / "sdxl.json").read_text())
    workflow["5"]["inputs"].update(latent)
    return workflow


async def test_a_run_sends_its_progress_to_its_client_and_ends_with_executing_null(
    client: httpx.AsyncClient, server_url: str
) -> None:
    url = server_url.replace("http://", "ws://") + "/ws?clientId=me"
    async with connect(url, proxy=None) as socket:
        hello = json.loads(await socket.recv())
        assert hello == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "me"},
        }
        queued = await client.post("/prompt", json={"prompt": sdxl(), "client_id": "me"})
        prompt_id = queued.json()["prompt_id"]
        assert queued.json()["node_errors"] == {}
        seen: list[tuple[str, Any]] = []
        while not seen or seen[-1] != ("executing", None):
            message = json.loads(await socket.recv())
            seen.append((message["type"], message["data"].get("node")))
            assert message["data"].get("prompt_id", prompt_id) == prompt_id

    kinds = [kind for kind, _ in seen if kind != "status"]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    assert [node for kind, node in seen if kind == "executing"][-2:] == ["9", None]


async def test_history_then_view_give_the_png_of_the_latent_size(
    client: httpx.AsyncClient,
) -> None:
    queued = await client.post("/prompt", json={"prompt": sdxl(width=256, height=384)})
    prompt_id = queued.json()["prompt_id"]
    entry: dict[str, Any] = {}
    for _ in range(500):
        entry = (await client.get(f"/history/{prompt_id}")).json()
        if entry:
            break
        await asyncio.sleep(0.01)
    history = entry[prompt_id]
    assert history["status"]["status_str"] == "success"
    assert history["status"]["completed"] is True
    [image] = history["outputs"]["9"]["images"]
    assert (image["subfolder"], image["type"]) == ("darkroom", "output")

    served = await client.get("/view", params=image)
    assert served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).size == (256, 384)
    assert (await client.get("/view", params={"filename": "../secrets.png"})).status_code == 400
    assert (await client.get("/view", params={"filename": "none.png"})).status_code == 404


async def test_refusals_have_the_servers_shapes(client: httpx.AsyncClient) -> None:
    unknown = sdxl()
    unknown["4"]["class_type"] = "CheckpointLoaderGGUF"
    refused = await client.post("/prompt", json={"prompt": unknown})
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "missing_node_type"
    assert refused.json()["node_errors"] == {}

    missing = sdxl()
    del missing["3"]["inputs"]["seed"]
    refused = await client.post("/prompt", json={"prompt": missing})
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["3"]["class_type"] == "KSampler"
    [error] = body["node_errors"]["3"]["errors"]
    assert (error["message"], error["details"]) == ("Required input is missing", "seed")
    assert body["node_errors"]["3"]["dependent_outputs"] == ["9"]

    assert (await client.post("/prompt", json={})).status_code == 400


async def test_uploads_keep_a_name_per_content(client: httpx.AsyncClient) -> None:
    first = await client.post("/upload/image", files={"image": ("ref.png", png(), "image/png")})
    again = await client.post("/upload/image", files={"image": ("ref.png", png(), "image/png")})
    other = png(colour=(0, 0, 255))
    renamed = await client.post("/upload/image", files={"image": ("ref.png", other, "image/png")})
    replaced = await client.post(
        "/upload/image",
        files={"image": ("ref.png", other, "image/png")},
        data={"overwrite": "true", "subfolder": "darkroom"},
    )

    assert first.json() == {"name": "ref.png", "subfolder": "", "type": "input"}
    assert again.json()["name"] == "ref.png"
    assert renamed.json()["name"] == "ref (1).png"
    assert replaced.json() == {"name": "ref.png", "subfolder": "darkroom", "type": "input"}
    view = {"filename": "ref (1).png", "type": "input"}
    assert (await client.get("/view", params=view)).content == other
