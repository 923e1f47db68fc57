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


# The sizes FLUX models on Replicate make for each aspect ratio at 1 megapixel (cog-flux).
FLUX_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}


def parse_ratio(ratio: object) -> tuple[int, int] | None:
    """'16:9' -> (16, 9); None for anything else."""
    parts = ratio.split(":") if isinstance(ratio, str) else []
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) < 1000 for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def size_from_aspect_ratio(ratio: str, megapixels: float = 1.0) -> tuple[int, int] | None:
    """The size a ratio model makes, as FLUX does: 16:9 -> 1344x768 at one megapixel,
    672x384 at 0.25. A ratio outside FLUX's table gets about `megapixels`, sides a
    multiple of 16."""
    parsed = parse_ratio(ratio)
    if parsed is None:
        return None
    scale = megapixels**0.5
    w, h = FLUX_SIZES.get(ratio) or (
        (1024 * 1024 * parsed[0] / parsed[1]) ** 0.5,
        (1024 * 1024 * parsed[1] / parsed[0]) ** 0.5,
    )
    return max(16, round(w * scale / 16) * 16), max(16, round(h * scale / 16) * 16)
