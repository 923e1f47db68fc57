"""The outbox side of webhooks: events are rows written with the state change they report."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.backoff import exponential_backoff
from service.kit.base import utcnow
from service.models import Batch, DeliveryStatus, WebhookEvent


def new_event_id() -> str:
    return "msg_" + uuid.uuid4().hex


async def record_event(
    session: AsyncSession,
    *,
    batch: Batch,
    type: str,
    data: dict[str, Any],
    job_id: uuid.UUID | None = None,
) -> str | None:
    """Write an event for the batch's callback_url, if it has one; returns its id so the
    caller can enqueue delivery after commit (the reconciler covers a crash in between)."""
    if not batch.callback_url:
        return None
    now = utcnow()
    event = WebhookEvent(
        id=new_event_id(),
        api_key_id=batch.api_key_id,
        batch_id=batch.id,
        job_id=job_id,
        type=type,
        url=batch.callback_url,
        payload={"type": type, "timestamp": now.isoformat(), "data": data},
        status=DeliveryStatus.pending,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(event)
    return event.id


def retry_delay_s(attempts: int, *, base_s: float, cap_s: float) -> float:
    """x3 per attempt, capped, jittered over the upper half: receivers that failed
    together do not all come back at once, and none comes back too early."""
    return exponential_backoff(attempts, base_s=base_s, cap_s=cap_s, factor=3, full_jitter=False)
