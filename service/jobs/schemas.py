from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobError(BaseModel):
    code: str
    message: str


class JobOutput(BaseModel):
    url: str
    media: Literal["image", "video"]
    content_type: str
    width: int
    height: int
    duration_s: float | None = Field(None, description="A video's length in seconds")
    frames: int | None = Field(None, description="A video's frame count")
    bytes: int
    sha256: str


class JobOut(BaseModel):
    id: uuid.UUID
    batch_id: uuid.UUID
    index: int
    status: JobStatusName
    prompt: str
    model: str = Field(
        description="The model the job runs on: the one named, a route's choice, or the "
        "fallback it moved to"
    )
    route: str | None = Field(
        None,
        description="The route the job named instead of a model (params.routing says which "
        "candidate it chose and why)",
    )
    provider: str | None = Field(description="The provider account of the latest attempt")
    params: dict[str, Any]
    metadata: dict[str, Any]
    attempts: int
    error: JobError | None
    output: JobOutput | None
    queue_position: int | None = Field(
        None, description="Where the generation waits in the provider's queue (fal), while it does"
    )
    parent_job_id: uuid.UUID | None = Field(
        None, description="The job whose output this job takes as its input (a chain)"
    )
    cost_usd: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    number: int
    provider: str
    model: str | None = Field(
        None, description="The model this attempt ran on (a job that fell back has several)"
    )
    cost_usd: float = Field(
        0.0,
        description="What this attempt cost: its output's price, or what the provider "
        "charges for a failure (often nothing); the job's cost is the sum",
    )
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    http_status: int | None
    latency_ms: int | None
    error_code: str | None
    error_message: str | None
    remote_id: str | None = Field(
        description="The provider's handle for an asynchronous generation (a prediction id)"
    )
    usage: dict[str, Any] | None = Field(
        description="What the provider reported it used (tokens, seconds of compute)"
    )
    note: str | None = Field(
        None,
        description="What the outcome does not say: e.g. that this attempt resumed a "
        "generation an earlier attempt had made (its answer was lost) instead of paying again",
    )
