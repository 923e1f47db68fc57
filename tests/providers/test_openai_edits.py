"""OpenAI image edits: the multipart request a job's reference images and mask become
(service.providers.openai_edits), and the simulator's /v1/images/edits taking it."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from service.providers.base import GenerationRequest, InputImage, ProviderPermanentError
from service.providers.openai import OpenAIConfig, OpenAIImagesProvider
from service.providers.openai_edits import edit_form, openai_mask, wants_edit
from simulators import SimulatorHandle, running_simulator

RED = (200, 30, 30)


def png(size: tuple[int, int], mode: str = "RGB", color: Any = RED) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, RED).save(buffer, "JPEG")
    return buffer.getvalue()


def half_mask(size: tuple[int, int]) -> bytes:
    """Black and white, as inpainting tools draw it: the left half white (edit)."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def alpha(image: Image.Image, where: tuple[int, int]) -> int:
    value = image.getchannel("A").getpixel(where)
    assert isinstance(value, int)
    return value


def reference(data: bytes, content_type: str = "image/png") -> InputImage:
    return InputImage("reference", data, content_type)


def request(*inputs: InputImage, **overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "paint the left half blue",
        "model_ref": "gpt-image-1",
        "width": 1024,
        "height": 1024,
        "format": "png",
        "seed": 1,
        "inputs": inputs,
    }
    return GenerationRequest(**(values | overrides))


def test_only_a_request_with_inputs_is_an_edit() -> None:
    assert not wants_edit(request())
    assert wants_edit(request(reference(png((8, 8)))))


def test_gpt_image_models_get_every_reference_as_image_array() -> None:
    first, second = png((64, 64)), jpeg((32, 32))
    fields, files = edit_form(
        "oa", request(reference(first), reference(second, "image/jpeg"), format="webp")
    )

    assert fields == {
        "model": "gpt-image-1",
        "prompt": "paint the left half blue",
        "n": "1",
        "size": "1024x1024",
        "output_format": "webp",
    }
    assert files == [
        ("image[]", ("image-1.png", first, "image/png")),
        ("image[]", ("image-2.jpg", second, "image/jpeg")),
    ]


def test_dall_e_2_gets_one_image_and_asks_for_base64() -> None:
    data = png((64, 64))
    fields, files = edit_form("oa", request(reference(data), model_ref="dall-e-2"))

    assert fields["response_format"] == "b64_json"
    assert "output_format" not in fields
    assert files == [("image", ("image-1.png", data, "image/png"))]
    with pytest.raises(ProviderPermanentError, match="at most 1 reference"):
        edit_form("oa", request(reference(data), reference(data), model_ref="dall-e-2"))


def test_a_black_and_white_mask_becomes_transparent_where_it_is_white() -> None:
    _, files = edit_form(
        "oa",
        request(reference(png((64, 32))), InputImage("mask", half_mask((64, 32)), "image/png")),
    )

    name, (filename, data, content_type) = files[-1]
    assert (name, filename, content_type) == ("mask", "mask.png", "image/png")
    mask = Image.open(io.BytesIO(data))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "RGBA", (64, 32))
    assert alpha(mask, (5, 5)) == 0  # white: edit
    assert alpha(mask, (60, 5)) == 255  # black: keep


def test_a_mask_with_alpha_keeps_its_alpha() -> None:
    source = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    source.putpixel((3, 3), (0, 0, 0, 0))
    buffer = io.BytesIO()
    source.save(buffer, "PNG")

    mask = Image.open(
        io.BytesIO(openai_mask("oa", InputImage("mask", buffer.getvalue(), "image/png"), (16, 16)))
    )

    assert alpha(mask, (3, 3)) == 0
    assert alpha(mask, (4, 4)) == 255


def test_a_mask_of_another_size_is_refused_before_any_request() -> None:
    with pytest.raises(
        ProviderPermanentError, match="mask is 32x32 but the image it masks is 64x64"
    ):
        edit_form(
            "oa",
            request(reference(png((64, 64))), InputImage("mask", half_mask((32, 32)), "image/png")),
        )


def test_a_mask_without_an_image_is_refused() -> None:
    with pytest.raises(ProviderPermanentError, match="needs a reference image"):
        edit_form("oa", request(InputImage("mask", half_mask((32, 32)), "image/png")))


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator() as sim:
        yield sim.url


async def post_edit(url: str, fields: dict[str, str], files: Any) -> httpx.Response:
    async with httpx.AsyncClient(verify=False) as client:
        return await client.post(
            url + "/v1/images/edits",
            headers={"authorization": "Bearer sim-token"},
            data=fields,
            files=files,
        )


async def test_the_simulator_edits_where_the_mask_says(sim_url: str) -> None:
    await SimulatorHandle(sim_url).reset()
    fields, files = edit_form(
        "oa",
        request(
            reference(png((64, 64))),
            InputImage("mask", half_mask((64, 64)), "image/png"),
            model_ref="ernie-image",
            width=64,
            height=64,
        ),
    )

    response = await post_edit(sim_url, fields, files)

    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.size == (64, 64)
    assert image.convert("RGB").getpixel((60, 30)) == RED  # kept
    assert image.convert("RGB").getpixel((5, 30)) != RED  # edited
    stats = await SimulatorHandle(sim_url).stats()
    assert stats["requests_by_route"] == {"POST /v1/images/edits": 1}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "Missing required parameter: 'image'."),
        ([("image[]", ("a.png", b"<html>not an image</html>", "image/png"))], "image 1"),
        (
            [
                ("image[]", ("a.png", png((64, 64)), "image/png")),
                ("mask", ("m.png", png((32, 32), "RGBA", (0, 0, 0, 0)), "image/png")),
            ],
            "mask size does not match image size",
        ),
        (
            [
                ("image[]", ("a.png", png((64, 64)), "image/png")),
                ("mask", ("m.png", png((64, 64)), "image/png")),
            ],
            "alpha channel",
        ),
    ],
)
async def test_the_simulator_refuses_bad_edits_as_openai_does(
    sim_url: str, files: Any, message: str
) -> None:
    fields = {"model": "gpt-image-1", "prompt": "x", "size": "1024x1024"}
    if not files:  # httpx sends a form without files as urlencoded; keep it multipart
        files = [("unused", ("u.txt", b"", "text/plain"))]

    response = await post_edit(sim_url, fields, files)

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


@pytest.fixture
async def provider(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OpenAIImagesProvider]:
    await SimulatorHandle(sim_url).reset()
    monkeypatch.setenv("DARKROOM_TEST_EDITS_TOKEN", "sim-token")
    config = OpenAIConfig(
        kind="openai", base_url=sim_url + "/v1", token_env="DARKROOM_TEST_EDITS_TOKEN"
    )
    provider = OpenAIImagesProvider("oa", config)
    yield provider
    await provider.aclose()


async def test_a_job_with_a_reference_and_a_mask_is_an_edit(
    sim_url: str, provider: OpenAIImagesProvider
) -> None:
    job = request(
        reference(png((64, 64))),
        InputImage("mask", half_mask((64, 64)), "image/png"),
        model_ref="ernie-image",
        width=64,
        height=64,
        format="webp",
    )

    output = await provider.generate(job)

    image = Image.open(io.BytesIO(output.data)).convert("RGB")
    assert (output.format, output.width, output.height) == ("webp", 64, 64)
    red, _, _ = image.getpixel((60, 30))  # type: ignore[misc]
    blue_left = image.getpixel((5, 30))
    assert red > 150  # kept (lossy webp: near the reference's red)
    assert blue_left != image.getpixel((60, 30))  # edited
    stats = await SimulatorHandle(sim_url).stats()
    assert stats["requests_by_route"] == {"POST /v1/images/edits": 1}


async def test_the_apis_refusal_of_an_edit_is_permanent_with_its_message(
    provider: OpenAIImagesProvider,
) -> None:
    job = request(reference(png((64, 32))), model_ref="dall-e-2")  # dall-e-2: square only

    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(job)

    assert caught.value.http_status == 400
    assert "Invalid image file or mode for image 1" in caught.value.message
