"""The OAuth 2.0 token endpoint, client-credentials grant: the `auth` block, the request
(Baidu's query-string form or RFC 6749's form body or Basic auth) and its answer,
classified once.

Baidu (https://aip.baidubce.com/oauth/2.0/token) answers `{"access_token", "expires_in",
...}`, or `{"error": "invalid_client", "error_description": "unknown client id"}`. 5xx,
429, timeouts and resets are retryable; any other 4xx, or an error body that is not
transient, is permanent (`provider_auth_failed`) with the endpoint's description.
Nothing here puts the client id or secret in a message: the URL is shown without its
query and the endpoint's own text is scrubbed of both values.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from service.logging import redact_url
from service.providers.base import (
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)

AUTH_FAILED = "provider_auth_failed"
BODY_LIMIT = 64 * 1024
# Without expires_in (RFC 6749 only recommends it), a token is assumed to last this long;
# a 401 refreshes it sooner if the API thinks otherwise.
DEFAULT_LIFETIME_S = 3600.0
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


class OAuthClientCredentials(BaseModel):
    """`auth: {type: oauth_client_credentials, token_url, client_id_env, client_secret_env}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["oauth_client_credentials"]
    token_url: str
    client_id_env: str
    client_secret_env: str
    # How the credentials reach the token endpoint: Baidu documents the query string
    # (`POST /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..`);
    # "form" (client_secret_post) and "basic" (client_secret_basic) are RFC 6749's.
    client_auth: Literal["query", "form", "basic"] = "query"
    scope: str | None = None
    # Refresh this long before the token expires (at most a fifth of its lifetime).
    refresh_margin_s: Annotated[float, Field(ge=0)] = 300.0


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # wall-clock seconds: the value is shared between hosts
    refresh_at: float
    lifetime_s: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.value,
                "expires_at": self.expires_at,
                "refresh_at": self.refresh_at,
                "lifetime_s": self.lifetime_s,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Token | None:
        try:
            data = json.loads(raw)
            return cls(
                str(data["access_token"]),
                float(data["expires_at"]),
                float(data["refresh_at"]),
                float(data["lifetime_s"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def client_credentials(account: str, auth: OAuthClientCredentials) -> tuple[str, str]:
    """(client id, secret) from the environment; a missing one names its variable."""
    client_id = os.environ.get(auth.client_id_env, "")
    secret = os.environ.get(auth.client_secret_env, "")
    pairs = ((auth.client_id_env, client_id), (auth.client_secret_env, secret))
    missing = [name for name, value in pairs if not value]
    if missing:
        raise ProviderPermanentError(
            "provider_not_configured",
            f"{account}: no OAuth client credentials (set {' and '.join(missing)})",
        )
    return client_id, secret


def token_request(
    client: httpx.AsyncClient,
    auth: OAuthClientCredentials,
    client_id: str,
    secret: str,
    timeout_s: float,
) -> httpx.Request:
    fields = {"grant_type": "client_credentials"}
    if auth.scope:
        fields["scope"] = auth.scope
    credentials = {"client_id": client_id, "client_secret": secret}
    headers = {"Accept": "application/json", "User-Agent": "Darkroom/0.1"}
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    if auth.client_auth == "query":
        params = fields | credentials
        return client.build_request(
            "POST", auth.token_url, params=params, headers=headers, timeout=timeout
        )
    if auth.client_auth == "form":
        fields |= credentials
    else:
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"  # RFC 6749 2.3.1
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return client.build_request(
        "POST", auth.token_url, data=fields, headers=headers, timeout=timeout
    )


async def fetch_token(
    client: httpx.AsyncClient,
    account: str,
    auth: OAuthClientCredentials,
    *,
    timeout_s: float,
    now: Callable[[], float],
) -> Token:
    """One request to the token endpoint: a token, or a classified ProviderError."""
    client_id, secret = client_credentials(account, auth)
    scrub = _scrubber(client_id, secret)
    where = f"{account}: token endpoint {redact_url(auth.token_url)}"
    request = token_request(client, auth, client_id, secret, timeout_s)
    try:
        async with asyncio.timeout(timeout_s + 10):
            response = await client.send(request, stream=True)
            try:
                body = await _read_capped(where, response)
            finally:
                await response.aclose()
    except ProviderError:
        raise
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ProviderRetryableError("timeout", f"{where}: timed out") from exc
    except httpx.RequestError as exc:
        # The text of a transport error may quote the URL; only its type is kept.
        raise ProviderRetryableError("connection_error", f"{where}: {type(exc).__name__}") from exc
    return parse_token_response(
        where, response.status_code, response.headers, body, scrub, now(), auth.refresh_margin_s
    )


def parse_token_response(
    where: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    scrub: Callable[[str], str],
    now: float,
    margin_s: float,
) -> Token:
    """The token, or the classified error. An error body with a 200 is an error too."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if status < 400 and data is None:
        raise ProviderRetryableError(
            "malformed_response", f"{where}: the answer is not JSON", http_status=status
        )
    data = data if isinstance(data, dict) else {}
    if status >= 400 or data.get("error") is not None:
        raise _endpoint_error(where, status, headers, data, body, scrub)
    value = data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ProviderRetryableError(
            "malformed_response", f"{where}: the answer has no access_token", http_status=status
        )
    lifetime_s = _lifetime(data.get("expires_in"))
    margin = min(margin_s, lifetime_s / 5)
    return Token(value, now + lifetime_s, now + lifetime_s - margin, lifetime_s)


def _lifetime(value: Any) -> float:
    if isinstance(value, bool):
        return DEFAULT_LIFETIME_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_S
    return seconds if 0 < seconds < float("inf") else DEFAULT_LIFETIME_S


def _endpoint_error(
    where: str,
    status: int,
    headers: Mapping[str, str],
    data: Mapping[str, Any],
    body: bytes,
    scrub: Callable[[str], str],
) -> ProviderError:
    code = data.get("error")
    description = data.get("error_description")
    parts = [part for part in (code, description) if isinstance(part, str) and part]
    if not parts:
        parts = [" ".join(body[:200].decode("utf-8", "replace").split()) or "no message"]
    message = scrub(f"{where} answered {status}: {': '.join(parts)}")
    if status == 429:
        retry_after = headers.get("retry-after", "").strip()
        hint = float(retry_after) if retry_after.isdigit() else None
        return ProviderRateLimited(message, retry_after_s=hint, http_status=status)
    if status >= 500 or status == 408 or code in _TRANSIENT_ERRORS:
        return ProviderRetryableError("server_error", message, http_status=status)
    return ProviderPermanentError(AUTH_FAILED, message, http_status=status)


async def _read_capped(where: str, response: httpx.Response) -> bytes:
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > BODY_LIMIT:
            raise ProviderRetryableError(
                "response_too_large", f"{where}: the answer is over {BODY_LIMIT} bytes"
            )
    return bytes(buffer)


def _scrubber(*values: str) -> Callable[[str], str]:
    """Blank out credentials in text that came from elsewhere (an echoed request)."""
    known = [value for value in values if len(value) >= 4]

    def scrub(text: str) -> str:
        for value in known:
            text = text.replace(value, "***")
        return text

    return scrub
