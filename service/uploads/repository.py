"""Queries for uploads."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Upload

# Upload ids per query when checking a batch's references (bind parameters are finite).
_CHUNK = 5_000


async def get_upload(
    session: AsyncSession, upload_id: uuid.UUID, api_key_id: uuid.UUID | None
) -> Upload | None:
    """The upload, if it exists and (when `api_key_id` is given) belongs to that key."""
    query = select(Upload).where(Upload.id == upload_id)
    if api_key_id is not None:
        query = query.where(Upload.api_key_id == api_key_id)
    return (await session.execute(query)).scalar_one_or_none()


async def owned_upload_ids(
    session: AsyncSession, upload_ids: Collection[uuid.UUID], api_key_id: uuid.UUID
) -> set[uuid.UUID]:
    """Which of `upload_ids` exist and belong to the key."""
    ids = list(upload_ids)
    found: set[uuid.UUID] = set()
    for start in range(0, len(ids), _CHUNK):
        query = select(Upload.id).where(
            Upload.api_key_id == api_key_id, Upload.id.in_(ids[start : start + _CHUNK])
        )
        found.update((await session.execute(query)).scalars())
    return found
