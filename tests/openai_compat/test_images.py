"""images.generate and images.edit through the official `openai` client, on the built-in
renderer, and the errors it raises for what Darkroom refuses."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.openai_compat.conftest import Door


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_generate_answers_b64_json_or_a_url(door: Door) -> None:
    result = await door.client.images.generate(
        model="local/procedural", prompt="a red fox", size="256x128", n=2
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        assert item.url is None
        image = picture(base64.b64decode(item.b64_json))
        assert image.size == (256, 128)
        assert image.format == "PNG"
    assert result.created > 0
    assert result.size == "256x128"

    # A URL instead: fetched with no key, as OpenAI's are.
    result = await door.client.images.generate(
        model="local/procedural",
        prompt="a lighthouse",
        size="128x128",
        output_format="webp",
        response_format="url",
    )
    [item] = result.data
    assert item.url is not None
    assert item.b64_json is None
    assert item.url.startswith(f"{door.url}/openai/v1/outputs/")
    async with httpx.AsyncClient() as http:
        fetched = await http.get(item.url)
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/webp"
        assert picture(fetched.content).size == (128, 128)
        # A signature is for that URL only.
        forged = await http.get(item.url[:-4] + "0000")
        assert forged.status_code == 404
        assert forged.json()["error"]["code"] == "not_found"


async def test_edit_sends_the_image_as_a_reference(door: Door) -> None:
    result = await door.client.images.edit(
        model="local/procedural",
        image=("input.png", png_bytes(), "image/png"),
        prompt="the same, in blue",
        size="128x128",
    )
    [item] = result.data
    assert item.b64_json is not None
    assert picture(base64.b64decode(item.b64_json)).size == (128, 128)
    # The job ran with the upload as its reference image.
    async with httpx.AsyncClient(base_url=door.url, headers=door.caller.headers) as http:
        batches = (await http.get("/v1/batches")).json()["items"]
        [job] = (await http.get(f"/v1/batches/{batches[0]['id']}/jobs")).json()["items"]
        assert job["status"] == "succeeded"
        [upload_id] = job["params"]["reference_images"]
        assert (await http.get(f"/v1/uploads/{upload_id}")).status_code == 200

    # Several images: each a reference.
    result = await door.client.images.edit(
        model="local/procedural",
        image=[("a.png", png_bytes(), "image/png"), ("b.png", png_bytes((32, 32)), "image/png")],
        prompt="both together",
        size="64x64",
        response_format="url",
    )
    assert [item.url is not None for item in result.data] == [True]


async def test_errors_come_as_the_clients_exceptions(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as bad_size:
        await door.client.images.generate(model="local/procedural", prompt="x", size="huge")
    assert bad_size.value.status_code == 400
    assert isinstance(bad_size.value.body, dict)
    assert bad_size.value.body["param"] == "size"
    assert bad_size.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.NotFoundError) as unknown:
        await door.client.images.generate(model="dall-e-9", prompt="x")
    assert unknown.value.code == "model_not_found"
    assert isinstance(unknown.value.body, dict)
    assert unknown.value.body["param"] == "model"

    with pytest.raises(openai.BadRequestError) as no_references:
        await door.client.images.edit(
            model="flux-schnell", image=("a.png", png_bytes(), "image/png"), prompt="x"
        )
    assert isinstance(no_references.value.body, dict)
    assert no_references.value.body["param"] == "model"

    client = door.other_client("dk_not_a_key")
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await client.images.generate(model="local/procedural", prompt="x")
    assert bad_key.value.code == "invalid_api_key"
    await client.close()
