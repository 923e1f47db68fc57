"""/v1/webhooks: a key's endpoints and outbox events, thin handlers.

A key sees only its own: another key's endpoint or event is a 404, as if it did not
exist."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.base import utcnow
from service.kit.errors import ERROR_RESPONSES, Conflict, ErrorResponse, NotFound
from service.kit.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    after_created,
    bad_cursor,
    decode_time_cursor,
    decode_time_uuid_cursor,
    keyset_page,
)
from service.models import DeliveryStatus, WebhookEndpoint, WebhookEvent
from service.webhooks import repository, service
from service.webhooks.schemas import (
    EndpointOut,
    EndpointPage,
    EventDetail,
    EventOut,
    EventPage,
    EventStatusName,
)
from service.webhooks.tasks import enqueue_deliveries

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
EventId = Annotated[str, Path(max_length=40, pattern="^[A-Za-z0-9_]+$")]


@router.get("/endpoints")
async def list_endpoints(
    session: SessionDep, api_key: ApiKeyDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> EndpointPage:
    """The key's endpoints (one per callback URL it used), oldest first."""
    after = decode_time_uuid_cursor(cursor)
    rows = await repository.list_endpoints(session, api_key.id, limit=limit + 1, after=after)
    page, next_cursor = keyset_page(rows, limit, after_created)
    return EndpointPage(items=[EndpointOut.of(e) for e in page], next_cursor=next_cursor)


@router.post("/endpoints/{endpoint_id}/enable")
async def enable_endpoint(
    endpoint_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep
) -> EndpointOut:
    """Deliver to it again. Events that failed while it was disabled stay failed:
    redeliver the ones still wanted."""
    endpoint = await _own_endpoint(session, api_key.id, endpoint_id, for_update=True)
    await service.enable_endpoint(endpoint)
    await session.flush()
    return EndpointOut.of(endpoint)


@router.get("/events")
async def list_events(
    session: SessionDep,
    api_key: ApiKeyDep,
    status: EventStatusName | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> EventPage:
    """The key's outbox events, newest first."""
    after = decode_time_cursor(cursor)
    if after is not None and len(after[1]) > 40:
        raise bad_cursor()
    rows = await repository.list_events(
        session,
        api_key.id,
        status=DeliveryStatus(status) if status else None,
        limit=limit + 1,
        after=after,
    )
    page, next_cursor = keyset_page(rows, limit, after_created)
    return EventPage(items=[EventOut.of(e) for e in page], next_cursor=next_cursor)


@router.get("/events/{event_id}")
async def get_event(event_id: EventId, session: SessionDep, api_key: ApiKeyDep) -> EventDetail:
    """The event, its payload, and every attempt: status code, duration, error and what
    the receiver answered (up to 20 KB)."""
    event = await _own_event(session, api_key.id, event_id)
    return EventDetail.with_attempts(event, await repository.attempts_of(session, event.id))


@router.post(
    "/events/{event_id}/redeliver",
    status_code=202,
    responses={
        409: {"model": ErrorResponse, "description": "Still pending, or its endpoint is disabled"}
    },
)
async def redeliver_event(
    event_id: EventId, state: StateDep, session: SessionDep, api_key: ApiKeyDep
) -> EventOut:
    """Deliver the event again, now, with the same webhook-id (a delivered one too), and
    with the whole retry schedule if it fails."""
    event = await _own_event(session, api_key.id, event_id, for_update=True)
    if event.status is DeliveryStatus.pending:
        raise Conflict(f"event {event.id} is still pending: its next attempt is on its way")
    endpoint = await session.get(WebhookEndpoint, event.endpoint_id)
    if endpoint is not None and endpoint.disabled_at is not None:
        raise Conflict(
            f"endpoint {endpoint.id} ({service.url_host(endpoint.url)}) is disabled: "
            f"{endpoint.disabled_reason}; enable it first "
            f"(POST /v1/webhooks/endpoints/{endpoint.id}/enable)",
            code="endpoint_disabled",
        )
    service.redeliver(event, utcnow())
    await session.commit()
    await enqueue_deliveries(state, [event.id])
    return EventOut.of(event)


async def _own_endpoint(
    session: SessionDep, api_key_id: uuid.UUID, endpoint_id: uuid.UUID, *, for_update: bool
) -> WebhookEndpoint:
    endpoint = await repository.own_endpoint(
        session, api_key_id, endpoint_id, for_update=for_update
    )
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


async def _own_event(
    session: SessionDep, api_key_id: uuid.UUID, event_id: str, *, for_update: bool = False
) -> WebhookEvent:
    event = await repository.own_event(session, api_key_id, event_id, for_update=for_update)
    if event is None:
        raise NotFound(f"no webhook event {event_id}")
    return event
