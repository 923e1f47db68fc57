"""OpenAI's image edits (POST /v1/images/edits): a prompt and one or more images, and
optionally a mask, as multipart/form-data.

As OpenAI does: GPT image models take up to 16 images as `image[]` (png, jpeg or webp)
and `output_format`; dall-e-2 takes one square PNG as `image`. The mask is a PNG with
an alpha channel, the size of the first image; its fully transparent pixels are where
the image is edited. Checked before any work: a missing or undecodable image, a bad
mask, too many images (400, OpenAI's error body). Then the same limits, faults and
latency as a generation (simulators.openai.serve).

The "edit" is real enough to check from outside: the output is the first image scaled
to the output size, with the simulator's gradient painted where the mask is transparent
(everywhere, half-blended, without a mask).
"""

from __future__ import annotations

import base64
import hashlib
import io
from functools import partial
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.images import image_bytes
from simulators.openai import (
    FIXED_SIZES,
    Generation,
    openai_error,
    parse_request,
    serve,
    unauthorized,
)
from simulators.state import SimState

if TYPE_CHECKING:
    from simulators.oauth import TokenServer

MAX_IMAGES = 16
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP"}
PILLOW_SAVE = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _decode(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return image if image.format in IMAGE_FORMATS else None


def _bad_image(index: int) -> Response:
    message = f"Invalid image file or mode for image {index}, please check your image file."
    return openai_error(400, message, "invalid_request_error", "invalid_image_file", "image")


def _bad_mask(message: str) -> Response:
    return openai_error(400, message, "invalid_request_error", "invalid_image_format", "mask")


def edited_b64(
    source: Image.Image, mask: Image.Image | None, width: int, height: int, fmt: str
) -> str:
    """The first image at the output size, the gradient painted where the mask allows."""
    base = source.convert("RGB").resize((width, height))
    paint = Image.open(io.BytesIO(image_bytes(width, height, "png"))).convert("RGB")
    if mask is None:
        result = Image.blend(base, paint, 0.5)
    else:
        # Transparent (alpha 0) is edited: the composite takes `paint` where alpha is 0.
        keep = mask.getchannel("A").resize((width, height)).point(lambda a: 255 if a else 0)
        result = Image.composite(base, paint, keep)
    buffer = io.BytesIO()
    result.save(buffer, format=PILLOW_SAVE[fmt])
    return base64.b64encode(buffer.getvalue()).decode()


async def _read_form(request: Request) -> tuple[dict[str, str], list[bytes], bytes | None]:
    """(text fields, image files in order, mask file) of the multipart body."""
    form = await request.form(max_files=MAX_IMAGES + 8, max_fields=64)
    fields: dict[str, str] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            if key in ("image", "image[]"):
                images.append(data)
            elif key == "mask":
                mask = data
        else:
            fields[key] = value
    return fields, images, mask


def _checked(
    model: str, images: list[bytes], mask_data: bytes | None
) -> tuple[list[Image.Image], Image.Image | None] | Response:
    if not images:
        message = "Missing required parameter: 'image'."
        return openai_error(
            400, message, "invalid_request_error", "missing_required_parameter", "image"
        )
    if len(images) > (MAX_IMAGES if model in FIXED_SIZES else 1):
        message = f"Too many images: {len(images)} given, {model} takes at most {MAX_IMAGES}."
        return openai_error(400, message, "invalid_request_error", "invalid_value", "image")
    decoded: list[Image.Image] = []
    for index, data in enumerate(images, start=1):
        image = _decode(data)
        if image is None:
            return _bad_image(index)
        decoded.append(image)
    if model == "dall-e-2" and (
        decoded[0].format != "PNG" or decoded[0].width != decoded[0].height
    ):
        return _bad_image(1)
    mask: Image.Image | None = None
    if mask_data is not None:
        mask = _decode(mask_data)
        if mask is None or mask.format != "PNG" or "A" not in mask.getbands():
            return _bad_mask("Invalid mask image format - mask must be a PNG with an alpha channel")
        if mask.size != decoded[0].size:
            return _bad_mask("Invalid mask image format - mask size does not match image size")
    return decoded, mask


def routes(state: SimState, tokens: TokenServer | None = None) -> list[Route]:
    async def edit(request: Request) -> Response:
        state.count_creation_request()
        refusal = unauthorized(request, state, tokens)
        if refusal is not None:
            return refusal
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            message = "Invalid Content-Type header (expected multipart/form-data)."
            return openai_error(400, message, "invalid_request_error")
        fields, files, mask_data = await _read_form(request)
        body: dict[str, Any] = dict(fields)
        if body.get("n", "").isdigit():
            body["n"] = int(body["n"])
        parsed = parse_request(body)
        if isinstance(parsed, Response):
            return parsed
        model, prompt, n, width, height, fmt, quality = parsed
        checked = _checked(model, files, mask_data)
        if isinstance(checked, Response):
            return checked
        images, mask = checked
        if fields.get("size", "auto") == "auto":
            width, height = images[0].size
        record = {
            **body,
            "images": [hashlib.sha256(data).hexdigest() for data in files],
            "mask": hashlib.sha256(mask_data).hexdigest() if mask_data else None,
        }
        draw = partial(edited_b64, images[0], mask, width, height, fmt)
        job = Generation(model, prompt, n, width, height, fmt, quality, record=record, draw=draw)
        return await serve(state, request, job)

    return [Route("/v1/images/edits", edit, methods=["POST"])]
