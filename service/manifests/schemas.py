"""The manifest's shape, for the OpenAPI document (the body itself is streamed)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ManifestTotals(BaseModel):
    jobs: int
    by_status: dict[str, int] = Field(description="Jobs by status, every status present")
    cost_usd: float
    cost_by_model: dict[str, float] = Field(description="cost_usd by the model each attempt ran")
    wall_time_s: float = Field(description="From submit to completion (or to now, if running)")


class ManifestJob(BaseModel):
    index: int
    job_id: str
    variables: dict[str, Any] = Field(description="The row's own columns (sku, name, ...)")
    file: str | None = Field(
        description="The output's file name in the archive and in `darkroom download`'s "
        "folder (its output name, de-duplicated); null without an output"
    )
    output_name: str = Field(description="The output name the batch gave the job")
    prompt: str
    model: str
    route: str | None
    provider: str | None
    status: str
    url: str | None
    media: str
    content_type: str | None
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    duration_s: float | None
    seed: int | None
    cost_usd: float
    generation_s: float | None = Field(description="How long the successful generation took")
    attempts: int
    error_code: str | None
    error: str | None = Field(description="The error message of a job that did not succeed")
    finished_at: str | None


class Manifest(BaseModel):
    batch_id: str
    name: str | None
    status: str
    created_at: str
    completed_at: str | None
    totals: ManifestTotals
    variables: list[str] = Field(description="Every variable name the jobs have")
    jobs: list[ManifestJob]
