"""FastAPI dependencies: state, session, authenticated key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.service import find_key
from service.db import session_scope
from service.kit.errors import Unauthorized
from service.models import ApiKey
from service.state import State

_bearer = HTTPBearer(auto_error=False, description="An API key: `dk_...`")


def get_state(request: Request) -> State:
    state: State = request.app.state.darkroom
    return state


StateDep = Annotated[State, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_api_key(
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send Authorization: Bearer dk_...", headers=challenge)
    api_key = await find_key(session, credentials.credentials, pepper=state.settings.secret_key)
    if api_key is None:
        raise Unauthorized("invalid or revoked API key", headers=challenge)
    return api_key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
