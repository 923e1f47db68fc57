"""Provider outputs are decoded before they count, and converted to the format asked for."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.providers.base import ProviderRetryableError
from service.providers.images import ImageFormat, checked_image, checked_image_sync, inspect_image

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    colour = (10, 200, 30, 128) if mode == "RGBA" else (10, 200, 30)
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def test_inspect_reports_format_and_size() -> None:
    assert inspect_image(encode("PNG", (64, 48)), provider="p") == ("PNG", 64, 48)


@pytest.mark.parametrize(
    "data",
    [b"", b"<html>error</html>", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
)
def test_not_an_image_is_retryable(data: bytes) -> None:
    with pytest.raises(ProviderRetryableError) as caught:
        inspect_image(data, provider="p")
    assert caught.value.code == "invalid_image"


def test_truncated_image_is_refused() -> None:
    data = encode("JPEG", (256, 256))
    with pytest.raises(ProviderRetryableError, match="not a decodable image"):
        inspect_image(data[: len(data) // 2], provider="p")


@pytest.mark.parametrize("want", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("given", ["PNG", "JPEG", "WEBP", "GIF"])
async def test_converts_to_the_asked_format(given: str, want: ImageFormat) -> None:
    original = encode(given, (40, 30))
    image = await checked_image(original, want, provider="p", usage={"n": 1})
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == PIL_FORMATS[want]
    assert (image.format, image.width, image.height) == (want, 40, 30)
    assert image.usage == {"n": 1}
    if PIL_FORMATS[want] == given:
        assert image.data == original  # untouched when already right


def test_transparency_becomes_white_in_jpeg_and_stays_in_png() -> None:
    rgba = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(rgba, "WEBP", lossless=True)
    as_jpeg = checked_image_sync(rgba.getvalue(), "jpeg", provider="p")
    pixel = Image.open(io.BytesIO(as_jpeg.data)).convert("RGB").getpixel((4, 4))
    assert isinstance(pixel, tuple)
    assert min(pixel) > 245
    as_png = checked_image_sync(rgba.getvalue(), "png", provider="p")
    assert Image.open(io.BytesIO(as_png.data)).mode == "RGBA"
