"""The outbox side of delivery: events are rows written with the state change they report,
and what an endpoint's answers do to it (disabled on 410 or after five failing days)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.base import utcnow
from service.models import Batch, DeliveryStatus, WebhookEndpoint, WebhookEvent
from service.models.webhook_event import WEBHOOK_SINK
from service.webhooks import repository
from service.webhooks.sinks import SINKS

ENDPOINT_DISABLED = "endpoint.disabled"


def new_event_id() -> str:
    return "msg_" + uuid.uuid4().hex


async def record_outbox_event(
    session: AsyncSession,
    *,
    api_key_id: uuid.UUID,
    url: str,
    type: str,
    data: dict[str, Any],
    sink: str = WEBHOOK_SINK,
    batch_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    integration_id: uuid.UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> str:
    """Write one event for the key's endpoint at `url` (made on first use); returns its id
    so the caller can enqueue it after commit (the reconciler covers a crash in between).

    A webhook's payload is {"type", "timestamp", "data"}; a sink that sends something else
    (a write-back's instructions) passes `payload` whole."""
    now = utcnow()
    event = WebhookEvent(
        id=new_event_id(),
        api_key_id=api_key_id,
        endpoint_id=await repository.endpoint_id_for(session, api_key_id, url),
        sink=sink,
        batch_id=batch_id,
        job_id=job_id,
        integration_id=integration_id,
        type=type,
        url=url,
        payload=payload
        if payload is not None
        else {"type": type, "timestamp": now.isoformat(), "data": data},
        status=DeliveryStatus.pending,
        attempts=0,
        schedule_offset=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(event)
    return event.id


async def record_event(
    session: AsyncSession,
    *,
    batch: Batch,
    type: str,
    data: dict[str, Any],
    job_id: uuid.UUID | None = None,
) -> str | None:
    """A batch's event for its callback_url, if it has one."""
    if not batch.callback_url:
        return None
    return await record_outbox_event(
        session,
        api_key_id=batch.api_key_id,
        url=batch.callback_url,
        type=type,
        data=data,
        batch_id=batch.id,
        job_id=job_id,
    )


def disabled_error(endpoint: WebhookEndpoint) -> str:
    return f"endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); not sent"


async def disable_endpoint(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    reason: str,
    now: datetime,
    *,
    settling: str,
) -> list[str]:
    """Disable the endpoint, fail its pending events (each settled by its sink, except
    `settling`, the event whose failure disabled it: the caller settles that one), and
    tell the key's other enabled endpoints, all in the caller's transaction. Returns the
    new events to enqueue."""
    if not await repository.disable_endpoint(session, endpoint.id, reason, now):
        return []  # another delivery disabled it first, and told the others
    endpoint.disabled_at, endpoint.disabled_reason = now, reason
    failed = await repository.fail_pending_events(session, endpoint.id, disabled_error(endpoint))
    settled = [await settle(session, event) for event in failed if event.id != settling]
    data = {
        "endpoint_id": str(endpoint.id),
        "host": url_host(endpoint.url),
        "reason": reason,
        "disabled_at": now.isoformat(),
    }
    others = await repository.other_enabled_endpoints(session, endpoint.api_key_id, endpoint.id)
    return [event_id for ids in settled for event_id in ids] + [
        await record_outbox_event(
            session,
            api_key_id=endpoint.api_key_id,
            url=other.url,
            type=ENDPOINT_DISABLED,
            data=data,
        )
        for other in others
    ]


async def enable_endpoint(endpoint: WebhookEndpoint) -> None:
    """Its failing run starts afresh; events failed while disabled stay failed (redeliver
    them one by one)."""
    endpoint.disabled_at = None
    endpoint.disabled_reason = None
    endpoint.failing_since = None


def redeliver(event: WebhookEvent, now: datetime) -> None:
    """A new round of the schedule for the same event id, starting now."""
    event.status = DeliveryStatus.pending
    event.schedule_offset = event.attempts
    event.next_attempt_at = now
    event.delivered_at = None


def url_host(url: str) -> str:
    """Host and port only: a callback URL's path and query may carry the receiver's token,
    and its user-info a password."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(unparseable URL)"
    if host is None:
        return "(no host)"
    return host if port is None else f"{host}:{port}"


async def settle(session: AsyncSession, event: WebhookEvent) -> list[str]:
    """An event ended (delivered, or failed for good): its sink's last word, in the same
    transaction (a write-back marks its inbound event and tells the callback_url).
    Returns the new events to enqueue."""
    sink = SINKS.get(event.sink)
    return await sink.settled(session, event) if sink is not None else []
