"""The batch page's event stream (interim: polls Postgres until service.events lands).

Same messages as service.events: `event: job` (a job's id and status) and `event: batch`
(the counts). Each poll opens a session and closes it at once: a listener holds no
database connection between polls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import select

from service.batches import service
from service.db import session_scope
from service.models import FINAL_BATCH_STATUSES, Batch, Job
from service.state import State

POLL_S = 0.5
HEARTBEAT_S = 15.0


def _message(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def batch_events(
    state: State, batch_id: uuid.UUID, last_event_id: str | None
) -> AsyncIterator[bytes]:
    since: datetime | None = None
    last_counts: object = None
    quiet = 0.0
    yield b"retry: 2000\n\n"
    while True:
        async with session_scope(state.sessionmaker) as session:
            batch = await session.get(Batch, batch_id)
            if batch is None:
                return
            query = select(Job.id, Job.status, Job.updated_at).where(Job.batch_id == batch_id)
            if since is not None:
                query = query.where(Job.updated_at > since)
            changed = list(await session.execute(query.order_by(Job.updated_at)))
            shown = await service.present_batch(session, batch)
            final = batch.status in FINAL_BATCH_STATUSES
        if since is not None:
            for job_id, status, _ in changed:
                yield _message("job", {"id": str(job_id), "status": status.value})
        if changed:
            since = changed[-1][2]
        body: dict[str, object] = {
            "id": str(batch_id),
            "status": shown.status,
            "counts": shown.counts.model_dump(),
            "cost_usd": shown.cost_usd,
        }
        if body != last_counts:
            last_counts = body
            quiet = 0.0
            yield _message("batch", body)
        elif quiet >= HEARTBEAT_S:
            quiet = 0.0
            yield b": heartbeat\n\n"
        if final and not changed:
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
