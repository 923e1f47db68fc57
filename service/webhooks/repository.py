"""Queries for the outbox and its delivery attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import ApiKey, DeliveryStatus, WebhookEvent


async def get_event_with_secret(
    session: AsyncSession, event_id: str
) -> tuple[WebhookEvent, str] | None:
    query = (
        select(WebhookEvent, ApiKey.webhook_secret)
        .join(ApiKey, ApiKey.id == WebhookEvent.api_key_id)
        .where(WebhookEvent.id == event_id)
    )
    row = (await session.execute(query)).one_or_none()
    return (row[0], row[1]) if row else None


async def lock_event(session: AsyncSession, event_id: str) -> WebhookEvent | None:
    query = select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def overdue_pending_events(
    session: AsyncSession, *, due_before: datetime, limit: int
) -> list[tuple[str, int]]:
    query = (
        select(WebhookEvent.id, WebhookEvent.attempts)
        .where(
            WebhookEvent.status == DeliveryStatus.pending,
            WebhookEvent.next_attempt_at < due_before,
        )
        .order_by(WebhookEvent.next_attempt_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in await session.execute(query)]
