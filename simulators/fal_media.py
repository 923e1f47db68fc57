"""What fal's simulated endpoints make: real images (Pillow) and real small MP4s (PyAV),
rendered once per shape and cached, and the sizes fal's inputs name.

fal image endpoints take `image_size` as a name ("landscape_4_3") or `{width, height}`;
video endpoints take `resolution` ("480p") and `aspect_ratio` ("16:9"), and a
`duration` in seconds (a number, or a string such as "5").
"""

from __future__ import annotations

import io
from fractions import Fraction
from functools import lru_cache
from typing import Any

import av
from PIL import Image, ImageDraw

from simulators.images import image_bytes

IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_IMAGE_SIZE = "landscape_4_3"
MAX_SIDE = 4096
MAX_VIDEO_PIXELS = 1280 * 720
MAX_VIDEO_S = 20.0
DEFAULT_FPS = 16
DEFAULT_DURATION_S = 2.0


class InvalidInput(ValueError):
    """An input the model rejects: fal answers 422 with a FastAPI-style detail list."""

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.detail = [{"loc": ["body", field], "msg": message, "type": kind}]


def image_size(value: Any) -> tuple[int, int]:
    if value is None:
        return IMAGE_SIZES[DEFAULT_IMAGE_SIZE]
    if isinstance(value, str):
        if value not in IMAGE_SIZES:
            raise InvalidInput("image_size", f"unexpected value; permitted: {sorted(IMAGE_SIZES)}")
        return IMAGE_SIZES[value]
    if isinstance(value, dict):
        width, height = value.get("width"), value.get("height")
        if isinstance(width, int) and isinstance(height, int) and _side(width) and _side(height):
            return width, height
    raise InvalidInput("image_size", f"width and height must be integers in 1..{MAX_SIDE}")


def _side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIDE


def video_shape(arguments: dict[str, Any]) -> tuple[int, int, float, int]:
    """(width, height, duration_s, fps) from a video endpoint's inputs."""
    resolution = str(arguments.get("resolution") or "480p")
    if not resolution.endswith("p") or not resolution[:-1].isdigit():
        raise InvalidInput("resolution", "expected a resolution such as '480p'")
    short = int(resolution[:-1])  # "720p" names the short side, portrait or landscape
    ratio = str(arguments.get("aspect_ratio") or "16:9").split(":")
    if len(ratio) != 2 or not all(part.isdigit() and int(part) > 0 for part in ratio):
        raise InvalidInput("aspect_ratio", "expected a ratio such as '16:9'")
    across, down = int(ratio[0]), int(ratio[1])
    if across >= down:
        width, height = round(short * across / down), short
    else:
        width, height = short, round(short * down / across)
    if width * height > MAX_VIDEO_PIXELS or height < 16 or width < 16:
        raise InvalidInput("resolution", "resolution is out of range for this model")
    try:
        duration = float(arguments.get("duration") or DEFAULT_DURATION_S)
        fps = int(arguments.get("fps") or DEFAULT_FPS)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("duration", "duration and fps must be numbers") from exc
    if not 0 < duration <= MAX_VIDEO_S or not 1 <= fps <= 60:
        raise InvalidInput("duration", f"duration must be in (0, {MAX_VIDEO_S}], fps in 1..60")
    return width, height, duration, fps


def png_or_jpeg(width: int, height: int, output_format: str) -> tuple[bytes, str]:
    ext = "jpg" if output_format == "jpeg" else "png"
    return image_bytes(width, height, ext), "image/jpeg" if ext == "jpg" else "image/png"


@lru_cache(maxsize=16)
def mp4_bytes(width: int, height: int, duration_s: float, fps: int) -> bytes:
    """An H.264 MP4 of a bar sweeping across a gradient: `round(duration_s * fps)` frames.
    H.264 with yuv420p needs even sides: an odd side is rounded down, as encoders do."""
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    frames = max(1, round(duration_s * fps))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        background = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        for index in range(frames):
            image = background.copy()
            x = (index * width) // frames
            ImageDraw.Draw(image).rectangle(
                (x, 0, x + max(2, width // 10), height), fill=(220, 40, 40)
            )
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
