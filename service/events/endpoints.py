"""GET /v1/batches/{id}/events: a batch's live progress as Server-Sent Events.

Authorised in a short session of its own, closed before the stream starts: a listener
holds no database connection (the shared SessionDep would stay open for the whole
response)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel
from starlette.responses import StreamingResponse

from service.batches import repository
from service.deps import BearerDep, StateDep, authenticate
from service.events.schemas import BatchEventData, JobEventData
from service.events.stream import sse_response
from service.kit.errors import ERROR_RESPONSES, NotFound

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)


def _fields(model: type[BaseModel]) -> str:
    return ", ".join(f"`{name}`" for name in model.model_fields)


EVENTS_DESCRIPTION = f"""Server-Sent Events (`text/event-stream`):

- `event: batch`: the batch's counts (first a snapshot from the database, then after changes,
  at most a few per second). Data: {_fields(BatchEventData)}.
- `event: job`: one job's state changed (running, succeeded, failed, cancelled, back to
  queued for a retry). Data: {_fields(JobEventData)}.
- `: ping` comments every 15 s (DARKROOM_EVENTS_HEARTBEAT_S) of silence.

Each event's `id:` resumes the stream: send it back as `Last-Event-ID` to get exactly the
events missed since (a malformed id is ignored: a snapshot, then from now). After the final
`batch` event (status succeeded, failed, partially_failed or cancelled) the stream ends;
close the EventSource then, or it reconnects and gets the final snapshot again."""


async def _readable_batch(
    batch_id: uuid.UUID, state: StateDep, credentials: BearerDep
) -> uuid.UUID:
    async with state.sessionmaker() as session:
        api_key = await authenticate(session, state, credentials)
        batch = await repository.get_batch(session, batch_id, api_key.id)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return batch_id


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": EVENTS_DESCRIPTION}},
)
async def batch_events(
    state: StateDep,
    batch_id: Annotated[uuid.UUID, Depends(_readable_batch)],
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=200, description="Resume after this event id"),
    ] = None,
) -> StreamingResponse:
    """The batch's job state changes and counts, live (see the 200 response)."""
    return sse_response(state, batch_id, last_event_id)
