"""Request and response bodies of /v1/batches."""

from __future__ import annotations

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
)

from service.kit.text import JsonObject, Text, VisibleText

ImageFormatName = Literal["png", "jpeg", "webp"]
Dimension = Annotated[int, Field(ge=64, le=4096, multiple_of=8)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
CallbackUrl = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"], max_length=2000, host_required=True),
    Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000]+$"}),
]
MAX_JOBS = 10_000
MAX_PROMPT = 4_000
MAX_METADATA_DEPTH = 16


def _bounded_depth(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is stored and sent back in every webhook: keep it shallow. (What it may
    contain, the body guard in kit.json_guard has already checked.)"""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return value


Metadata = Annotated[JsonObject, AfterValidator(_bounded_depth)]


class JobFields(BaseModel):
    """The per-job fields that `defaults` may also set."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="A model this server is configured to run; any other is refused, naming "
        "the job",
    )
    width: Dimension | None = None
    height: Dimension | None = None
    format: ImageFormatName | None = None
    seed: Seed | None = None
    metadata: Metadata | None = Field(
        default=None,
        description=f"Any JSON object, nested at most {MAX_METADATA_DEPTH} levels; kept as given "
        "and sent back in every webhook",
    )


class JobCreate(JobFields):
    prompt: Annotated[VisibleText, Field(min_length=1, max_length=MAX_PROMPT)]
    output_name: Annotated[Text, Field(min_length=1, max_length=255)] | None = None


PriorityName = Literal["realtime", "bulk"]
# The column is NUMERIC(12, 6): six digits before the point, so a budget that rounds to a
# million would not fit.
Budget = Annotated[float, Field(gt=0, le=999_999, allow_inf_nan=False)]


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
    metadata: Metadata | None = Field(
        default=None,
        description=f"Any JSON object, nested at most {MAX_METADATA_DEPTH} levels; kept as given "
        "and sent back in every webhook",
    )
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
