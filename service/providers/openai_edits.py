"""OpenAI's image edits (`POST {base}/images/edits`): how a job's reference images and
mask reach an OpenAI-compatible API.

The request is multipart/form-data: `model`, `prompt`, `n=1`, `size`, the images, the
mask, and `output_format` (GPT image models) or `response_format=b64_json` (dall-e-2,
which takes one square PNG as `image`; GPT image models take up to 16 as `image[]`).

The mask, in OpenAI's terms, is a PNG whose fully transparent pixels are where the image
is edited, the size of the first image. A mask with an alpha channel is sent as it is
(re-encoded as PNG when it is another format); a mask without one (a black and white
image, as most inpainting tools draw them) is read as white = edit, black = keep, and
converted. A mask of another size than the first image is refused before any request
is paid for.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from service.providers.base import GenerationRequest, InputImage, ProviderPermanentError
from service.providers.http import Files

MAX_IMAGES = 16
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# A grey level at or above this is "edit" in a mask drawn without transparency.
EDIT_LEVEL = 128


def wants_edit(request: GenerationRequest) -> bool:
    """Reference images or a mask go to images/edits; a prompt alone to generations."""
    return bool(request.inputs)


def edit_form(provider: str, request: GenerationRequest) -> tuple[dict[str, str], Files]:
    """(form fields, files) of the images/edits request for `request`."""
    references = request.references()
    mask = request.input("mask")
    if not references:
        raise ProviderPermanentError(
            "invalid_input", f"{provider}: a mask needs a reference image to edit"
        )
    single = request.model_ref.startswith("dall-e")
    limit = 1 if single else MAX_IMAGES
    if len(references) > limit:
        raise ProviderPermanentError(
            "invalid_input",
            f"{provider}: {request.model_ref} takes at most {limit} reference image(s), "
            f"{len(references)} given",
        )
    fields: dict[str, str] = {
        "model": request.model_ref,
        "prompt": request.prompt,
        "n": "1",
        "size": f"{request.width}x{request.height}",
    }
    if single:
        fields["response_format"] = "b64_json"
    else:
        fields["output_format"] = request.format
    field_name = "image" if single else "image[]"
    files: Files = [
        (field_name, (_file_name("image", index, item), item.data, item.content_type))
        for index, item in enumerate(references, start=1)
    ]
    if mask is not None:
        size = _size(provider, references[0], "the first reference image")
        files.append(("mask", ("mask.png", openai_mask(provider, mask, size), "image/png")))
    return fields, files


def openai_mask(provider: str, mask: InputImage, size: tuple[int, int]) -> bytes:
    """The mask as OpenAI wants it: a PNG, transparent where the image is edited."""
    image = _open(provider, mask.data, "the mask")
    if image.size != size:
        raise ProviderPermanentError(
            "invalid_input",
            f"{provider}: the mask is {image.width}x{image.height} but the image it masks is "
            f"{size[0]}x{size[1]}; they must be the same size",
        )
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        converted = image.convert("RGBA")
    else:
        edit = image.convert("L").point(lambda level: 0 if level >= EDIT_LEVEL else 255)
        converted = Image.new("RGBA", image.size, (0, 0, 0, 255))
        converted.putalpha(edit)
    buffer = io.BytesIO()
    converted.save(buffer, "PNG")
    return buffer.getvalue()


def _size(provider: str, item: InputImage, what: str) -> tuple[int, int]:
    return _open(provider, item.data, what).size


def _open(provider: str, data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ProviderPermanentError(
            "invalid_input", f"{provider}: {what} is not a decodable image"
        ) from exc
    return image


def _file_name(stem: str, index: int, item: InputImage) -> str:
    return f"{stem}-{index}.{EXTENSIONS.get(item.content_type, 'png')}"
