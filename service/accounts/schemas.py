from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LimitsOut(BaseModel):
    rate_per_s: float | None = Field(description="Configured submissions per second (None: none)")
    burst: int
    max_concurrent: int | None = Field(description="Generations in flight at once (None: none)")


class QueuedOut(BaseModel):
    realtime: int
    bulk: int


class LatencyOut(BaseModel):
    p50_s: float | None = Field(description="Median of recent generation times, seconds")
    p90_s: float | None
    samples: int = Field(description="Recent completions these are drawn from")


class CallbacksOut(BaseModel):
    requested: bool = Field(description="Whether this account's providers are asked to call back")
    arriving: bool = Field(
        description="Callbacks have been seen and polls may count on them; false while "
        "none has arrived or while they are missing"
    )
    missing: bool = Field(
        description="Generations keep being completed by polls while callbacks were requested"
    )
    last_arrived_at: datetime | None
    completed_by_polls_in_a_row: int


class AccountOut(BaseModel):
    """What an operator needs to see why work at one provider account is slow."""

    name: str
    kind: str
    limits: LimitsOut
    effective_rate_per_s: float | None = Field(
        description="The rate in force after 429s slowed the account down (None: unlimited)"
    )
    blocked_for_s: float = Field(description="Seconds left of a 429's hinted wait")
    slots_in_use: int
    queued: QueuedOut
    latency: LatencyOut
    rate_limited_last_minute: int = Field(description="429s answered in the last 60 s")
    callbacks: CallbacksOut


class AccountList(BaseModel):
    items: list[AccountOut]
