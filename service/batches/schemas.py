"""Request and response bodies of /v1/batches."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, UrlConstraints, field_validator

ImageFormatName = Literal["png", "jpeg", "webp"]
Dimension = Annotated[int, Field(ge=64, le=4096, multiple_of=8)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
CallbackUrl = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], max_length=2000, host_required=True)
]
MAX_JOBS = 10_000
MAX_PROMPT = 4_000


class JobFields(BaseModel):
    """The per-job fields that `defaults` may also set."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    format: ImageFormatName | None = None
    seed: Seed | None = None
    metadata: dict[str, Any] | None = None


class JobCreate(JobFields):
    prompt: Annotated[str, Field(max_length=MAX_PROMPT)]
    output_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=200)] | None = None
    callback_url: CallbackUrl | None = None
    metadata: dict[str, Any] | None = None
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
    counts: BatchCounts
    cost_usd: float
    created_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]
    callback_url: str | None


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None
