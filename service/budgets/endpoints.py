"""/v1/keys/current/budget: what the calling key may spend, and what it has spent."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets import repository, service
from service.budgets.schemas import BudgetUse, KeyBudgetIn, KeyBudgetOut
from service.deps import ApiKeyDep, SessionDep
from service.kit.errors import ERROR_RESPONSES
from service.models.budget import KeyBudget

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)

_HOW = """

Limits are in USD per UTC day and per UTC calendar month. Each job reserves its
estimated price against every budget that applies when a worker dispatches it (the
batch's `budget_usd`, this key's daily and monthly limits, and the provider account's
monthly budget from the configuration), atomically across every worker; the reservation
becomes the attempt's actual cost when it ends (a failed or cancelled attempt releases
it). A job that would pass any of them is not sent: it fails with `budget_exceeded` and a
message naming the budget, e.g. "the API key's daily budget of $1.000000 would be
exceeded: $0.999000 spent or reserved, this job costs $0.003000".

Realtime batches (`priority: realtime`, such as CMS covers) spend from
`realtime_daily_usd` / `realtime_monthly_usd` when set, and then not from the shared
limits, so bulk work cannot use up what they need; when unset they share the limits with
bulk work. A limit set mid-period counts what the key already spent in that period."""


@router.get("/current/budget", description="This key's budgets and what is spent." + _HOW)
async def get_budget(session: SessionDep, api_key: ApiKeyDep) -> KeyBudgetOut:
    budget = await repository.get_key_budget(session, api_key.id)
    return await _out(session, budget)


@router.post(
    "/current/budget",
    description="Set this key's budgets: a field left out keeps its value, null removes "
    "that limit; each limit is over 0 and at most 999,999." + _HOW,
)
async def set_budget(session: SessionDep, api_key: ApiKeyDep, body: KeyBudgetIn) -> KeyBudgetOut:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    budget = await service.set_key_budget(session, api_key.id, changes)
    return await _out(session, budget)


async def _out(session: AsyncSession, budget: KeyBudget | None) -> KeyBudgetOut:
    uses = await service.key_budget_uses(session, budget)
    return KeyBudgetOut(
        daily_usd=_float(budget.daily_usd) if budget else None,
        monthly_usd=_float(budget.monthly_usd) if budget else None,
        realtime_daily_usd=_float(budget.realtime_daily_usd) if budget else None,
        realtime_monthly_usd=_float(budget.realtime_monthly_usd) if budget else None,
        usage=[
            BudgetUse(
                budget=use.budget,
                limit_usd=float(use.limit.usd),
                period_start=use.limit.key[1],
                period_end=use.limit.end,
                spent_or_reserved_usd=float(use.spent),
                remaining_usd=float(max(use.limit.usd - use.spent, Decimal(0))),
            )
            for use in uses
        ],
    )


def _float(value: object) -> float | None:
    return float(str(value)) if value is not None else None
