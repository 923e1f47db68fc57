"""The Atlas Cloud simulator's media: what a request body asks for (checked as Atlas
checks it: a bad field is a 400 naming it), and the output files that answer it, real
images (Pillow) and real short videos (PyAV, H.264 in MP4), rendered once per shape.

A video is a few frames of a moving gradient: small, quick to encode, and a container
that a decoder reads back with the asked size, frame rate and duration.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

import av
from PIL import Image, UnidentifiedImageError

from simulators.images import image_bytes, parse_ratio, size_from_aspect_ratio

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
VIDEO_TYPE = "video/mp4"
# A video asked for by aspect ratio is this tall (or wide, when portrait): small and quick.
VIDEO_SHORT_SIDE = 240
# What a broken CDN answers with a 200: markup, not media.
NOT_MEDIA = b"<html><body>upstream error: the file is not ready</body></html>\n" * 8


def image_file(width: int, height: int, fmt: str) -> bytes:
    return image_bytes(width, height, "jpg" if fmt == "jpeg" else fmt)


@lru_cache(maxsize=16)
def video_file(width: int, height: int, duration_s: float, fps: int) -> bytes:
    """An H.264 MP4 of `duration_s` at `fps`; odd sides are rounded up (yuv420p needs
    even ones)."""
    width += width % 2
    height += height % 2
    frames = max(1, round(duration_s * fps))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "crf": "35"}
        base = Image.linear_gradient("L").resize((width, height))
        for index in range(frames):
            shift = int(255 * index / frames)
            red = base.point(lambda value, s=shift: (value + s) % 256)
            frame_image = Image.merge("RGB", (red, base.rotate(180), Image.new("L", base.size, 90)))
            frame = av.VideoFrame.from_image(frame_image)  # type: ignore[no-untyped-call]
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


class BadRequest(Exception):
    """A request body Atlas would refuse with a 400; the message is its `msg`."""


def check_image_url(value: Any) -> None:
    """A data URI must hold a decodable image; a URL must be http(s) (not fetched)."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise BadRequest("image_url must be a string")
    if value.startswith(("http://", "https://")):
        return
    head, comma, payload = value.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64") and comma):
        raise BadRequest("image_url must be a URL or a data:image/...;base64 URI")
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as image:
            image.verify()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(f"image_url is not a valid image: {exc}") from exc


def size(body: dict[str, Any], media: str) -> tuple[int, int]:
    """From `size` ("W*H"), else `aspect_ratio` (the model picks the size: FLUX's for an
    image, a short side of 240 for a video), else `width` and `height`."""
    size = body.get("size")
    ratio = body.get("aspect_ratio")
    if size is None and ratio is not None:
        return ratio_size(ratio, media)
    if isinstance(size, str):
        match = re.fullmatch(r"(\d+)\*(\d+)", size)
        if match is None:
            raise BadRequest("size must be width*height")
        width, height = int(match.group(1)), int(match.group(2))
    else:
        default = (1024, 1024) if media == "image" else (320, 240)
        width = int(number(body, "width", default[0], 16, 4096))
        height = int(number(body, "height", default[1], 16, 4096))
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise BadRequest("size must be between 16*16 and 4096*4096")
    return width, height


def ratio_size(ratio: Any, media: str) -> tuple[int, int]:
    parsed = parse_ratio(ratio)
    image_size = size_from_aspect_ratio(ratio) if parsed is not None else None
    if parsed is None or image_size is None:
        raise BadRequest("aspect_ratio must be width:height, e.g. 16:9")
    if media == "image":
        return image_size
    w, h = parsed
    short = VIDEO_SHORT_SIDE
    if w >= h:
        return max(short, round(short * w / h / 2) * 2), short
    return short, max(short, round(short * h / w / 2) * 2)


def number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number")
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low:g} and {high:g}")
    return float(value)


def image_format(body: dict[str, Any]) -> str:
    value = body.get("output_format", "png")
    if value not in IMAGE_TYPES:
        raise BadRequest("output_format must be one of jpeg, png, webp")
    return str(value)
