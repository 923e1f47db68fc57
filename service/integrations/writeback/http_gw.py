"""What every write-back client needs from HTTP: a streamed upload body, Retry-After, and
one place that turns a CMS's answer (or a dropped connection) into a WritebackError.

Why a hand-made multipart body: httpx builds multipart bodies only from bytes or sync
files, so an image read from storage would be held whole in memory (or read with blocking
calls). Here the parts around the file are small fixed bytes, the file is the storage's
async stream, and Content-Length is known up front (some CMSs sit behind PHP or proxies
that refuse chunked uploads).
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import posixpath
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from service.integrations.kinds.base import ImageSource, WritebackError

# Client errors no retry can mend; every other 4xx (408, 409, 425, 429) and every 5xx is
# retried on the delivery schedule.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# How much of a CMS's own error text goes into a message (it ends up on the event).
MAX_MESSAGE_CHARS = 300


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date
    (RFC 9110). None when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def is_permanent(status: int) -> bool:
    """Client errors but the retryable ones, and redirects: a write-back never follows one
    (the target was checked, the Location was not), and the fix is a new base_url."""
    return (300 <= status < 500) and status not in RETRYABLE_4XX


def status_error(response: httpx.Response, what: str, cms_message: str) -> WritebackError:
    """A WritebackError for a non-success answer: `what` says which step failed (e.g.
    "upload the image"), `cms_message` is the CMS's own words for it."""
    status = response.status_code
    permanent = is_permanent(status)
    wait = None if permanent else retry_after_s(response.headers.get("retry-after"))
    text = cms_message.strip()[:MAX_MESSAGE_CHARS] or response.reason_phrase
    if response.is_redirect:
        location = response.headers.get("location", "")[:MAX_MESSAGE_CHARS]
        text = f"redirected to {location!r}: set base_url to the final URL"
    return WritebackError(
        f"{what}: HTTP {status}: {text}",
        permanent=permanent,
        status_code=status,
        retry_after_s=wait,
    )


def transport_error(exc: httpx.HTTPError, what: str) -> WritebackError:
    """A timeout, a reset or a refused connection: retryable. The message names the
    exception only (its text may hold a URL, never a credential: those travel in headers)."""
    detail = str(exc).strip()[:MAX_MESSAGE_CHARS]
    suffix = f": {detail}" if detail else ""
    return WritebackError(f"{what}: {type(exc).__name__}{suffix}", permanent=False)


def env_secret(env: Mapping[str, str], name: str) -> str:
    """The credential held in environment variable `name`; its absence is permanent (no
    retry will set it). The message names the variable, never a value."""
    value = env.get(name, "")
    if not value.strip():
        raise WritebackError(f"environment variable {name} is not set", permanent=True)
    return value.strip()


def response_text(response: httpx.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):
        return ""


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The body of a success answer, which must be a JSON object; anything else means the
    URL is not the CMS's API (a proxy page, a login form): permanent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise WritebackError(
            f"{what}: HTTP {response.status_code}: the answer is not a JSON object",
            permanent=True,
            status_code=response.status_code,
        )
    return body


def upload_name(image: ImageSource) -> str:
    """The file name a write-back gives the CMS: the output's own name plus the first 10
    hex digits of its SHA-256 ("my-post-cover-3fa2b1c09d.webp").

    Why not the bare name: an output name is usually a template of the slug, so a second
    cover for the same article (a later edit) would find the first one and reuse it. With
    the digest, finding the name means finding these very bytes, so a retried write-back
    reuses its own upload and a new image is uploaded anew."""
    base = posixpath.basename(image.filename.replace("\\", "/")) or "image"
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    digest = (image.sha256 or hashlib.sha256(base.encode()).hexdigest())[:10].lower()
    return f"{stem}-{digest}.{ext}" if ext else f"{stem}-{digest}"


def _quoted(value: str) -> str:
    """A quoted-string for a Content-Disposition parameter, as browsers write it."""
    return value.replace("\r", "").replace("\n", "").replace('"', "%22")


def content_disposition(filename: str) -> str:
    return f'attachment; filename="{_quoted(filename)}"'


async def exact_bytes(
    open_stream: Callable[[], AsyncIterator[bytes]], size: int
) -> AsyncIterator[bytes]:
    """The image's bytes, checked against the size the request declared: storage that
    yields more or fewer bytes fails the attempt (retryable) instead of sending a body
    that contradicts its Content-Length."""
    sent = 0
    async for chunk in open_stream():
        sent += len(chunk)
        if sent > size:
            break
        yield chunk
    if sent != size:
        raise WritebackError(
            f"the stored image yielded {sent} bytes where {size} were expected",
            permanent=False,
        )


def multipart_file(
    field: str,
    image: ImageSource,
    filename: str,
    fields: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """Headers and a streamed multipart/form-data body holding `fields` and then the image
    as `field` (with `filename`). The body is built lazily: the image is read from storage
    as httpx sends it."""
    boundary = "darkroom-" + secrets.token_hex(16)
    head = b""
    for name, value in (fields or {}).items():
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
            f"\r\n\r\n{_quoted(value)}\r\n"
        ).encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field)}"; '
        f'filename="{_quoted(filename)}"\r\nContent-Type: {image.content_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in exact_bytes(image.open, image.size):
            yield chunk
        yield tail

    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + image.size + len(tail)),
    }
    return headers, body()
