"""The built-in `local` provider: a procedural renderer, NOT an AI model.

It exists so that the whole service (API, workers, storage, webhooks) runs offline with no
provider key, in development and in tests. It paints an abstract picture (a gradient from a
palette derived from the prompt, soft blobs, a few crisp rings and the prompt's first words in a
corner); it does not try to depict the prompt, and it never stands in for another provider.

The picture is a pure function of (prompt, seed, width, height, format): the random generator is
seeded from a sha256 of prompt and seed, every shape is placed relative to the canvas, and the
encoders run with fixed settings and no metadata, so the same request gives the same bytes (with
the same Pillow build). Shapes are painted on a small canvas that is upscaled once, which keeps a
512x512 PNG under about 15 ms of CPU; the work runs in a thread so the event loop never waits.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import random
import threading
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from service.providers.account import AccountConfig
from service.providers.base import (
    CONTENT_TYPES,
    Capabilities,
    GenerationRequest,
    Output,
    ProviderPermanentError,
    SyncProvider,
)
from service.providers.kinds import Kind

MODEL_REF = "procedural"
MIN_SIDE = 64
MAX_SIDE = 4096
SIDE_STEP = 8

# Shapes are drawn on a canvas whose long side is at most this, then upscaled once.
_WORK_SIDE = 256
_PNG_COMPRESS_LEVEL = 1
_LOSSY_QUALITY = 90
_WEBP_METHOD = 2

Colour = tuple[int, int, int]

# Hue offsets (in turns) of a few classic colour schemes.
_SCHEMES: tuple[tuple[float, ...], ...] = (
    (0.0, 0.06, 0.12, -0.06, -0.12),  # analogous
    (0.0, 0.5, 0.05, 0.55, -0.05),  # complementary
    (0.0, 1 / 3, 2 / 3, 0.05, 0.38),  # triadic
    (0.0, 0.42, 0.58, 0.04, -0.04),  # split complementary
)

# FreeType faces are not safe to share between threads; the font cache is guarded by this lock.
_FONT_LOCK = threading.Lock()


class LocalConfig(AccountConfig):
    kind: Literal["local"]


class LocalRenderer(SyncProvider):
    """Synchronous, free, offline image generation for the `local` provider."""

    kind = "local"
    capabilities = Capabilities(
        media=frozenset({"image", "video"}),
        formats=frozenset(CONTENT_TYPES),
        inputs=frozenset({"reference"}),
    )

    def __init__(self, name: str = "local") -> None:
        self.name = name

    async def generate(self, request: GenerationRequest) -> Output:
        if request.media == "video":
            # Imported here: the video renderer paints with this module's helpers.
            from service.providers.local_video import render_video_output

            _check_model(request)
            return await render_video_output(request)
        _validate(request)
        data = await asyncio.to_thread(render_image, request)
        return Output(
            data=data,
            format=request.format,
            width=request.width,
            height=request.height,
            cost_usd=Decimal(0),
            usage={"model": MODEL_REF, "pixels": request.width * request.height},
        )


KIND = Kind("local", LocalConfig, lambda name, config, deps: LocalRenderer(name))


def render_image(request: GenerationRequest) -> bytes:
    """Render and encode one picture; blocking CPU work, call it from a thread."""
    _validate(request)
    rng = random.Random(_seed_bytes(request.prompt, request.seed))
    image = _paint(rng, request.width, request.height)
    reference = request.input("reference")
    if reference is not None:
        image = _over_reference(image, reference.data)
    _draw_caption(image, request.prompt)
    return _encode(image, request.format)


def _over_reference(painted: Image.Image, data: bytes) -> Image.Image:
    """A reference image (a parent job's output, an upload) shows through the painting:
    cropped to fill the canvas, with the painting laid over it at a quarter strength."""
    try:
        with Image.open(io.BytesIO(data)) as reference:
            base = ImageOps.fit(reference.convert("RGB"), painted.size)
    except (OSError, ValueError) as exc:
        raise ProviderPermanentError(
            "invalid_input", f"local: the reference image does not decode: {exc}"
        ) from exc
    return Image.blend(base, painted.convert("RGB"), 0.25)


def _check_model(request: GenerationRequest) -> None:
    if request.model_ref != MODEL_REF:
        raise ProviderPermanentError(
            "invalid_request", f"local provider has no model {request.model_ref!r}"
        )


def _validate(request: GenerationRequest) -> None:
    """Defensive: the API validates first, so reaching these means a bug upstream, not bad luck."""
    _check_model(request)
    if request.format not in ("png", "jpeg", "webp"):
        raise ProviderPermanentError("invalid_request", f"unsupported format {request.format!r}")
    for label, side in (("width", request.width), ("height", request.height)):
        if not MIN_SIDE <= side <= MAX_SIDE or side % SIDE_STEP:
            raise ProviderPermanentError(
                "invalid_request",
                f"{label} must be a multiple of {SIDE_STEP} in {MIN_SIDE}..{MAX_SIDE}, got {side}",
            )


def _seed_bytes(prompt: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()


def _palette(rng: random.Random) -> list[Colour]:
    base = rng.random()
    offsets = rng.choice(_SCHEMES)
    saturation = rng.uniform(0.35, 0.75)
    colours = []
    for offset in offsets:
        hue = (base + offset + rng.uniform(-0.02, 0.02)) % 1.0
        sat = min(1.0, max(0.0, saturation + rng.uniform(-0.15, 0.15)))
        value = rng.uniform(0.55, 0.97)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, value)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def _shade(colour: Colour, factor: float) -> Colour:
    r, g, b = (min(255, max(0, round(c * factor))) for c in colour)
    return (r, g, b)


def _paint(rng: random.Random, width: int, height: int) -> Image.Image:
    """Paint on a small canvas in relative coordinates, then upscale: cheap and size-independent."""
    palette = _palette(rng)
    scale = min(1.0, _WORK_SIDE / max(width, height))
    work_size = (max(16, round(width * scale)), max(16, round(height * scale)))
    # The background is blurred heavily anyway, so it is painted at half the resolution.
    background = _paint_background(rng, palette, (work_size[0] // 2, work_size[1] // 2))
    canvas = background.resize(work_size, Image.Resampling.BILINEAR)
    _paint_dots(rng, canvas, palette)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(1.2, min(work_size) / 160)))
    image = canvas if scale == 1.0 else canvas.resize((width, height), Image.Resampling.BICUBIC)
    _draw_rings(rng, image, palette)
    return image


def _paint_background(
    rng: random.Random, palette: list[Colour], size: tuple[int, int]
) -> Image.Image:
    """A smooth field from a 3x3 grid of palette colours, with big translucent blobs, blurred."""
    width, height = size
    short = min(size)
    grid = Image.new("RGB", (3, 3))
    grid.putdata([_shade(rng.choice(palette), rng.uniform(0.45, 1.05)) for _ in range(9)])
    background = grid.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(background, "RGBA")
    for _ in range(rng.randint(22, 34)):
        cx, cy = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        radius = rng.uniform(0.05, 0.28) * short
        colour = _shade(rng.choice(palette), rng.uniform(0.8, 1.2))
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            fill=(*colour, rng.randint(50, 140)),
        )
    return background.filter(ImageFilter.GaussianBlur(short / 22))


def _paint_dots(rng: random.Random, canvas: Image.Image, palette: list[Colour]) -> None:
    """Smaller, brighter discs on top of the background: the bokeh the eye lands on."""
    width, height = canvas.size
    short = min(width, height)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for _ in range(rng.randint(10, 18)):
        cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
        radius = rng.uniform(0.015, 0.08) * short
        colour = _shade(rng.choice(palette), rng.uniform(1.0, 1.3))
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            fill=(*colour, rng.randint(90, 200)),
        )


def _draw_rings(rng: random.Random, image: Image.Image, palette: list[Colour]) -> None:
    """A few thin outlines at full resolution, so the picture has some crisp detail."""
    width, height = image.size
    short = min(width, height)
    line = max(1, round(short / 256))
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(rng.randint(3, 7)):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        radius = rng.uniform(0.04, 0.22) * short
        colour = _shade(rng.choice(palette), 1.35)
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            outline=(*colour, rng.randint(110, 190)),
            width=line,
        )


def _caption_text(prompt: str, max_words: int = 5, max_chars: int = 40) -> str:
    """The prompt's first words in ASCII (the default font has no other glyphs)."""
    ascii_prompt = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = "".join(c if c.isprintable() else " " for c in ascii_prompt).split()
    text = " ".join(words[:max_words])
    if len(text) > max_chars:
        text = text[: max_chars - 3].rstrip() + "..."
    elif len(words) > max_words:
        text += " ..."
    return text


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_caption(image: Image.Image, prompt: str) -> None:
    width, height = image.size
    text = _caption_text(prompt)
    if not text or width < 160 or height < 96:
        return
    size = max(10, min(48, round(min(width, height) / 40)))
    margin = max(6, size)
    with _FONT_LOCK:
        font = _font(size)
        draw = ImageDraw.Draw(image, "RGBA")
        x, y = margin, height - margin - size
        shadow = max(1, size // 12)
        draw.text((x + shadow, y + shadow), text, font=font, fill=(0, 0, 0, 110))
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 215))


def _encode(image: Image.Image, fmt: str) -> bytes:
    """Fixed encoder settings and no metadata: part of what makes the output reproducible."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.save(buffer, "JPEG", quality=_LOSSY_QUALITY, optimize=False, progressive=False)
    else:
        image.save(buffer, "WEBP", quality=_LOSSY_QUALITY, method=_WEBP_METHOD, exact=False)
    return buffer.getvalue()
