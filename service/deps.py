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
# The Authorization header's bearer credentials, if any (checked by `authenticate`).
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_state(request: Request) -> State:
    state: State = request.app.state.darkroom
    return state


StateDep = Annotated[State, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def authenticate(
    session: AsyncSession, state: State, credentials: HTTPAuthorizationCredentials | None
) -> ApiKey:
    """The key a request's bearer credentials name, or the 401: the one check of an API
    key, for ApiKeyDep and for a route that looks it up in a session of its own (the
    events stream, which must not hold the request's session open)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send Authorization: Bearer dk_...", headers=challenge)
    api_key = await find_key(session, credentials.credentials, pepper=state.settings.secret_key)
    if api_key is None:
        raise Unauthorized("invalid or revoked API key", headers=challenge)
    return api_key


async def get_api_key(state: StateDep, session: SessionDep, credentials: BearerDep) -> ApiKey:
    return await authenticate(session, state, credentials)


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
