"""Taking an upload: read at most the limit, decode it, store the bytes, record the row.

The bytes are stored before the row is written: a row always has its bytes, and a failed
insert leaves at most an object nobody names (never a row whose image is missing).
"""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.base import new_id
from service.kit.errors import (
    ErrorDetail,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from service.logging import get_logger
from service.models import ApiKey, Upload
from service.storage.base import Storage, StorageError
from service.uploads import repository
from service.uploads.images import (
    ACCEPTED_NAMES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_MB,
    NotAnImage,
    inspect_image,
)
from service.uploads.schemas import UploadOut

log = get_logger(__name__)

FIELD = "file"
KEY_PREFIX = "uploads"
TOO_LARGE = f"{FIELD}: an upload is at most {MAX_IMAGE_MB} MiB ({MAX_IMAGE_BYTES} bytes)"


class Readable(Protocol):
    """What the endpoint hands over (FastAPI's UploadFile): read at most `size` bytes."""

    async def read(self, size: int = -1) -> bytes: ...


async def read_limited(file: Readable) -> bytes:
    """The file's bytes; a 413 naming the limit past it, having read one byte past it."""
    data = await file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(TOO_LARGE, details=[ErrorDetail(field=FIELD, message=TOO_LARGE)])
    return data


def storage_key(upload_id: uuid.UUID, extension: str) -> str:
    return f"{KEY_PREFIX}/{upload_id}.{extension}"


async def create_upload(
    session: AsyncSession, storage: Storage, *, api_key: ApiKey, data: bytes
) -> Upload:
    """Check and store one image for the key. 422 when it is not an image, 503 when the
    storage does not take it."""
    try:
        image = await inspect_image(data)
    except NotAnImage as exc:
        message = f"{FIELD}: not a {ACCEPTED_NAMES} image: {exc}"
        raise InvalidInput(
            message, code="not_an_image", details=[ErrorDetail(field=FIELD, message=message)]
        ) from None
    upload_id = new_id()
    key = storage_key(upload_id, image.extension)
    try:
        stored = await storage.put(key, data, image.content_type)
    except StorageError as exc:
        log.warning("upload_storage_unavailable", error=str(exc))
        raise ServiceUnavailable(
            "the storage is unavailable; try again shortly", code="storage_unavailable"
        ) from exc
    upload = Upload(
        id=upload_id,
        api_key_id=api_key.id,
        storage_key=key,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        bytes=stored.bytes,
        sha256=stored.sha256,
    )
    session.add(upload)
    await session.flush()
    return upload


async def get_upload(session: AsyncSession, upload_id: uuid.UUID, api_key: ApiKey) -> Upload:
    upload = await repository.get_upload(session, upload_id, api_key.id)
    if upload is None:
        raise NotFound(f"no upload {upload_id}")
    return upload


def upload_out(upload: Upload) -> UploadOut:
    return UploadOut(
        id=upload.id,
        content_type=upload.content_type,
        width=upload.width,
        height=upload.height,
        bytes=upload.bytes,
        created_at=upload.created_at,
    )
