"""/v1/usage: what was spent and made, for the invoice and the budget."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import ApiKeyDep, SessionDep
from service.kit.errors import ERROR_RESPONSES
from service.usage import service
from service.usage.repository import GROUP_BYS
from service.usage.schemas import UsageOut

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)


@router.get("")
async def get_usage(
    session: SessionDep,
    api_key: ApiKeyDep,
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="Start (inclusive), ISO 8601; no offset means UTC. "
            "Default: the start of the UTC month.",
        ),
    ] = None,
    to: Annotated[
        datetime | None,
        Query(description="End (exclusive), ISO 8601; no offset means UTC. Default: now."),
    ] = None,
    group_by: Annotated[
        str,
        Query(
            max_length=50,
            description="model, account (provider account), day (UTC), batch or api_key",
            json_schema_extra={"enum": list(GROUP_BYS)},
        ),
    ] = "model",
) -> UsageOut:
    """Spend, images, videos and seconds of video of the attempts that finished in
    [from, to), per group and in total. The figures are the attempts' own costs, so
    they add up, to the cent, to the jobs' and batches' costs. Darkroom is run by one
    team: every API key sees the whole service's usage, not only its own."""
    return await service.usage(session, from_, to, group_by)
