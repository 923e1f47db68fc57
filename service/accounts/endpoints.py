"""/v1/accounts: the live state of each provider account."""

from __future__ import annotations

from fastapi import APIRouter

from service.accounts import service
from service.accounts.schemas import AccountList
from service.deps import ApiKeyDep, StateDep
from service.kit.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=ERROR_RESPONSES)


@router.get("")
async def list_accounts(state: StateDep, api_key: ApiKeyDep) -> AccountList:
    """Each provider account's limits, the rate in force, slots in use, queued jobs,
    recent latencies, 429s and callbacks: why work is slow, at a glance. Any valid API
    key may read it; credentials are never shown."""
    return await service.list_accounts(state)
