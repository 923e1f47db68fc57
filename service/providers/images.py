"""Checking what a provider sent before anyone calls it an image.

A provider may answer 200 with an HTML error page, a truncated file or another format
than the one asked for. The bytes are decoded in full (a truncated JPEG passes
`verify()`), and converted when the format differs, so a job's output is always a
decodable image in the format its caller asked for.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any, Literal

from PIL import Image

from service.kit.threads import in_thread
from service.providers.base import (
    IMAGE_FORMATS,
    Output,
    OutputFormat,
    ProviderPermanentError,
    ProviderRetryableError,
)

ImageFormat = Literal["png", "jpeg", "webp"]

_PIL_TO_FORMAT: dict[str, ImageFormat] = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_FORMAT_TO_PIL = {value: key for key, value in _PIL_TO_FORMAT.items()}
_LOSSY_QUALITY = 92
# Far past any size a job may ask for (4096x4096); refuses decompression bombs cheaply.
MAX_PIXELS = 64 * 1024 * 1024


def inspect_image(data: bytes, *, provider: str) -> tuple[str, int, int]:
    """(Pillow format name, width, height) of a decodable image; else `invalid_image`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ProviderRetryableError(
                    "invalid_image",
                    f"{provider}: output is {image.width}x{image.height}, over {MAX_PIXELS} pixels",
                )
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.format or "", image.width, image.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ProviderRetryableError(
            "invalid_image", f"{provider}: output is not a decodable image: {exc}"
        ) from exc


def convert_image(data: bytes, target: ImageFormat) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        if target == "jpeg":
            converted = _flatten(image) if has_alpha else image.convert("RGB")
        else:
            converted = image.convert("RGBA" if has_alpha else "RGB")
    buffer = io.BytesIO()
    if target == "png":
        converted.save(buffer, "PNG")
    elif target == "jpeg":
        converted.save(buffer, "JPEG", quality=_LOSSY_QUALITY)
    else:
        converted.save(buffer, "WEBP", quality=_LOSSY_QUALITY)
    return buffer.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white rather than letting transparent pixels
    turn into whatever colour they happened to hold."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def checked_image_sync(
    data: bytes,
    want: OutputFormat,
    *,
    provider: str,
    cost_usd: Decimal = Decimal(0),
    usage: dict[str, Any] | None = None,
) -> Output:
    if want not in IMAGE_FORMATS:
        raise ProviderPermanentError(
            "unexpected_media", f"{provider}: sent an image where a {want} video was asked for"
        )
    image_format: ImageFormat = want  # type: ignore[assignment]
    pil_format, width, height = inspect_image(data, provider=provider)
    if _PIL_TO_FORMAT.get(pil_format) != image_format:
        data = convert_image(data, image_format)
    return Output(
        data=data,
        format=want,
        width=width,
        height=height,
        cost_usd=cost_usd,
        usage=dict(usage or {}),
    )


# Decoding (and converting) a 4096x4096 image is CPU work the event loop should not wait on.
checked_image = in_thread(checked_image_sync)
