"""Request and response bodies of /v1/batches."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
    field_validator,
)

ImageFormatName = Literal["png", "jpeg", "webp"]
Dimension = Annotated[int, Field(ge=64, le=4096, multiple_of=8)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
CallbackUrl = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], max_length=2000, host_required=True)
]
MAX_JOBS = 10_000
MAX_PROMPT = 4_000
MAX_METADATA_DEPTH = 16


def _no_nul(value: str) -> str:
    # Postgres text and jsonb cannot hold U+0000: refuse it here rather than fail the insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata goes into jsonb as given: no NUL in keys or strings, no NaN or
    Infinity (Python's JSON parser accepts them, jsonb does not), bounded nesting."""

    def check(item: object, path: str, depth: int) -> None:
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels at {path}")
        if isinstance(item, str) and "\x00" in item:
            raise ValueError(f"{path} must not contain NUL characters (\\u0000)")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path} must be a finite number, not {item}")
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise ValueError(f"a key in {path} contains a NUL character (\\u0000)")
                check(child, f"{path}.{key}", depth + 1)
        elif isinstance(item, list):
            for index, child in enumerate(item):
                check(child, f"{path}[{index}]", depth + 1)

    check(value, "metadata", 0)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Metadata = Annotated[dict[str, Any], AfterValidator(_storable_json)]


class JobFields(BaseModel):
    """The per-job fields that `defaults` may also set."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    format: ImageFormatName | None = None
    seed: Seed | None = None
    metadata: Metadata | None = None


class JobCreate(JobFields):
    prompt: Annotated[Text, Field(max_length=MAX_PROMPT)]
    output_name: Annotated[Text, Field(min_length=1, max_length=255)] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


PriorityName = Literal["realtime", "bulk"]
Budget = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(max_length=200)] | None = None
    priority: PriorityName = Field(
        default="bulk",
        description="realtime work is dispatched before bulk work at every provider",
    )
    budget_usd: Budget | None = Field(
        default=None,
        description="Stop dispatching before the estimated spend would pass this; the jobs "
        "left fail with code budget_exceeded",
    )
    callback_url: CallbackUrl | None = None
    metadata: Metadata | None = None
    defaults: JobFields | None = None
    jobs: Annotated[list[JobCreate], Field(min_length=1, max_length=MAX_JOBS)]


class BatchCounts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


BatchStatusName = Literal[
    "queued", "running", "succeeded", "failed", "partially_failed", "cancelled"
]


class BatchOut(BaseModel):
    id: uuid.UUID
    name: str | None
    status: BatchStatusName
    priority: PriorityName
    counts: BatchCounts
    cost_usd: float
    budget_usd: float | None
    created_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]
    callback_url: str | None


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None
