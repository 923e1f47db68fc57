"""What every write-back client shares: a credential read from the environment, a
multipart body streamed from storage, and one way to turn an HTTP answer or a network
failure into a WritebackError (permanent or retryable, with the CMS's own words).

Nothing here puts a credential into a message: errors quote the CMS's answer and the
name of an environment variable, never its value or a request header.
"""

from __future__ import annotations

import email.utils
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from service.integrations.kinds.base import ImageSource, WritebackError

# How much of a CMS's answer goes into an error message.
MAX_MESSAGE_CHARS = 500
# Statuses no retry can fix. 409 is not among them: a conflict is a race, retried.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 410, 411, 413, 414, 415, 422})

MessageOf = Callable[[Any], str | None]


def read_env(env: Mapping[str, str], name: str) -> str:
    """The credential in `env[name]`; a missing or empty one is a configuration error."""
    value = env.get(name, "")
    if not value.strip():
        raise WritebackError(f"environment variable {name} is not set", permanent=True)
    return value.strip()


def retry_after_s(response: httpx.Response, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def response_error(response: httpx.Response, action: str, message_of: MessageOf) -> WritebackError:
    """A non-2xx answer as a WritebackError: 4xx configuration and "gone" answers are
    permanent, 408/409/425/429 and 5xx are retried (honouring Retry-After), and a 3xx is
    permanent: redirects are not followed, so base_url must be the final address."""
    status = response.status_code
    body = _body_of(response)
    detail = message_of(body) if not isinstance(body, str) else None
    if detail is None:
        detail = body if isinstance(body, str) and body.strip() else response.reason_phrase
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        return WritebackError(
            _clip(f"{action}: HTTP {status} redirect to {location!r}; redirects are not followed"),
            permanent=True,
            status_code=status,
        )
    return WritebackError(
        _clip(f"{action}: HTTP {status}: {detail}"),
        permanent=status in PERMANENT_STATUSES,
        status_code=status,
        retry_after_s=retry_after_s(response),
    )


def transport_error(error: httpx.HTTPError, action: str) -> WritebackError:
    """A timeout, a refused or reset connection, a broken stream: retried later."""
    reason = str(error) or type(error).__name__
    return WritebackError(_clip(f"{action}: {type(error).__name__}: {reason}"), permanent=False)


def invalid_answer(action: str, why: str, status: int) -> WritebackError:
    """A 2xx whose body is not what the API documents: retried, the CMS may recover."""
    return WritebackError(
        _clip(f"{action}: unexpected answer: {why}"), permanent=False, status_code=status
    )


async def send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    action: str,
    message_of: MessageOf,
) -> Any:
    """Send one request (never following a redirect) and return its parsed JSON body;
    anything else becomes a WritebackError."""
    try:
        response = await http.send(request, follow_redirects=False)
    except httpx.HTTPError as error:
        raise transport_error(error, action) from error
    if not response.is_success:
        raise response_error(response, action, message_of)
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid_answer(action, "the body is not JSON", response.status_code) from error


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body whose file part is streamed from the image source, so
    the image is never held whole in memory; its length is known up front."""

    content_type: str
    length: int
    stream: Callable[[], AsyncIterator[bytes]]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart(
    fields: list[tuple[str, str]], file_field: str, filename: str, image: ImageSource
) -> Multipart:
    boundary = "darkroom-" + secrets.token_hex(16)
    head = b"".join(
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
            f"{value}\r\n"
        ).encode()
        for name, value in fields
    )
    head += (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{_quote(file_field)}"; '
        f'filename="{_quote(filename)}"\r\n'
        f"Content-Type: {image.content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def stream() -> AsyncIterator[bytes]:
        yield head
        async for chunk in image.open():
            yield chunk
        yield tail

    return Multipart(
        content_type=f"multipart/form-data; boundary={boundary}",
        length=len(head) + image.size + len(tail),
        stream=stream,
    )
