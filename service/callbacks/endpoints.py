"""/v1/callbacks: where asynchronous providers report finished generations.

No API key: a callback proves itself with the provider account's signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from service.callbacks import service
from service.callbacks.schemas import CallbackAck
from service.deps import SessionDep, StateDep
from service.kit.errors import ERROR_RESPONSES, ErrorResponse

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"], responses=ERROR_RESPONSES)


_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Signature, timestamp or body rejected"},
    404: {"model": ErrorResponse, "description": "No such account takes callbacks"},
    503: {"model": ErrorResponse, "description": "Cannot take it now; send it again"},
}


@router.post("/{account}", responses=_RESPONSES)
async def provider_callback(
    account: Annotated[str, Path(min_length=1, max_length=200)],
    request: Request,
    state: StateDep,
    session: SessionDep,
) -> CallbackAck:
    """A provider account's completion callback, verified the way the account's kind
    signs them (Replicate: Standard Webhooks; fal: ED25519). `/v1/callbacks/replicate`
    also takes callbacks for any Replicate account, as it did before callbacks were per
    account."""
    body = await request.body()
    return await service.accept_callback(
        session, state, account=account, headers=request.headers, body=body
    )
