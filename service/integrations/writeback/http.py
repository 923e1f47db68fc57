"""What every write-back client shares: a credential read from the environment, a request
sent without following redirects, one way to turn an HTTP answer or a network failure into
a WritebackError, a deterministic upload name, and an image body streamed from storage.

Classification, once for all kinds:
- 2xx: done;
- 3xx: permanent (redirects are never followed: the configured URL is wrong);
- 408, 409, 425, 429 and 5xx: retryable, with the receiver's Retry-After when it sent one;
- any other 4xx (400, 401, 403, 404, 410, 422, ...): permanent, no retry can help;
- a timeout, a reset or a refused connection: retryable.

Messages quote the CMS's own words (each kind says how to find them in its error body) and
the name of an environment variable, never a credential: the ones a caller passes as
`secrets` are blanked out, for receivers that echo what they were sent.

Why a hand-made multipart body: httpx builds multipart bodies only from bytes or sync
files, so an image read from storage would be held whole in memory. Here the parts around
the file are small fixed bytes, the file is the storage's async stream, and Content-Length
is known up front (some CMSs sit behind PHP or proxies that refuse chunked uploads).
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets as tokens
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service.integrations.kinds.base import ImageSource, WritebackError
from service.providers.http import retry_after_hint

# How much of a CMS's answer goes into a message (it ends up on the event).
MAX_MESSAGE_CHARS = 500
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# How many hex digits of the image's sha256 an upload name carries.
NAME_DIGEST_CHARS = 12

ConfigT = TypeVar("ConfigT", bound=BaseModel)

# A kind's reader of its CMS's error body (parsed JSON): the CMS's own words, or None.
MessageOf = Callable[[Any], str | None]


def env_secret(env: Mapping[str, str], name: str) -> str:
    """The credential the write-back block names. Missing or empty is permanent: no retry
    will make it appear, and the message names the variable, never a value."""
    value = env.get(name, "")
    if not value.strip():
        raise WritebackError(f"environment variable {name} is not set", permanent=True)
    return value.strip()


def own_config(config: BaseModel, model: type[ConfigT]) -> ConfigT:
    """The writeback block as the kind's own model. The sink validates the block with the
    kind's config_model, so anything else is a wiring fault: permanent, never retried."""
    if not isinstance(config, model):
        raise WritebackError(f"the writeback block is not a {model.__name__}", permanent=True)
    return config


def bearer_headers(token: str) -> dict[str, str]:
    """Headers for a JSON API behind a bearer token (Sanity, Strapi)."""
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


def bearer_token(headers: Mapping[str, str]) -> list[str]:
    """The token in `bearer_headers`, as the `secrets` to blank out of an echoed error."""
    return [headers["authorization"].removeprefix("Bearer ")]


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every credential in `secrets` replaced, for receivers that echo headers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_s(
    headers: Mapping[str, str], *extra: str, now: float | None = None
) -> float | None:
    """The wait a receiver asks for: one of the `extra` headers that hold seconds (e.g.
    Contentful's X-Contentful-RateLimit-Reset), else `Retry-After` (delta-seconds or an
    HTTP date, RFC 9110 10.2.3). None when absent or unreadable; never negative."""
    lower = {key.lower(): value for key, value in headers.items()}
    for name in extra:
        try:
            seconds = float(lower.get(name.lower(), ""))
        except ValueError:
            continue
        if 0 <= seconds < float("inf"):
            return seconds
    return retry_after_hint(lower, None, "", now=now)


def is_permanent(status: int) -> bool:
    """For a non-2xx status: True when retrying the same request cannot help."""
    if 300 <= status < 400:
        return True
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _text(response: httpx.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):
        return ""


def cms_words(response: httpx.Response, message_of: MessageOf | None) -> str:
    """What the CMS said: its error body read by `message_of`, else the start of the body,
    else the reason phrase."""
    body = json_or_none(response)
    said = message_of(body) if message_of is not None and body is not None else None
    return said or clip(_text(response)) or response.reason_phrase


def response_error(
    response: httpx.Response,
    action: str,
    message_of: MessageOf | None = None,
    *,
    secrets: Iterable[str] = (),
    wait_headers: Sequence[str] = (),
) -> WritebackError:
    """A WritebackError for a non-2xx answer to `action` (e.g. "upload the image"),
    classified as above, with the CMS's words; retryable ones carry the wait it asked for."""
    status = response.status_code
    permanent = is_permanent(status)
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        said = f"redirect to {location!r} not followed: set the URL to the final address"
    else:
        said = cms_words(response, message_of)
    return WritebackError(
        clip(redact(f"{action}: HTTP {status}: {said}", secrets)),
        permanent=permanent,
        status_code=status,
        retry_after_s=None if permanent else retry_after_s(response.headers, *wait_headers),
    )


def transport_error(
    exc: httpx.HTTPError, action: str, *, secrets: Iterable[str] = ()
) -> WritebackError:
    """No answer came (timeout, reset, refused, a broken stream): always retryable. The
    message names the failure and the step, never the request's headers."""
    detail = str(exc).strip()
    suffix = f": {detail}" if detail else ""
    message = redact(f"{action}: {type(exc).__name__}{suffix}", secrets)
    return WritebackError(clip(message), permanent=False)


def invalid_answer(action: str, why: str, status: int) -> WritebackError:
    """A 2xx whose body is not what the API documents: retried, the CMS may recover."""
    return WritebackError(
        clip(f"{action}: unexpected answer: {why}"), permanent=False, status_code=status
    )


async def send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    action: str,
    *,
    secrets: Iterable[str] = (),
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """Send one request, never following a redirect, whatever it answers; no answer at all
    becomes a retryable WritebackError."""
    try:
        chosen = httpx.USE_CLIENT_DEFAULT if auth is None else auth
        return await http.send(request, auth=chosen, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise transport_error(exc, action, secrets=secrets) from None


def checked(
    response: httpx.Response,
    action: str,
    message_of: MessageOf | None = None,
    *,
    secrets: Iterable[str] = (),
    wait_headers: Sequence[str] = (),
) -> httpx.Response:
    """`response` if it is a 2xx; otherwise its WritebackError is raised."""
    if not response.is_success:
        raise response_error(
            response, action, message_of, secrets=secrets, wait_headers=wait_headers
        )
    return response


async def call(
    http: httpx.AsyncClient,
    request: httpx.Request,
    action: str,
    message_of: MessageOf | None = None,
    *,
    secrets: Iterable[str] = (),
) -> Any:
    """Send one request that must succeed with a JSON body, and return that body."""
    response = await send(http, request, action, secrets=secrets)
    return json_body(checked(response, action, message_of, secrets=secrets), action)


def json_body(response: httpx.Response, action: str) -> Any:
    """The JSON body of a success answer; anything else is an invalid (retried) answer."""
    body = json_or_none(response)
    if body is None:
        raise invalid_answer(action, "the body is not JSON", response.status_code)
    return body


def json_object(response: httpx.Response, action: str) -> dict[str, Any]:
    """The body of a success answer, which must be a JSON object."""
    body = json_body(response, action)
    if not isinstance(body, dict):
        raise invalid_answer(action, "not a JSON object", response.status_code)
    return body


def upload_name(image: ImageSource) -> str:
    """The file name a write-back gives the CMS: the output's own name plus the first hex
    digits of its SHA-256 ("my-post-cover-3fa2b1c09d4e.webp").

    Why not the bare name: an output name is usually a template of the slug, so a second
    cover for the same article (a later edit) would find the first one and reuse it. With
    the digest, finding the name means finding these very bytes, so a retried write-back
    reuses its own upload and a new image is uploaded anew."""
    base = posixpath.basename(image.filename.replace("\\", "/")) or "image"
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        stem, ext = base, ""
    digest = (image.sha256 or hashlib.sha256(base.encode()).hexdigest())[:NAME_DIGEST_CHARS]
    return f"{stem}-{digest.lower()}.{ext}" if ext else f"{stem}-{digest.lower()}"


def _quoted(value: str) -> str:
    """A quoted-string for a Content-Disposition parameter, as browsers write it."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def content_disposition(filename: str) -> str:
    return f'attachment; filename="{_quoted(filename)}"'


async def exact_bytes(image: ImageSource) -> AsyncIterator[bytes]:
    """The image's bytes, checked against the size the request declared: storage that
    yields more or fewer bytes fails the attempt (retryable) instead of sending a body
    that contradicts its Content-Length."""
    sent = 0
    async for chunk in image.open():
        sent += len(chunk)
        if sent > image.size:
            break
        yield chunk
    if sent != image.size:
        raise WritebackError(
            f"the stored image yielded {sent} bytes where {image.size} were expected",
            permanent=False,
        )


def raw_upload(image: ImageSource) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """Headers and body for an upload of the bare bytes, streamed from storage."""
    headers = {"content-type": image.content_type, "content-length": str(image.size)}
    return headers, exact_bytes(image)


def multipart(
    file_field: str,
    image: ImageSource,
    filename: str,
    fields: Sequence[tuple[str, str]] = (),
) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """Headers (with the exact Content-Length) and a streamed multipart/form-data body
    holding `fields` and then the image as `file_field` (with `filename`). The image is
    read from storage as httpx sends it. Line breaks in a field's value are dropped: no
    CMS field a write-back sets holds one."""
    boundary = "darkroom-" + tokens.token_hex(16)
    head = b"".join(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
            f"\r\n\r\n{value.replace(chr(13), '').replace(chr(10), '')}\r\n"
        ).encode()
        for name, value in fields
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(file_field)}"; '
        f'filename="{_quoted(filename)}"\r\nContent-Type: {image.content_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in exact_bytes(image):
            yield chunk
        yield tail

    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + image.size + len(tail)),
    }
    return headers, body()
