"""Is it an image Darkroom will feed to a provider? Decoded, not taken on its word.

An upload and a reference image fetched from a URL pass the same check: the bytes
decode in full as PNG, JPEG or WebP (a truncated JPEG passes Pillow's `verify()`, so the
pixels are loaded too), within a pixel budget that refuses decompression bombs before
any pixel is decoded. The content type is the one the decoder found, never the one a
client or a server declared.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""An upload or a fetched reference image: 20 MiB."""

MAX_IMAGE_MB = MAX_IMAGE_BYTES // (1024 * 1024)
# A 8192x8192 image; far past what providers take as a reference, far below a bomb.
MAX_PIXELS = 64 * 1024 * 1024

_ACCEPTED: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
ACCEPTED_NAMES = "png, jpeg or webp"


class NotAnImage(ValueError):
    """The bytes are not an image Darkroom accepts; the message says why."""


@dataclass(frozen=True)
class CheckedImage:
    content_type: str
    extension: str
    width: int
    height: int


def inspect_image_sync(data: bytes) -> CheckedImage:
    """The decoded image's type and size; raises NotAnImage."""
    if not data:
        raise NotAnImage("it is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format or "unknown"
            if found not in _ACCEPTED:
                raise NotAnImage(f"it is {found}, not {ACCEPTED_NAMES}")
            if image.width * image.height > MAX_PIXELS:
                raise NotAnImage(f"it is {image.width}x{image.height}, over {MAX_PIXELS} pixels")
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.width, image.height
    except NotAnImage:
        raise
    except UnidentifiedImageError:
        raise NotAnImage(f"it does not decode as {ACCEPTED_NAMES}") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise NotAnImage(f"it does not decode: {exc}") from None
    content_type, extension = _ACCEPTED[found]
    return CheckedImage(content_type, extension, width, height)


async def inspect_image(data: bytes) -> CheckedImage:
    """In a thread: decoding 20 MiB is CPU work the event loop should not wait on."""
    return await asyncio.to_thread(inspect_image_sync, data)
