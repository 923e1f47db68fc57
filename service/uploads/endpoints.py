"""/v1/uploads: images to feed into jobs. Thin handlers; the work is in service.py."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.body_limit import PathLimit
from service.kit.errors import ERROR_RESPONSES, ErrorResponse
from service.uploads import service
from service.uploads.images import MAX_IMAGE_BYTES
from service.uploads.schemas import UploadOut

UPLOADS_PATH = "/v1/uploads"
# The form around the file (boundary, part headers) needs a little room of its own.
BODY_LIMIT = PathLimit(MAX_IMAGE_BYTES + 64 * 1024, service.TOO_LARGE)

router = APIRouter(prefix=UPLOADS_PATH, tags=["uploads"], responses=ERROR_RESPONSES)


@router.post(
    "",
    status_code=201,
    responses={
        413: {"model": ErrorResponse, "description": "The file is over 20 MiB"},
        503: {"model": ErrorResponse, "description": "The storage is unavailable"},
    },
)
async def create_upload(
    file: Annotated[UploadFile, File(description="A PNG, JPEG or WebP image, up to 20 MiB")],
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
) -> UploadOut:
    """Store an image; name its `id` in a job's `reference_images` or `mask`."""
    data = await service.read_limited(file)
    upload = await service.create_upload(session, state.storage, api_key=api_key, data=data)
    await session.commit()
    return service.upload_out(upload)


@router.get("/{upload_id}")
async def get_upload(upload_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep) -> UploadOut:
    """An upload of this key (another key's is a 404)."""
    return service.upload_out(await service.get_upload(session, upload_id, api_key))
