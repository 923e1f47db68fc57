"""Live progress for the pages: the batch page's event stream, and the list's counts.

The batch page listens to GET /ui/batches/{id}/events, the cookie-authenticated twin of
GET /v1/batches/{id}/events: the same stream (`event: job` and `event: batch`), so the
progress bar and the tiles move as changes commit. Ownership is checked with a short
session that is closed before the stream starts: a listener holds no database
connection. The list page may show many running batches; a browser opens only six
connections per host, so it asks GET /ui/batches/progress for all of them at once
instead of one stream each.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service.batches import repository, service
from service.db import session_scope
from service.deps import StateDep
from service.events import sse_response
from service.ui import repository as ui_repository
from service.ui import session as ui_session
from service.ui.render import parse_uuid

router = APIRouter(prefix="/ui", include_in_schema=False)

MAX_PROGRESS_IDS = 50
MAX_EVENT_ID = 200


@router.get("/batches/progress")
async def progress(
    request: Request,
    state: StateDep,
    id: Annotated[list[str] | None, Query(max_length=MAX_PROGRESS_IDS)] = None,
) -> Response:
    """{"batches": {id: {status, counts, cost_usd}}} for the signed-in key's batches
    among `id` (others, and ids that are not ids, are left out)."""
    ids = [parsed for raw in (id or [])[:MAX_PROGRESS_IDS] if (parsed := parse_uuid(raw))]
    async with session_scope(state.sessionmaker) as session:
        user = await ui_session.signed_in_key(state.redis, session, request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        batches = await ui_repository.batches_of_key(session, user.id, ids) if ids else []
        totals = await repository.totals_for(session, [b.id for b in batches], by_model=False)
        out: dict[str, object] = {}
        for batch in batches:
            shown = service.batch_out(batch, totals[batch.id])
            out[str(batch.id)] = {
                "status": shown.status,
                "counts": shown.counts.model_dump(),
                "cost_usd": shown.cost_usd,
            }
    return JSONResponse({"batches": out}, headers={"Cache-Control": "no-store"})


@router.get("/batches/{batch_id}/events")
async def events(request: Request, batch_id: str, state: StateDep) -> Response:
    parsed = parse_uuid(batch_id)
    async with session_scope(state.sessionmaker) as session:
        user = await ui_session.signed_in_key(state.redis, session, request)
        if user is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        batch = await repository.get_batch(session, parsed, user.id) if parsed else None
        if batch is None:
            return Response("no such batch", status_code=404, media_type="text/plain")
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None and len(last_event_id) > MAX_EVENT_ID:
        last_event_id = None  # as the API treats a malformed id: a snapshot, then from now
    return sse_response(state, batch.id, last_event_id)
