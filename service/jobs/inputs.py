"""The images a job feeds in (`reference_images`, `mask`), checked at submit and turned
into bytes when the job runs.

A reference is an upload id (POST /v1/uploads, the caller's own) or an https URL. At
submit nothing is fetched: ids are looked up (one query for the whole batch) and URLs
are checked for shape. When the job runs, uploads are read from storage and URLs are
fetched through the SSRF guard, capped at 20 MiB and decoded, since a URL may serve
anything by then.

Run-time failures name the input ("reference_images[1]: ...") and are classified once:
- permanent: no such upload, too large, not an image, a refused address, a 4xx;
- retryable: a 5xx, 408/425/429, a timeout, a lost connection, the storage failing.
Messages name a URL's host, never its path or query (a presigned URL carries a secret).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.errors import ErrorDetail
from service.kit.ssrf import AddressRefused, Policy, parse_address
from service.logging import get_logger
from service.models import ApiKey
from service.providers.base import (
    InputImage,
    InputRole,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.http import USER_AGENT, streamed
from service.storage.base import Storage, StorageError
from service.uploads import repository
from service.uploads.images import MAX_IMAGE_BYTES, MAX_IMAGE_MB, NotAnImage, inspect_image

if TYPE_CHECKING:
    from service.config import Settings
    from service.state import State

log = get_logger(__name__)

MAX_URL_LENGTH = 2000
FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A slow-dripping server could dodge the per-read timeout; this bounds the whole fetch.
FETCH_DEADLINE_S = 60.0
_ACCEPT = "image/png, image/jpeg, image/webp"
_UPLOAD_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class InputRef:
    """One input of a job: where it came from in the job (`field`), its role, its value."""

    field: str
    role: InputRole
    value: str


def input_refs(
    reference_images: Sequence[str], mask: str | None, prefix: str = ""
) -> list[InputRef]:
    """A job's inputs in order, each named by its field (`prefix` is e.g. "jobs[3].")."""
    refs = [
        InputRef(f"{prefix}reference_images[{i}]", "reference", value)
        for i, value in enumerate(reference_images)
    ]
    if mask is not None:
        refs.append(InputRef(f"{prefix}mask", "mask", mask))
    return refs


def upload_id(value: str) -> uuid.UUID | None:
    """The upload id a reference names, or None when it is not one (then it is a URL).
    Only the canonical form: `uuid.UUID` would also take braces, urn: and bare hex."""
    return uuid.UUID(value) if _UPLOAD_ID.fullmatch(value) else None


# --- at submit ------------------------------------------------------------------------


async def validate_input_refs(
    session: AsyncSession,
    api_key: ApiKey,
    refs: Sequence[InputRef],
    *,
    settings: Settings | None = None,
) -> list[ErrorDetail]:
    """What is wrong with a batch's inputs, one detail per input (empty: all fine).

    Upload ids must exist and belong to `api_key` (another key's upload reads as missing);
    URLs must be https with a host. Nothing is fetched. With `settings`, a URL whose host
    is an address literal the SSRF policy refuses is reported now rather than at run time."""
    problems: list[ErrorDetail] = []
    uploads: list[tuple[InputRef, uuid.UUID]] = []
    policy = Policy.from_settings(settings) if settings is not None else None
    for ref in refs:
        found = upload_id(ref.value)
        if found is not None:
            uploads.append((ref, found))
            continue
        problem = url_problem(ref.value, policy)
        if problem is not None:
            problems.append(ErrorDetail(field=ref.field, message=problem))
    if uploads:
        owned = await repository.owned_upload_ids(session, {i for _, i in uploads}, api_key.id)
        problems.extend(
            ErrorDetail(field=ref.field, message=f"no upload {found}")
            for ref, found in uploads
            if found not in owned
        )
    return problems


def url_problem(value: str, policy: Policy | None = None) -> str | None:
    """Why `value` is not an acceptable reference URL, or None."""
    if len(value) > MAX_URL_LENGTH:
        return f"a URL is at most {MAX_URL_LENGTH} characters"
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "must be an upload id or an https URL (it contains whitespace or controls)"
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme.lower() != "https":
        return "must be an upload id or an https URL"
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry credentials"
    if policy is not None:
        reason = _literal_refusal(host, policy)
        if reason is not None:
            return f"{host} is a non-public address ({reason})"
    return None


def _literal_refusal(host: str, policy: Policy) -> str | None:
    try:
        address = parse_address(host)
    except ValueError:
        return None  # a name: resolved, and guarded, when fetched
    return policy.refusal(address)


# --- at run time ----------------------------------------------------------------------


async def resolve_inputs(
    state: State,
    *,
    reference_images: Sequence[str],
    mask: str | None,
    api_key_id: uuid.UUID | None = None,
    client: httpx.AsyncClient | None = None,
) -> tuple[InputImage, ...]:
    """The job's inputs as checked images, in order (references, then the mask).

    `api_key_id` (the job's owner) makes an upload of another key count as missing, as
    at submit. `client` must be SSRF-guarded; the default is the state's guarded client."""
    fetcher = client if client is not None else state.http
    resolved: list[InputImage] = []
    for ref in input_refs(reference_images, mask):
        found = upload_id(ref.value)
        if found is not None:
            resolved.append(await _from_upload(state, ref, found, api_key_id))
        else:
            resolved.append(await _from_url(fetcher, ref))
    return tuple(resolved)


async def _from_upload(
    state: State, ref: InputRef, found: uuid.UUID, api_key_id: uuid.UUID | None
) -> InputImage:
    async with state.sessionmaker() as session:
        upload = await repository.get_upload(session, found, api_key_id)
    if upload is None:
        raise _permanent("input_not_found", ref, f"no upload {found}")
    try:
        data = await state.storage.get(upload.storage_key)
    except FileNotFoundError:
        raise _permanent(
            "input_not_found", ref, f"upload {found} is missing from storage"
        ) from None
    except StorageError as exc:
        raise ProviderRetryableError(
            "input_unavailable", f"{ref.field}: the storage failed reading upload {found}: {exc}"
        ) from exc
    # Checked when it was uploaded; the row holds what the decode found.
    return InputImage(
        ref.role, data, upload.content_type, _storage_url(state.storage, upload.storage_key)
    )


def _storage_url(storage: Storage, key: str) -> str | None:
    """Where a provider may fetch the upload itself (S3), or None (it gets the bytes)."""
    try:
        return storage.url(key)
    except StorageError as exc:
        log.warning("storage_url_failed", error=str(exc))
        return None


async def _from_url(client: httpx.AsyncClient, ref: InputRef) -> InputImage:
    problem = url_problem(ref.value)
    if problem is not None:
        raise _permanent("input_invalid", ref, problem)
    host = urlsplit(ref.value).hostname or ""
    data = await _fetch(client, ref, host)
    try:
        image = await inspect_image(data)
    except NotAnImage as exc:
        raise _permanent(
            "input_not_image", ref, f"{host} sent something that is not an image: {exc}"
        ) from None
    return InputImage(ref.role, data, image.content_type, ref.value)


async def _fetch(client: httpx.AsyncClient, ref: InputRef, host: str) -> bytes:
    request = client.build_request(
        "GET",
        ref.value,
        headers={"User-Agent": USER_AGENT, "Accept": _ACCEPT},
        timeout=FETCH_TIMEOUT,
    )
    try:
        async with streamed(client, request, FETCH_DEADLINE_S, follow_redirects=True) as response:
            _check_status(ref, host, response.status_code)
            return await _read_capped(ref, host, response)
    except ProviderError:
        raise
    except AddressRefused as exc:
        raise _permanent("input_refused", ref, f"refused to fetch: {exc}") from exc
    except httpx.TooManyRedirects:
        raise _permanent("input_fetch_failed", ref, f"{host} redirects too many times") from None
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ProviderRetryableError(
            "input_fetch_failed", f"{ref.field}: fetching from {host} timed out"
        ) from exc
    except httpx.RequestError as exc:
        raise ProviderRetryableError(
            "input_fetch_failed",
            f"{ref.field}: fetching from {host} failed: {type(exc).__name__}: {exc or 'no detail'}",
        ) from exc


def _check_status(ref: InputRef, host: str, status: int) -> None:
    if 200 <= status < 300:
        return
    message = f"{ref.field}: {host} answered {status}"
    if status >= 500 or status in _RETRYABLE_STATUSES:
        raise ProviderRetryableError("input_fetch_failed", message, http_status=status)
    raise ProviderPermanentError("input_fetch_failed", message, http_status=status)


async def _read_capped(ref: InputRef, host: str, response: httpx.Response) -> bytes:
    """At most MAX_IMAGE_BYTES (after decompression); one chunk past it, and it is refused."""
    too_large = f"{host} sent more than the {MAX_IMAGE_MB} MiB ({MAX_IMAGE_BYTES} bytes) limit"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise _permanent("input_too_large", ref, too_large)
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > MAX_IMAGE_BYTES:
            raise _permanent("input_too_large", ref, too_large)
    return bytes(buffer)


def _permanent(code: str, ref: InputRef, message: str) -> ProviderPermanentError:
    return ProviderPermanentError(code, f"{ref.field}: {message}")
