"""/v1/callbacks: where asynchronous providers report finished generations.

No API key: a callback proves itself with the provider account's signature."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.callbacks import service
from service.callbacks.schemas import CallbackAck
from service.deps import SessionDep, StateDep
from service.kit.errors import ERROR_RESPONSES, ErrorResponse

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"], responses=ERROR_RESPONSES)


@router.post(
    "/replicate",
    responses={
        401: {"model": ErrorResponse, "description": "Signature, timestamp or body rejected"},
        503: {"model": ErrorResponse, "description": "Cannot take it now; send it again"},
    },
)
async def replicate_callback(request: Request, state: StateDep, session: SessionDep) -> CallbackAck:
    """A Replicate webhook (events filter "completed"), signed per Standard Webhooks."""
    body = await request.body()
    return await service.accept_callback(
        session, state, kind="replicate", headers=request.headers, body=body
    )
