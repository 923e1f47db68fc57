"""The queries only the pages make."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Batch


async def batches_of_key(
    session: AsyncSession, api_key_id: uuid.UUID, batch_ids: Sequence[uuid.UUID]
) -> list[Batch]:
    """Those of `batch_ids` that belong to the key (the list page's live counts)."""
    query = select(Batch).where(Batch.api_key_id == api_key_id, Batch.id.in_(batch_ids))
    return list((await session.execute(query)).scalars())
