"""Shared steps of the delivery tests: events written straight to the outbox, and time
moved on without waiting for it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update

from service.db import session_scope
from service.models import DeliveryStatus, WebhookAttempt, WebhookEndpoint, WebhookEvent
from service.state import State
from service.webhooks.schedule import MAX_ATTEMPTS
from service.webhooks.service import record_outbox_event
from service.webhooks.tasks import enqueue_deliveries


async def new_event(
    state: State,
    api_key_id: uuid.UUID,
    url: str,
    type: str = "test.ping",
    *,
    enqueue: bool = False,
) -> str:
    """An event in the outbox; with `enqueue`, on its way as after a real commit."""
    async with session_scope(state.sessionmaker) as session:
        event_id = await record_outbox_event(
            session, api_key_id=api_key_id, url=url, type=type, data={"n": 1}
        )
    if enqueue:
        await enqueue_deliveries(state, [event_id])
    return event_id


async def make_due(state: State) -> None:
    """Bring every pending event's next attempt to now (a delivery never goes early)."""
    async with state.sessionmaker() as session:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.status == DeliveryStatus.pending)
            .values(next_attempt_at=func.now())
        )
        await session.commit()


async def use_up_schedule(state: State, event_id: str) -> None:
    """As if every attempt but the last had failed: the next failure is the last."""
    async with state.sessionmaker() as session:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(attempts=MAX_ATTEMPTS - 1, next_attempt_at=func.now())
        )
        await session.commit()


async def event(state: State, event_id: str) -> WebhookEvent:
    async with state.sessionmaker() as session:
        found = await session.get(WebhookEvent, event_id)
    assert found is not None
    return found


async def attempts(state: State, event_id: str) -> list[WebhookAttempt]:
    async with state.sessionmaker() as session:
        query = select(WebhookAttempt).where(WebhookAttempt.event_id == event_id)
        return list((await session.execute(query.order_by(WebhookAttempt.number))).scalars())


async def endpoint_of(state: State, event_id: str) -> WebhookEndpoint:
    found = await event(state, event_id)
    async with state.sessionmaker() as session:
        endpoint = await session.get(WebhookEndpoint, found.endpoint_id)
    assert endpoint is not None
    return endpoint


async def set_endpoint(
    state: State, endpoint_id: uuid.UUID, **values: datetime | str | None
) -> None:
    async with state.sessionmaker() as session:
        await session.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(**values)
        )
        await session.commit()
