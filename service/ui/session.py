"""Sign-in sessions and CSRF tokens for /ui.

A browser must never hold the API key itself: the login form trades it for a random,
opaque session id (an HttpOnly cookie). Redis maps the id's hash to the key's row id, so
neither a cookie nor a Redis dump gives the key, logout ends the session everywhere, and
a key revoked later stops its sessions at once (each request re-reads the key's row).
Redis losing everything costs only a new sign-in.

CSRF: every form carries a token that is an HMAC of the session id (or, before sign-in,
of a random pre-login cookie) under the service's secret key. A page on another site can
make the browser send the cookie but cannot read it, so it cannot compute the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from fastapi import Request, Response
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import ApiKey

SESSION_COOKIE = "darkroom_session"
LOGIN_COOKIE = "darkroom_login"
SESSION_TTL_S = 12 * 3600
LOGIN_TTL_S = 3600
_REDIS_PREFIX = "darkroom:ui:session:"
_TOKEN_MAX = 200  # a cookie longer than any we issue is not looked up at all


def _redis_key(session_id: str) -> str:
    return _REDIS_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _mac(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cookie(request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    return value if value and len(value) <= _TOKEN_MAX else None


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def start_session(
    redis: Redis, request: Request, response: Response, api_key_id: uuid.UUID
) -> None:
    session_id = secrets.token_urlsafe(32)
    await redis.set(_redis_key(session_id), str(api_key_id), ex=SESSION_TTL_S)
    _set_cookie(request, response, SESSION_COOKIE, session_id, SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path="/ui")


async def end_session(redis: Redis, request: Request, response: Response) -> None:
    session_id = _cookie(request)
    if session_id is not None:
        await redis.delete(_redis_key(session_id))
    response.delete_cookie(SESSION_COOKIE, path="/ui")


async def signed_in_key(redis: Redis, session: AsyncSession, request: Request) -> ApiKey | None:
    """The API key behind the request's session cookie, if it is live and not revoked."""
    session_id = _cookie(request)
    if session_id is None:
        return None
    raw = await redis.get(_redis_key(session_id))
    if raw is None:
        return None
    try:
        key_id = uuid.UUID(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return None
    query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


def session_csrf(secret: str, request: Request) -> str:
    """The token the signed-in session's forms carry ("" without a session)."""
    session_id = _cookie(request)
    return _mac(secret, "ui-csrf", session_id) if session_id else ""


def check_session_csrf(secret: str, request: Request, given: str | None) -> bool:
    session_id = _cookie(request)
    return session_id is not None and _same(given, _mac(secret, "ui-csrf", session_id))


def login_csrf(secret: str, request: Request) -> tuple[str, str | None]:
    """The login form's token, bound to a pre-login cookie; and that cookie's new value
    when the browser has none yet (set it with set_login_cookie)."""
    value = request.cookies.get(LOGIN_COOKIE)
    fresh = None
    if not value or len(value) > _TOKEN_MAX:
        value = fresh = secrets.token_urlsafe(24)
    return _mac(secret, "ui-login", value), fresh


def set_login_cookie(request: Request, response: Response, value: str) -> None:
    _set_cookie(request, response, LOGIN_COOKIE, value, LOGIN_TTL_S)


def check_login_csrf(secret: str, request: Request, given: str | None) -> bool:
    value = request.cookies.get(LOGIN_COOKIE)
    return (
        bool(value)
        and len(value or "") <= _TOKEN_MAX
        and _same(given, _mac(secret, "ui-login", value or ""))
    )
