"""Bodies of /v1/keys/current/budget."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The columns are NUMERIC(12, 6): a limit that rounds to a million would not fit (as a
# batch's budget_usd, at most 999,999).
Limit = Annotated[float, Field(gt=0, le=999_999, allow_inf_nan=False)]
BudgetName = Literal["daily", "monthly", "realtime_daily", "realtime_monthly"]


class KeyBudgetIn(BaseModel):
    """Each field is optional: one left out keeps its value, null removes that limit."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: Limit | None = Field(
        None, description="What the key may spend per UTC day (null: no daily limit)"
    )
    monthly_usd: Limit | None = Field(
        None, description="What the key may spend per UTC month (null: no monthly limit)"
    )
    realtime_daily_usd: Limit | None = Field(
        None,
        description="Realtime batches' own daily allowance; when set, realtime work spends "
        "from it instead of from daily_usd (null: realtime work shares daily_usd)",
    )
    realtime_monthly_usd: Limit | None = Field(
        None,
        description="Realtime batches' own monthly allowance; when set, realtime work "
        "spends from it instead of from monthly_usd",
    )


class BudgetUse(BaseModel):
    budget: BudgetName
    limit_usd: float
    period_start: date = Field(description="The UTC day or month this counts")
    period_end: date = Field(description="The limit starts again from 0 on this UTC day")
    spent_or_reserved_usd: float = Field(
        description="What the period's attempts cost, plus what running ones reserved"
    )
    remaining_usd: float


class KeyBudgetOut(BaseModel):
    daily_usd: float | None
    monthly_usd: float | None
    realtime_daily_usd: float | None
    realtime_monthly_usd: float | None
    usage: list[BudgetUse] = Field(description="Each limit set, in its current period")
