"""GET /v1/usage: spend and output counts, per group and in total."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.usage.repository import GroupBy


class UsageFigures(BaseModel):
    cost_usd: float = Field(
        description="USD spent: the sum of the attempts' costs, rounded to the micro-dollar "
        "(6 decimals). Failed attempts count what the provider charges for them."
    )
    images: int = Field(description="Images made (succeeded attempts of image jobs)")
    videos: int = Field(description="Videos made (succeeded attempts of video jobs)")
    video_seconds: float = Field(description="Seconds of the videos made")
    attempts: int = Field(description="Attempts that finished in the window, of every outcome")
    failed_attempts: int = Field(
        description="Attempts that ended in an error at the provider (failed, or retried); "
        "429s, cancellations and attempts lost with a worker are not counted"
    )


class UsageGroup(UsageFigures):
    key: str | None = Field(
        description="The group: a model, a provider account, a UTC day (YYYY-MM-DD), a "
        "batch id or an API key id. Null for attempts made before models were recorded."
    )
    name: str | None = Field(
        default=None, description="The batch's name, or the API key's name (never the key)"
    )
    prefix: str | None = Field(
        default=None, description="The API key's prefix, to recognise it (group_by=api_key)"
    )


class UsageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from", description="Start of the window (inclusive)")
    to: datetime = Field(description="End of the window (exclusive)")
    group_by: GroupBy
    groups: list[UsageGroup]
    totals: UsageFigures = Field(description="Every group together")
