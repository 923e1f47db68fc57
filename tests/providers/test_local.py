from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from decimal import Decimal

import pytest
from PIL import Image, ImageChops, ImageStat

from service.providers.base import (
    CONTENT_TYPES,
    GenerationRequest,
    ProviderPermanentError,
    SyncProvider,
)
from service.providers.images import ImageFormat
from service.providers.local import LocalRenderer, render_image

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
FORMATS: list[ImageFormat] = ["png", "jpeg", "webp"]


def make_request(**overrides: object) -> GenerationRequest:
    request = GenerationRequest(
        prompt="a lighthouse at dusk, oil painting",
        model_ref="procedural",
        width=256,
        height=192,
        format="png",
        seed=42,
    )
    return replace(request, **overrides)  # type: ignore[arg-type]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mean_difference(a: bytes, b: bytes) -> float:
    diff = ImageChops.difference(decode(a).convert("RGB"), decode(b).convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_is_a_synchronous_provider() -> None:
    provider = LocalRenderer()
    assert isinstance(provider, SyncProvider)
    assert provider.name == "local"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_renders_exact_size_and_format(fmt: ImageFormat) -> None:
    result = await LocalRenderer().generate(make_request(format=fmt, width=320, height=136))

    image = decode(result.data)
    assert image.format == PIL_FORMATS[fmt]
    assert image.size == (320, 136)
    assert (result.format, result.width, result.height) == (fmt, 320, 136)
    assert result.content_type == CONTENT_TYPES[fmt]
    assert result.cost_usd == Decimal(0)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (4096, 64), (64, 4096), (1000, 512)])
def test_renders_extreme_and_odd_aspect_sizes(width: int, height: int) -> None:
    image = decode(render_image(make_request(width=width, height=height)))
    assert image.size == (width, height)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_same_request_gives_identical_bytes(fmt: ImageFormat) -> None:
    renderer = LocalRenderer()
    first = await renderer.generate(make_request(format=fmt))
    second = await renderer.generate(make_request(format=fmt))
    assert first.data == second.data


async def test_concurrent_renders_are_identical() -> None:
    """Renders run in threads; shared state (the font cache) must not leak between them."""
    results = await asyncio.gather(*(LocalRenderer().generate(make_request()) for _ in range(8)))
    assert len({result.data for result in results}) == 1


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        types.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return types


def test_png_has_no_metadata_chunks() -> None:
    """No tIME/tEXt/pHYs chunks: nothing in the file depends on when or where it was made."""
    chunks = png_chunk_types(render_image(make_request()))
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}


@pytest.mark.parametrize(
    "change",
    [{"seed": 43}, {"prompt": "a lighthouse at dawn, oil painting"}, {"prompt": ""}],
)
def test_other_seed_or_prompt_gives_a_visibly_different_picture(change: dict[str, object]) -> None:
    base = render_image(make_request())
    other = render_image(make_request(**change))
    assert base != other
    assert mean_difference(base, other) > 10


def test_picture_is_not_flat() -> None:
    image = decode(render_image(make_request())).convert("RGB")
    assert max(ImageStat.Stat(image).stddev) > 10


@pytest.mark.parametrize(
    "change",
    [
        {"width": 63},
        {"width": 4104},
        {"height": 100},
        {"height": 0},
        {"format": "gif"},
        {"model_ref": "sdxl"},
    ],
)
async def test_invalid_request_is_a_permanent_error(change: dict[str, object]) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await LocalRenderer().generate(make_request(**change))
    assert caught.value.code == "invalid_request"
    assert caught.value.retryable is False
