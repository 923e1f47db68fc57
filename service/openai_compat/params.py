"""OpenAI's image parameters, as Darkroom job fields.

One mapping for every entry of the door (generations, edits, a Batch API line), so the
same request means the same jobs whichever way it came. What OpenAI's API takes and
Darkroom has no use for is either mapped, dropped when it asks for the default, or
refused naming its `param`; nothing is silently taken to mean something else.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.batches.schemas import MAX_PROMPT
from service.config import Settings
from service.kit.text import Text, VisibleText
from service.openai_compat.errors import OpenAIError, bad_request
from service.providers.registry import ProviderRegistry

MAX_N = 10
# 64 to 4096 on each side, or "auto"; said in the schema so that clients see it.
_SIDE = "(?:6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])"
SIZE_PATTERN = f"^(?:auto|{_SIDE}x{_SIDE})$"
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
Short = Annotated[Text, Field(max_length=255)]

# Passed to the model as `options` (Darkroom checks them against what the model declares);
# these values mean "the default" and are dropped.
OPTION_PARAMS: dict[str, frozenset[object]] = {
    "quality": frozenset({"auto", "standard"}),
    "background": frozenset({"auto"}),
    "moderation": frozenset({"auto"}),
    "style": frozenset(),
    "input_fidelity": frozenset(),
    "output_compression": frozenset(),
}


class ImageParams(BaseModel):
    """The body of `images/generations` (and the fields of `images/edits` besides its
    files): OpenAI's names and values."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[VisibleText, Field(min_length=1, max_length=MAX_PROMPT)] = Field(
        description="What to make: the job's prompt"
    )
    model: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="A Darkroom model or route name (GET /v1/models, /v1/routes); "
        "default: the server's default model",
    )
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = Field(
        default=None, description="How many images: one job each"
    )
    size: Annotated[str, Field(pattern=SIZE_PATTERN)] | None = Field(
        default=None,
        description='"WIDTHxHEIGHT" (each 64 to 4096; rounded to a multiple of 8) or "auto" '
        "(the model's default); then mapped to what the model takes",
    )
    quality: Short | None = Field(
        default=None, description="The model's `quality` option; auto and standard: default"
    )
    output_format: Literal["png", "jpeg", "webp"] | None = None
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="b64_json (the default) or url"
    )
    background: Short | None = Field(default=None, description="The model's `background` option")
    moderation: Short | None = Field(default=None, description="The model's `moderation` option")
    style: Short | None = Field(default=None, description="The model's `style` option")
    input_fidelity: Short | None = Field(
        default=None, description="The model's `input_fidelity` option (edits)"
    )
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    partial_images: Annotated[int, Field(ge=0, le=0)] | None = Field(
        default=None, description="Streaming is not supported: only 0"
    )
    stream: Literal[False] | None = Field(default=None, description="Only false")
    user: Short | None = Field(
        default=None, description="Kept in the jobs' metadata as openai_user"
    )
    safety_identifier: Short | None = Field(default=None, description="Kept in the jobs' metadata")


def check_model(name: str, registry: ProviderRegistry) -> None:
    if registry.model(name) is None and name not in registry.routes:
        raise OpenAIError(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    match = _SIZE.fullmatch(size)
    if match is None or not all(64 <= int(side) <= 4096 for side in match.groups()):
        raise bad_request(
            f"Invalid value: '{size[:50]}'. size must be 'auto' or 'WIDTHxHEIGHT', each side "
            "64 to 4096, e.g. '1024x1024'.",
            "size",
            "invalid_value",
        )
    return _multiple_of_8(int(match[1])), _multiple_of_8(int(match[2]))


def _multiple_of_8(side: int) -> int:
    """Darkroom's sizes are multiples of 8; OpenAI's callers may send any number."""
    return max(64, min(4096, round(side / 8) * 8))


def job_fields(
    params: ImageParams, registry: ProviderRegistry, settings: Settings
) -> tuple[str, list[dict[str, Any]]]:
    """(the model, one Darkroom job per image asked for). Raises OpenAIError."""
    model = params.model or settings.default_model
    check_model(model, registry)
    width, height = parse_size(params.size)
    options: dict[str, Any] = {}
    for name, defaults in OPTION_PARAMS.items():
        value = getattr(params, name)
        if value is not None and value not in defaults:
            options[name] = value
    metadata: dict[str, Any] = {}
    if params.user:
        metadata["openai_user"] = params.user
    if params.safety_identifier:
        metadata["openai_safety_identifier"] = params.safety_identifier
    job: dict[str, Any] = {"prompt": params.prompt, "model": model}
    if width is not None:
        job |= {"width": width, "height": height}
    if params.output_format is not None:
        job["format"] = params.output_format
    if options:
        job["options"] = options
    if metadata:
        job["metadata"] = metadata
    return model, [dict(job) for _ in range(params.n or 1)]
