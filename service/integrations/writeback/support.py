"""What every write-back client shares: reading a credential from the environment, turning
an HTTP answer or a network failure into a WritebackError (permanent or retryable, with the
receiver's own words), and keeping credentials out of every message.

Classification, once for all kinds:
- 2xx: done;
- 3xx: permanent (redirects are never followed: the configured URL is wrong);
- 408, 409, 425, 429 and 5xx: retryable (429/503 carry their Retry-After);
- any other 4xx (400, 401, 403, 404, 410, 422, ...): permanent, no retry can help;
- a timeout, a reset or a refused connection: retryable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from service.integrations.kinds.base import WritebackError
from service.providers.http import retry_after_hint

# How much of a receiver's answer goes into a message.
MAX_EXCERPT_CHARS = 300
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def env_secret(env: Mapping[str, str], name: str) -> str:
    """The credential the write-back block names. Missing or empty is permanent: no retry
    will make it appear, and the message names the variable, never a value."""
    value = env.get(name, "")
    if not value.strip():
        raise WritebackError(f"environment variable {name} is not set", permanent=True)
    return value.strip()


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every credential in `secrets` replaced, for receivers that echo headers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def excerpt(response: httpx.Response, limit: int = MAX_EXCERPT_CHARS) -> str:
    """The start of a response body, on one line; the body must have been read."""
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_s(headers: Mapping[str, str], *extra: str) -> float | None:
    """The wait a receiver asks for: `Retry-After` (seconds or an HTTP date), or one of the
    `extra` headers that hold seconds (e.g. Contentful's X-Contentful-RateLimit-Reset)."""
    lower = {key.lower(): value for key, value in headers.items()}
    for name in extra:
        try:
            seconds = float(lower.get(name.lower(), ""))
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return retry_after_hint(lower, None, "")


def is_permanent(status: int) -> bool:
    """For a non-2xx status: True when retrying the same request cannot help."""
    if 300 <= status < 400:
        return True
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def status_error(
    response: httpx.Response,
    message: str,
    *,
    secrets: Iterable[str] = (),
    rate_limit_headers: tuple[str, ...] = (),
) -> WritebackError:
    """A WritebackError for a non-2xx answer: `message` says what failed in the receiver's
    words (the caller extracts them); credentials in `secrets` are blanked out of it."""
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("location", "")
        message = f"{message} (a redirect{' to ' + where if where else ''} is not followed)"
    hint = None
    if status in (429, 503):
        hint = retry_after_s(response.headers, *rate_limit_headers)
    return WritebackError(
        redact(message, secrets),
        permanent=is_permanent(status),
        status_code=status,
        retry_after_s=hint,
    )


def transport_error(exc: httpx.HTTPError, doing: str) -> WritebackError:
    """No answer came (timeout, reset, refused, a broken stream): always retryable. The
    message names the failure and the step, never the request's headers."""
    kind = type(exc).__name__
    return WritebackError(f"{doing}: {kind}", permanent=False)


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
