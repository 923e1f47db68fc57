"""An edit's images, kept as uploads (service/uploads): decoded, stored, owned by the key,
and named by id in the jobs' reference_images and mask like any upload."""

from __future__ import annotations

from fastapi import UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from service.batches.schemas import MAX_REFERENCES
from service.kit.errors import ApiError
from service.models import ApiKey
from service.openai_compat.errors import OpenAIError, bad_request, from_api_error
from service.openai_compat.images import Inputs
from service.state import State
from service.uploads.service import create_upload, read_limited


async def _store(
    session: AsyncSession, state: State, api_key: ApiKey, file: UploadFile, param: str
) -> str:
    try:
        data = await read_limited(file)
        upload = await create_upload(session, state.storage, api_key=api_key, data=data)
    except ApiError as exc:
        error = from_api_error(exc)
        message = exc.message.replace("file:", f"{param}:", 1)
        raise OpenAIError(
            error.status_code, message, param=param, code=error.code, headers=exc.headers
        ) from None
    return str(upload.id)


async def edit_inputs(
    session: AsyncSession,
    state: State,
    api_key: ApiKey,
    images: list[UploadFile],
    mask: UploadFile | None,
) -> Inputs:
    if not images:
        raise bad_request("Missing required parameter: 'image'.", "image")
    if len(images) > MAX_REFERENCES:
        raise bad_request(f"At most {MAX_REFERENCES} images per edit.", "image")
    references = [await _store(session, state, api_key, file, "image") for file in images]
    mask_id = await _store(session, state, api_key, mask, "mask") if mask is not None else None
    return Inputs(references, mask_id)
