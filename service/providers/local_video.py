"""Videos from the built-in `local` renderer: a procedural animation, NOT an AI model.

Like the local images, these exist so that the whole video path (validation, the worker,
output checking, storage, webhooks, image-to-video chains) runs offline with no provider
key. They do not try to depict the prompt, and they never stand in for another provider.

- Text to video: the local image renderer's palette and soft field (its painting helpers,
  imported from service.providers.local), seen through a window that drifts slowly across
  a larger field, with bokeh discs that float and pulse and crisp rings that orbit, and the
  prompt's first words in a corner.
- Image to video (a reference input: an uploaded image or a parent job's output): a slow
  zoom and pan over the image (the "Ken Burns" effect). The first frame is the image
  itself, cover-fitted to the asked size; the zoom stays under 1.3x, so the last frame is
  never upscaled past the image's resolution at that size. A mask input is ignored.

The video is a pure function of (prompt, seed, width, height, duration, fps, format, and
the reference image's bytes): every random choice comes from a generator seeded with the
prompt and seed, and the encoders run with fixed settings, one thread and bit-exact muxing
(service.providers.video_encode), so the same request gives the same bytes with the
same PyAV build. Small sizes and short clips only (`MAX_LONG_SIDE`, `MAX_DURATION_S`,
`MAX_FPS`): what does not move is painted once, shapes on a canvas of at most 256 pixels
then upscaled, and x264 runs at its fastest preset; a 2 s 256x256 clip at 12 fps takes
about 0.15 s of CPU, the largest allowed (1280x720, 10 s at 30 fps) about 8 s.
"""

from __future__ import annotations

import asyncio
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from service.providers.base import (
    GenerationRequest,
    InputImage,
    Output,
    ProviderPermanentError,
)
from service.providers.local import (
    Colour,
    _draw_caption,
    _paint_background,
    _palette,
    _seed_bytes,
    _shade,
)
from service.providers.video import inspect_video
from service.providers.video_encode import VideoFormat, encode_video

MIN_SIDE = 64
MAX_LONG_SIDE = 1280
MAX_DURATION_S = 10.0
MAX_FPS = 30
DEFAULT_DURATION_S = 2.0
DEFAULT_FPS = 12

# Shapes are drawn on a canvas whose long side is at most this, then upscaled.
_WORK_SIDE = 256
# The background field is this much larger than the view drifting across it.
_FIELD_MARGIN = 1.4
# One lap of the view around the field takes this long.
_DRIFT_PERIOD_S = 12.0
# Image to video: zoom per second, capped.
_ZOOM_PER_S = 0.05
_MAX_ZOOM = 0.3
_PAN_SHARE = 0.8


@dataclass(frozen=True)
class _Disc:
    """A bokeh disc (or ring) in relative coordinates, moving with time."""

    x: float
    y: float
    radius: float
    colour: Colour
    alpha: int
    speed: tuple[float, float]  # drift (discs) or orbit radius and angular speed (rings)
    phase: float


def render_video(request: GenerationRequest) -> bytes:
    """Render and encode one clip; blocking CPU work, call it from a thread."""
    fmt, fps, count = _validate(request)
    reference = request.input("reference")
    if reference is None:
        frames = _animation(request, fps, count)
    else:
        frames = _zoom_over(request, reference, fps, count)
    return encode_video(
        frames, width=request.width, height=request.height, fps=fps, fmt=fmt, fast=True
    )


async def render_video_output(request: GenerationRequest) -> Output:
    """The local provider's video output: rendered, then read back like any provider's
    video, so the frames and duration reported are what the file holds."""

    def work() -> Output:
        data = render_video(request)
        info = inspect_video(data)
        return Output(
            data=data,
            format=info.format,
            width=info.width,
            height=info.height,
            media="video",
            duration_s=info.duration_s,
            frames=info.frames,
            usage={"model": "procedural", "frames": info.frames},
        )

    return await asyncio.to_thread(work)


def _validate(request: GenerationRequest) -> tuple[VideoFormat, int, int]:
    """(format, fps, frame count); a request past the limits is refused, naming the limit."""
    if request.format not in ("mp4", "webm"):
        raise ProviderPermanentError(
            "invalid_request", f"local video: format must be mp4 or webm, got {request.format!r}"
        )
    fmt: VideoFormat = "mp4" if request.format == "mp4" else "webm"
    width, height = request.width, request.height
    if max(width, height) > MAX_LONG_SIDE or min(width, height) < MIN_SIDE:
        raise ProviderPermanentError(
            "invalid_request",
            f"local video: sides must be in {MIN_SIDE}..{MAX_LONG_SIDE}, got {width}x{height}",
        )
    if width % 2 or height % 2:
        raise ProviderPermanentError(
            "invalid_request", f"local video: sides must be even (4:2:0), got {width}x{height}"
        )
    duration = DEFAULT_DURATION_S if request.duration_s is None else request.duration_s
    if not 0 < duration <= MAX_DURATION_S:
        raise ProviderPermanentError(
            "invalid_request",
            f"local video: duration_s must be over 0 and at most {MAX_DURATION_S:g}, "
            f"got {duration:g}",
        )
    fps = DEFAULT_FPS if request.fps is None else request.fps
    if not 1 <= fps <= MAX_FPS:
        raise ProviderPermanentError(
            "invalid_request", f"local video: fps must be in 1..{MAX_FPS}, got {fps}"
        )
    return fmt, fps, max(1, round(duration * fps))


def _animation(request: GenerationRequest, fps: int, count: int) -> Iterator[Image.Image]:
    """The image renderer's palette and field, set in motion. What does not change from
    frame to frame (the field, each disc's blurred sprite, the caption) is painted once."""
    rng = random.Random(_seed_bytes(request.prompt, request.seed))
    palette = _palette(rng)
    width, height = request.width, request.height
    scale = min(1.0, _WORK_SIDE / max(width, height))
    work = (max(16, round(width * scale)), max(16, round(height * scale)))
    field_size = (round(work[0] * _FIELD_MARGIN), round(work[1] * _FIELD_MARGIN))
    # Painted at half resolution: it is blurred heavily anyway.
    field = _paint_background(rng, palette, (field_size[0] // 2, field_size[1] // 2))
    field = field.resize(field_size, Image.Resampling.BILINEAR)
    discs = [_disc(rng, palette, drift=True) for _ in range(rng.randint(10, 18))]
    rings = [_disc(rng, palette, drift=False) for _ in range(rng.randint(3, 7))]
    start = rng.uniform(0, 2 * math.pi)
    blur = max(1.2, min(work) / 160)
    sprites = [_sprite(disc, min(work), blur) for disc in discs]
    caption = _caption_layer(request.prompt, (width, height))
    for index in range(count):
        t = index / fps
        angle = start + 2 * math.pi * t / _DRIFT_PERIOD_S
        left = (field_size[0] - work[0]) * (0.5 + 0.5 * math.cos(angle))
        top = (field_size[1] - work[1]) * (0.5 + 0.5 * math.sin(angle))
        box = (left, top, left + work[0], top + work[1])
        canvas = field.resize(work, Image.Resampling.BILINEAR, box=box)
        for disc, sprite in zip(discs, sprites, strict=True):
            _place(canvas, disc, sprite, t)
        if canvas.size != (width, height):
            canvas = canvas.resize((width, height), Image.Resampling.BILINEAR)
        _draw_rings(canvas, rings, t)
        if caption is not None:
            canvas.paste(caption[0], caption[1], caption[0])
        yield canvas


def _disc(rng: random.Random, palette: list[Colour], *, drift: bool) -> _Disc:
    if drift:
        return _Disc(
            x=rng.uniform(0.05, 0.95),
            y=rng.uniform(0.05, 0.95),
            radius=rng.uniform(0.015, 0.08),
            colour=_shade(rng.choice(palette), rng.uniform(1.0, 1.3)),
            alpha=rng.randint(90, 200),
            speed=(rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06)),
            phase=rng.uniform(0, 2 * math.pi),
        )
    return _Disc(
        x=rng.uniform(0.15, 0.85),
        y=rng.uniform(0.15, 0.85),
        radius=rng.uniform(0.04, 0.22),
        colour=_shade(rng.choice(palette), 1.35),
        alpha=rng.randint(110, 190),
        speed=(rng.uniform(0.02, 0.06), rng.choice((-1, 1)) * rng.uniform(0.3, 0.9)),
        phase=rng.uniform(0, 2 * math.pi),
    )


def _sprite(disc: _Disc, short: int, blur: float) -> Image.Image:
    """A disc's soft mask (its alpha, blurred), painted once and placed on every frame."""
    radius = disc.radius * short
    pad = math.ceil(radius + 3 * blur)
    mask = Image.new("L", (2 * pad, 2 * pad), 0)
    ImageDraw.Draw(mask).ellipse(
        (pad - radius, pad - radius, pad + radius, pad + radius), fill=disc.alpha
    )
    return mask.filter(ImageFilter.GaussianBlur(blur))


def _place(canvas: Image.Image, disc: _Disc, sprite: Image.Image, t: float) -> None:
    """Discs float at constant speed, wrapping around off-canvas."""
    width, height = canvas.size
    x = ((disc.x + disc.speed[0] * t + 0.1) % 1.2 - 0.1) * width
    y = ((disc.y + disc.speed[1] * t + 0.1) % 1.2 - 0.1) * height
    left, top = round(x - sprite.width / 2), round(y - sprite.height / 2)
    canvas.paste(disc.colour, (left, top, left + sprite.width, top + sprite.height), sprite)


def _caption_layer(
    prompt: str, size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int]] | None:
    """The image renderer's caption, drawn once on a transparent layer and cropped to it."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_caption(layer, prompt)
    bbox = layer.getbbox()
    if bbox is None:
        return None
    return layer.crop(bbox), (bbox[0], bbox[1])


def _draw_rings(image: Image.Image, rings: list[_Disc], t: float) -> None:
    """Thin outlines at full resolution that orbit their place and breathe."""
    width, height = image.size
    short = min(width, height)
    line = max(1, round(short / 256))
    draw = ImageDraw.Draw(image, "RGBA")
    for ring in rings:
        orbit, turn = ring.speed
        angle = ring.phase + turn * t
        x = (ring.x + orbit * math.cos(angle)) * width
        y = (ring.y + orbit * math.sin(angle)) * height
        radius = ring.radius * short * (1 + 0.08 * math.sin(ring.phase + 1.5 * t))
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius),
            outline=(*ring.colour, ring.alpha),
            width=line,
        )


def _zoom_over(
    request: GenerationRequest, reference: InputImage, fps: int, count: int
) -> Iterator[Image.Image]:
    """A slow zoom in and pan over the reference image, eased in and out."""
    width, height = request.width, request.height
    zoom = min(_MAX_ZOOM, _ZOOM_PER_S * count / fps)
    plate_size = (math.ceil(width * (1 + zoom)), math.ceil(height * (1 + zoom)))
    plate = _plate(reference, plate_size)
    rng = random.Random(_seed_bytes(request.prompt, request.seed))
    direction = rng.uniform(0, 2 * math.pi)
    for index in range(count):
        progress = index / (count - 1) if count > 1 else 0.0
        eased = progress * progress * (3 - 2 * progress)
        scale = 1 + zoom * eased
        view_w, view_h = plate_size[0] / scale, plate_size[1] / scale
        centre_x = (
            plate_size[0] / 2 + math.cos(direction) * _PAN_SHARE * (plate_size[0] - view_w) / 2
        )
        centre_y = (
            plate_size[1] / 2 + math.sin(direction) * _PAN_SHARE * (plate_size[1] - view_h) / 2
        )
        box = (
            centre_x - view_w / 2,
            centre_y - view_h / 2,
            centre_x + view_w / 2,
            centre_y + view_h / 2,
        )
        yield plate.resize((width, height), Image.Resampling.BICUBIC, box=box)


def _plate(reference: InputImage, size: tuple[int, int]) -> Image.Image:
    """The reference, upright and cover-fitted (scaled to cover, centre cropped) to `size`."""
    try:
        with Image.open(io.BytesIO(reference.data)) as image:
            image.draft("RGB", size)  # a large JPEG decodes at a fraction of its size
            upright = _flatten(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ProviderPermanentError(
            "invalid_input", f"local video: the reference is not a decodable image: {exc}"
        ) from exc
    return ImageOps.fit(upright, size, Image.Resampling.LANCZOS)


def _flatten(image: Image.Image) -> Image.Image:
    """Video has no alpha: transparent parts go onto white (as JPEG outputs do), not onto
    whatever colour the transparent pixels happen to hold."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
