"""OAuth 2.0 client-credentials tokens for APIs that take short-lived bearer tokens
(ERNIE-Image on Baidu AI Cloud's qianfan, and any API that issues them).

An openai-kind account with an `auth` block gets its `Authorization: Bearer` token from
a `TokenSource` instead of `token_env`:
- A token is fetched once and shared through Redis by every worker process (one key per
  account and client), so a hundred workers make one token request, not a hundred. A
  Redis lock (SET NX) picks the one process that fetches; the others wait for its answer,
  or keep using the still-valid old token while a refresh is under way.
- It is refreshed before it expires (`refresh_margin_s`, at most a fifth of its life).
- A 401 from the API invalidates it (only if it is still the shared one, so that N
  workers that saw the same 401 cause one fetch) and the request is sent once more with a
  fresh token (`with_token`); a 401 again is permanent: `provider_auth_failed`. Resending
  is safe: a 401 means the API did nothing, so nothing is paid twice.
- Token endpoint errors: 5xx, 429, timeouts and resets are retryable; a 4xx (a wrong
  client id or secret) is permanent, with the endpoint's `error_description`.

The client id and secret are read from the environment when a token is fetched. They are
never logged and never put in an error: messages name the account and the variables,
the endpoint's URL loses its query (Baidu takes the credentials there), and any text from
the endpoint is scrubbed of both values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.kit.tls import tls_context
from service.logging import get_logger, redact_httpx_urls
from service.providers.base import ProviderError, ProviderPermanentError, ProviderRetryableError
from service.providers.oauth_endpoint import (
    AUTH_FAILED,
    OAuthClientCredentials,
    Token,
    fetch_token,
)

__all__ = [
    "AUTH_FAILED",
    "BearerSource",
    "NoTokenYet",
    "OAuthClientCredentials",
    "TokenSource",
    "with_token",
]

log = get_logger(__name__)

T = TypeVar("T")
KEY_PREFIX = "darkroom:oauth:"
# How long a waiting process polls for the token another one is fetching.
WAIT_STEP_S = 0.05
# A failed fetch's error is kept this long for the processes that waited on it.
ERROR_TTL_MS = 5000

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_INVALIDATE = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['access_token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class NoTokenYet(Exception):
    """The cause of an error raised while getting a token: the API request it was for
    was never sent (so it cannot have been paid for: http.may_have_reached_provider)."""


class BearerSource(Protocol):
    """What ProviderHTTP needs from a token source."""

    async def token(self) -> str: ...

    async def invalidate(self, token: str) -> None: ...

    async def aclose(self) -> None: ...


async def with_token(account: str, source: BearerSource, send: Callable[[str], Awaitable[T]]) -> T:
    """`send(token)`; after a 401, once more with a fresh token. A second 401 is
    permanent, `provider_auth_failed`."""
    token = await source.token()
    try:
        return await send(token)
    except ProviderError as exc:
        if exc.http_status != 401:
            raise
        log.info("provider_token_refused", account=account)
    await source.invalidate(token)
    fresh = await source.token()  # its own errors (the endpoint's 401) pass as they are
    try:
        return await send(fresh)
    except ProviderError as exc:
        if exc.http_status != 401:
            raise
        raise ProviderPermanentError(
            AUTH_FAILED,
            f"{account}: the API refused a freshly issued OAuth token: {exc.message}",
            http_status=401,
        ) from exc


class TokenSource:
    """One account's OAuth token, shared through Redis (or kept in this process when there
    is no Redis), fetched by one process at a time."""

    def __init__(
        self,
        account: str,
        auth: OAuthClientCredentials,
        *,
        redis: aioredis.Redis | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.auth = auth
        self._redis = redis
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(follow_redirects=False, verify=tls_context())
        )
        self._owns_client = client is None
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()  # one coroutine per process goes to Redis/the endpoint
        self._local: Token | None = None
        self._lock_ms = int((timeout_s + 5) * 1000)
        if redis is not None:
            self._release = redis.register_script(_RELEASE)
            self._invalidate = redis.register_script(_INVALIDATE)
        redact_httpx_urls()  # httpx logs request URLs, and Baidu's carries the secret

    # -- the interface -------------------------------------------------------------------

    async def token(self) -> str:
        try:
            return await self._token()
        except ProviderError as exc:
            marker = NoTokenYet(self.account)
            marker.__cause__ = exc.__cause__  # the transport error stays in the traceback
            raise exc from marker

    async def _token(self) -> str:
        held = await self._load()
        if held is not None and self._clock() < held.refresh_at:
            return held.value
        async with self._lock:
            held = await self._load()
            now = self._clock()
            if held is not None and now < held.refresh_at:
                return held.value
            usable = held if held is not None and now < held.expires_at else None
            return await self._renew(usable)

    async def invalidate(self, token: str) -> None:
        """Forget `token` (the API refused it), unless another process already replaced it."""
        if self._local is not None and self._local.value == token:
            self._local = None
        if self._redis is not None:
            await self._guard(self._invalidate(keys=[self._key()], args=[token]))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- sharing ---------------------------------------------------------------------------

    def _key(self) -> str:
        """Per account and client: another client id (or token URL) is another token."""
        client_id = os.environ.get(self.auth.client_id_env, "")
        digest = hashlib.sha256(f"{self.auth.token_url}\0{client_id}".encode()).hexdigest()
        return f"{KEY_PREFIX}{self.account}:{digest[:16]}"

    async def _load(self) -> Token | None:
        if self._redis is None:
            return self._local
        raw = await self._guard(self._redis.get(self._key()))
        return Token.from_json(raw) if raw else None

    async def _renew(self, usable: Token | None) -> str:
        if self._redis is None:
            return await self._fetch_and_keep(usable)
        key = self._key()
        deadline = time.monotonic() + self._lock_ms / 1000 + 1
        while time.monotonic() < deadline:
            owner = secrets.token_hex(8)
            if await self._guard(self._redis.set(f"{key}:lock", owner, nx=True, px=self._lock_ms)):
                try:
                    return await self._fetch_and_keep(usable, owner=owner)
                finally:
                    await self._guard(self._release(keys=[f"{key}:lock"], args=[owner]))
            if usable is not None:
                return usable.value  # another process is refreshing; the old one still works
            waited = await self._wait_for_other(key)
            if waited is not None:
                return waited
        raise ProviderRetryableError(
            "timeout", f"{self.account}: no OAuth token after waiting for another worker's fetch"
        )

    async def _wait_for_other(self, key: str) -> str | None:
        """The token another process fetches; its error if it failed; None once its lock
        is gone without either (it died: the caller takes the lock itself)."""
        assert self._redis is not None
        owner = await self._guard(self._redis.get(f"{key}:lock"))
        while owner is not None:
            await asyncio.sleep(WAIT_STEP_S)
            held = await self._load()
            if held is not None and self._clock() < held.expires_at:
                return held.value
            failed = await self._guard(self._redis.get(f"{key}:error"))
            if failed is not None:
                error = _stored_error(failed, owner)
                if error is not None:
                    raise error
            owner = await self._guard(self._redis.get(f"{key}:lock"))
        return None

    async def _fetch_and_keep(self, usable: Token | None, *, owner: str = "") -> str:
        try:
            token = await fetch_token(
                self._client, self.account, self.auth, timeout_s=self._timeout_s, now=self._clock
            )
        except ProviderError as exc:
            if self._redis is not None:
                await self._guard(
                    self._redis.set(
                        f"{self._key()}:error", _error_json(exc, owner), px=ERROR_TTL_MS
                    )
                )
            if usable is None:
                raise
            log.warning("provider_token_refresh_failed", account=self.account, error=exc.message)
            return usable.value
        if self._redis is None:
            self._local = token
        else:
            ttl_ms = max(1, int(token.lifetime_s * 1000))
            await self._guard(self._redis.set(self._key(), token.to_json(), px=ttl_ms))
        log.info("provider_token_fetched", account=self.account, expires_in=token.lifetime_s)
        return token.value

    async def _guard(self, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except RedisError as exc:
            raise ProviderRetryableError(
                "token_cache_unavailable",
                f"{self.account}: Redis (where OAuth tokens are shared): {type(exc).__name__}",
            ) from exc


def _error_json(error: ProviderError, owner: str) -> str:
    return json.dumps(
        {
            "owner": owner,
            "code": error.code,
            "message": error.message,
            "retryable": error.retryable,
            "http_status": error.http_status,
        }
    )


def _stored_error(raw: bytes | str, owner: bytes | str) -> ProviderError | None:
    """The error the fetch we waited on ended with (not an older one)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    expected = owner.decode() if isinstance(owner, bytes) else owner
    if not isinstance(data, dict) or data.get("owner") != expected:
        return None
    kind = ProviderRetryableError if data["retryable"] else ProviderPermanentError
    return kind(data["code"], data["message"], http_status=data["http_status"])
