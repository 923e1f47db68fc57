"""Image bytes for simulated outputs, rendered once per (width, height, format).

A benchmark pushes hundreds of generations per second through the simulator, so no
request renders anything: the first request for a size pays for it, the rest hit the
cache.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

from PIL import Image

# Extension (as in a file name or Replicate's output_format) -> (Pillow format, content type)
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", "image/png"),
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}
# What `not_image` outputs contain: plausible-looking bytes that no decoder accepts.
NOT_IMAGE = b"<html><body>upstream error: this is not an image</body></html>\n" * 16
MAX_SIDE = 4096


@lru_cache(maxsize=64)
def image_bytes(width: int, height: int, ext: str) -> bytes:
    pillow_format, _ = FORMATS[ext]
    ramp = Image.linear_gradient("L")
    red = ramp.resize((width, height))
    green = ramp.rotate(90).resize((width, height))
    blue = Image.new("L", (width, height), 160)
    buffer = io.BytesIO()
    Image.merge("RGB", (red, green, blue)).save(buffer, format=pillow_format)
    return buffer.getvalue()


@lru_cache(maxsize=64)
def image_b64(width: int, height: int, ext: str) -> str:
    return base64.b64encode(image_bytes(width, height, ext)).decode()


NOT_IMAGE_B64 = base64.b64encode(NOT_IMAGE).decode()


def content_type(ext: str) -> str:
    return FORMATS[ext][1]


def size_from_aspect_ratio(ratio: str, long_side: int = 1024) -> tuple[int, int] | None:
    """'16:9' -> (1024, 576): the long side is `long_side`, the other follows the ratio."""
    parts = ratio.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side
