"""HTTP plumbing shared by every provider that speaks HTTP.

Error responses are classified here, once, so that a 429 or a 503 means the same to the
dispatch engine whichever provider sent it. Bodies are streamed and capped: a provider
(or a compromised CDN) that sends 80 MiB is cut off at the cap, never buffered whole.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from service.config import Settings, get_settings
from service.kit.ssrf import guarded_client
from service.kit.tls import tls_context
from service.providers.account import AccountConfig
from service.providers.base import (
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.providers.oauth import BearerSource, NoTokenYet, with_token

USER_AGENT = "Darkroom/0.1"
CONNECT_TIMEOUT_S = 10.0
JSON_BODY_LIMIT = 16 * 1024 * 1024
IMAGE_BODY_LIMIT = 64 * 1024 * 1024
# An error body is only read for its message; the rest is dropped.
ERROR_BODY_LIMIT = 64 * 1024
_MESSAGE_CHARS = 500

_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
_BILLING_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_RETRYABLE_4XX = {408: "request_timeout", 409: "conflict", 425: "too_early"}
# Multipart files: (field name, (file name, bytes, content type)), a field may repeat.
Files = list[tuple[str, tuple[str, bytes, str]]]


def account_timeout(account: AccountConfig) -> httpx.Timeout:
    return httpx.Timeout(account.timeout_s, connect=CONNECT_TIMEOUT_S)


def build_client(account: AccountConfig, token: str | None = None) -> httpx.AsyncClient:
    """A client for one account. The token is also sent per request (see ProviderHTTP),
    so an injected client without it works the same."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=account.base_url,
        headers=headers,
        timeout=account_timeout(account),
        follow_redirects=False,
        verify=tls_context(),
    )


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None] | None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return (parsed.scheme, parsed.host, parsed.port) if parsed.host else None


class ProviderHTTP:
    """One account's API calls: auth, timeouts, size caps and error classification."""

    def __init__(
        self,
        name: str,
        account: AccountConfig,
        client: httpx.AsyncClient | None = None,
        *,
        downloads: httpx.AsyncClient | None = None,
        settings: Settings | None = None,
        bearer: BearerSource | None = None,
        auth_scheme: str = "Bearer",
    ) -> None:
        self.name = name
        # The word before the token in the Authorization header (fal: "Key").
        self.auth_scheme = auth_scheme
        self.account = account
        self.token = account.token()
        # An OAuth token source (service.providers.oauth) instead of token_env: API calls
        # take its token, and a 401 refreshes it once and sends the request again.
        self._bearer = bearer
        self._client = client if client is not None else build_client(account, self.token)
        self._owns_client = client is None
        # Output URLs are the provider's choice, not the operator's: they are fetched
        # through the SSRF guard. An injected client (a test's mock) serves both.
        self._downloads = downloads if downloads is not None else client
        self._owns_downloads = False
        self._settings = settings
        self._timeout = account_timeout(account)
        # A slow-dripping body could dodge the per-read timeout; this bounds the whole call.
        self._deadline_s = CONNECT_TIMEOUT_S + account.timeout_s
        self._api_origin = _origin(account.base_url)

    def require_configured(self) -> None:
        if not self.account.base_url:
            raise ProviderPermanentError(
                "provider_not_configured", f"{self.name}: no base_url configured"
            )
        if not self.token and self._bearer is None:
            where = (
                f"set the environment variable {self.account.token_env}"
                if self.account.token_env
                else "the account has no token_env"
            )
            raise ProviderPermanentError(
                "provider_not_configured", f"{self.name}: no API token ({where})"
            )

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        files: Files | None = None,
    ) -> dict[str, Any]:
        """Call the API and return its JSON object; any other outcome raises ProviderError.
        `form` and `files` make it a multipart/form-data request (OpenAI's image edits)."""
        return await self._request_json(
            method,
            join_url(self.account.base_url, path),
            json_body=json_body,
            form=form,
            files=files,
        )

    async def get_json_url(self, url: str) -> dict[str, Any]:
        """GET an absolute URL the API handed out (a pagination cursor's `next`). The
        token goes with it only on the API's own origin; anything else is refused."""
        if self._api_origin is None or _origin(url) != self._api_origin:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: a link off the API's origin: {url[:200]}"
            )
        return await self._request_json("GET", url)

    async def _request_json(
        self,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        files: Files | None = None,
    ) -> dict[str, Any]:
        self.require_configured()

        async def send(token: str) -> bytes:
            request = self._client.build_request(
                method,
                url,
                json=json_body,
                data=form,
                files=files,
                headers={"Authorization": f"{self.auth_scheme} {token}", "User-Agent": USER_AGENT},
                timeout=self._timeout,
            )
            return await self._send(request, JSON_BODY_LIMIT)

        if self._bearer is None:
            body = await send(self.token or "")
        else:
            body = await with_token(self.name, self._bearer, send)
        return parse_json_object(self.name, body)

    async def download(self, url: str, *, limit: int = IMAGE_BODY_LIMIT) -> bytes:
        """Fetch an output file. The token goes only to the API's own origin, never to a CDN."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: output URL is not valid: {exc}"
            ) from exc
        if target.scheme not in ("http", "https"):
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: output URL is not http(s): {url[:200]}"
            )
        client = self._download_client()
        request = client.build_request(
            "GET", target, headers={"User-Agent": USER_AGENT}, timeout=self._timeout
        )
        if self.token and self._api_origin is not None and _origin(target) == self._api_origin:
            request.headers["Authorization"] = f"{self.auth_scheme} {self.token}"
        else:
            request.headers.pop("Authorization", None)
        # Every redirect hop connects through the guard too.
        return await self._send(request, limit, follow_redirects=True, client=client)

    def _download_client(self) -> httpx.AsyncClient:
        """The guarded client for output URLs, made on first use from the service's
        settings (the process's when none were given) unless a client was given."""
        if self._downloads is None:
            settings = self._settings or get_settings()
            self._downloads = guarded_client(settings, headers={"User-Agent": USER_AGENT})
            self._owns_downloads = True
        return self._downloads

    async def _send(
        self,
        request: httpx.Request,
        limit: int,
        *,
        follow_redirects: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> bytes:
        status, headers, body = await exchange(
            self.name,
            client if client is not None else self._client,
            request,
            limit,
            self._deadline_s,
            follow_redirects=follow_redirects,
        )
        if 200 <= status < 300:
            return body
        raise classify_error_response(self.name, status, headers, body)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
        if self._bearer is not None:
            await self._bearer.aclose()
        if self._owns_downloads and self._downloads is not None:
            await self._downloads.aclose()


@asynccontextmanager
async def streamed(
    client: httpx.AsyncClient,
    request: httpx.Request,
    deadline_s: float,
    *,
    follow_redirects: bool = False,
) -> AsyncIterator[httpx.Response]:
    """Send `request` streamed, within one deadline for the whole exchange (a server
    dripping bytes could dodge the per-read timeout), and close the response after."""
    async with asyncio.timeout(deadline_s):
        response = await client.send(request, stream=True, follow_redirects=follow_redirects)
        try:
            yield response
        finally:
            await response.aclose()


async def exchange(
    provider: str,
    client: httpx.AsyncClient,
    request: httpx.Request,
    limit: int,
    deadline_s: float,
    *,
    follow_redirects: bool = False,
) -> tuple[int, httpx.Headers, bytes]:
    """(status, headers, body) of one request: a 2xx body capped at `limit`, any other
    truncated to ERROR_BODY_LIMIT. Transport failures raise ProviderRetryableError; the
    status is the caller's to judge."""
    try:
        async with streamed(
            client, request, deadline_s, follow_redirects=follow_redirects
        ) as response:
            if response.is_success:
                body = await read_capped(provider, response, limit)
            else:
                body = await read_capped(provider, response, ERROR_BODY_LIMIT, truncate=True)
    except ProviderError:
        raise
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ProviderRetryableError(
            "timeout", f"{provider}: {type(exc).__name__} after {deadline_s:g}s budget"
        ) from exc
    except httpx.DecodingError as exc:
        raise ProviderRetryableError(
            "malformed_response", f"{provider}: undecodable body: {exc}"
        ) from exc
    except httpx.RequestError as exc:
        raise ProviderRetryableError(
            "connection_error", f"{provider}: {type(exc).__name__}: {exc or 'no detail'}"
        ) from exc
    return response.status_code, response.headers, body


async def read_capped(
    provider: str, response: httpx.Response, limit: int, *, truncate: bool = False
) -> bytes:
    """Read a streamed body up to `limit` bytes (after decompression). Past it: raise
    `response_too_large`, or with `truncate` keep the first `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _too_large(provider, limit, f"Content-Length {declared}")
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        room = limit - len(buffer)
        if len(chunk) > room:
            if truncate:
                buffer += chunk[:room]
                break
            raise _too_large(provider, limit, "body")
        buffer += chunk
    return bytes(buffer)


def _too_large(provider: str, limit: int, what: str) -> ProviderRetryableError:
    return ProviderRetryableError(
        "response_too_large", f"{provider}: {what} is over the {limit // (1024 * 1024)} MiB cap"
    )


def parse_json_object(provider: str, body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ProviderRetryableError(
            "malformed_response", f"{provider}: response is not JSON: {_snippet(body)}"
        ) from exc
    if not isinstance(value, dict):
        raise ProviderRetryableError(
            "malformed_response", f"{provider}: expected a JSON object, got {_snippet(body)}"
        )
    return value


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace").strip()
    return repr(text) if text else "an empty body"


# --- error classification -------------------------------------------------------------


def error_details(body: bytes) -> tuple[str, str | None, Any]:
    """(message, code, parsed JSON) from the error bodies providers send: OpenAI's
    {"error": {"message", "code", "type"}}, problem+json {"title", "detail"} (Replicate),
    FastAPI's {"detail": [...]}, {"message"}, {"msg"}, {"error": "..."} or plain text."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    message: str | None = None
    code: str | None = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = _text(error.get("message"))
            code = _text(error.get("code")) or _text(error.get("type"))
        elif isinstance(error, str):
            message = error
        message = message or _detail_text(data.get("detail")) or _text(data.get("message"))
        message = message or _text(data.get("msg"))  # Atlas Cloud: {"code", "msg"}
        message = message or _text(data.get("title"))
        code = code or _text(data.get("code")) or _text(data.get("type"))
    if not message:
        message = _html_title(body) or body.decode("utf-8", "replace").strip() or "no message"
    message = " ".join(message.split())
    if len(message) > _MESSAGE_CHARS:
        message = message[: _MESSAGE_CHARS - 3] + "..."
    return message, code, data


_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _html_title(body: bytes) -> str | None:
    """A CDN's error page says what happened in its <title>; the rest is markup."""
    match = _TITLE.search(body[:4096])
    return match.group(1).decode("utf-8", "replace").strip() or None if match else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _detail_text(detail: Any) -> str | None:
    if isinstance(detail, list):
        parts = [
            str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail
        ]
        return "; ".join(parts) or None
    return _text(detail)


def classify_error_response(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> ProviderError:
    """The one place an HTTP error becomes rate-limited, retryable or permanent."""
    message, code, data = error_details(body)
    text = f"{provider} {status}: {message}"
    if code in _CONTENT_POLICY_CODES:
        return ProviderPermanentError("content_policy", text, http_status=status)
    if code in _BILLING_CODES or status == 402:
        return ProviderPermanentError("insufficient_quota", text, http_status=status)
    if status == 429:
        hint = retry_after_hint(headers, data, message, now=now)
        return ProviderRateLimited(text, retry_after_s=hint, http_status=status)
    if status in (401, 403):
        return ProviderPermanentError("auth", text, http_status=status)
    if status >= 500:
        return ProviderRetryableError("server_error", text, http_status=status)
    if status in _RETRYABLE_4XX:
        return ProviderRetryableError(_RETRYABLE_4XX[status], text, http_status=status)
    if 400 <= status < 500:
        return ProviderPermanentError("invalid_input", text, http_status=status)
    return ProviderRetryableError("unexpected_status", text, http_status=status)


def may_have_reached_provider(error: ProviderError) -> bool:
    """False when a request certainly created nothing at the provider: the connection
    was never made, or the provider answered with a 4xx. A resubmission after any other
    failure (a reset or timeout after sending, a 5xx, an unreadable 2xx) may duplicate a
    billed generation, so an asynchronous submission should be looked for, not repeated."""
    if isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return False
    if isinstance(error.__cause__, NoTokenYet):  # the request itself was never sent
        return False
    return not (error.http_status is not None and 400 <= error.http_status < 500)


# --- retry hints ----------------------------------------------------------------------

_UNIT_S = {"ms": 0.001, "millisecond": 0.001, "s": 1.0, "sec": 1.0, "second": 1.0}
_UNIT_S |= {"m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_NUMBER_UNIT = (
    r"(\d+(?:\.\d+)?)\s*(milliseconds?|ms|hours?|h|minutes?|mins?|m|seconds?|secs?|s)?(?![a-z])"
)
_HINT = re.compile(
    r"(?:resets?|try again|retry|available|wait)\s+(?:in|after)\s*~?\s*"
    rf"((?:{_NUMBER_UNIT}\s*)+)",
    re.IGNORECASE,
)
_PART = re.compile(_NUMBER_UNIT, re.IGNORECASE)


def retry_after_hint(
    headers: Mapping[str, str], data: Any, message: str, *, now: float | None = None
) -> float | None:
    """Seconds the provider asks us to wait: `retry-after-ms`, `Retry-After` (seconds or an
    HTTP date), a `retry_after` field in the body, or a phrase in the message."""
    lower = {key.lower(): value for key, value in headers.items()}
    for hint in (
        _number(lower.get("retry-after-ms"), scale=0.001),
        _retry_after_header(lower.get("retry-after"), now=now),
        _body_retry_after(data),
        hint_from_message(message),
    ):
        if hint is not None:
            return hint
    return None


def _number(value: Any, *, scale: float = 1.0) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number < 0 or number == float("inf"):  # NaN, negative, inf
        return None
    return number * scale


def _retry_after_header(value: str | None, *, now: float | None) -> float | None:
    if not value:
        return None
    seconds = _number(value.strip())
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _body_retry_after(data: Any) -> float | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    for holder in (data, error if isinstance(error, dict) else {}):
        for key in ("retry_after", "retry_after_s", "retry_after_seconds"):
            hint = _number(holder.get(key))
            if hint is not None:
                return hint
    return None


def hint_from_message(message: str) -> float | None:
    """'resets in ~30s', 'try again in 1.2s', 'try again in 6m0s', 'try again in 20ms',
    'Expected available in 2 seconds'."""
    match = _HINT.search(message)
    if match is None:
        return None
    total = 0.0
    for number, unit in _PART.findall(match.group(1)):
        key = (unit or "s").lower()
        key = key[:-1] if key.endswith("s") and len(key) > 2 else key
        total += float(number) * _UNIT_S.get(key, 1.0)
    return total
