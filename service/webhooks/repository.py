"""Queries for the outbox, its endpoints and its delivery attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, exists, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import (
    ApiKey,
    DeliveryStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
)
from service.models.webhook_event import WEBHOOK_SINK

_Row = TypeVar("_Row")


@dataclass(frozen=True)
class Queued:
    """What enqueueing and reconciling need to know of a pending event."""

    event_id: str
    attempts: int
    endpoint_id: uuid.UUID
    next_attempt_at: datetime
    failing: bool


async def endpoint_id_for(session: AsyncSession, api_key_id: uuid.UUID, url: str) -> uuid.UUID:
    """The endpoint of (key, url), made on first use. Looked up first and inserted without
    a lock, so transactions recording events for one endpoint never wait on each other.
    Remembered for the transaction (a group of outcomes of one batch records many events
    for one URL), not longer: a rollback may take a new endpoint with it."""
    transaction = session.get_transaction()
    remembered = session.info.get("endpoint_ids")
    if transaction is None or remembered is None or remembered[0] is not transaction:
        remembered = session.info["endpoint_ids"] = (transaction, {})
    known: dict[tuple[uuid.UUID, str], uuid.UUID] = remembered[1]
    if (api_key_id, url) in known:
        return known[(api_key_id, url)]
    query = select(WebhookEndpoint.id).where(
        WebhookEndpoint.api_key_id == api_key_id, WebhookEndpoint.url == url
    )
    found = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        inserted = await session.execute(
            insert(WebhookEndpoint)
            .values(id=uuid.uuid4(), api_key_id=api_key_id, url=url)
            .on_conflict_do_nothing(index_elements=["api_key_id", "url"])
            .returning(WebhookEndpoint.id)
        )
        found = inserted.scalar_one_or_none() or (await session.execute(query)).scalar_one()
    known[(api_key_id, url)] = found
    return found


async def get_event_and_endpoint(
    session: AsyncSession, event_id: str
) -> tuple[WebhookEvent, WebhookEndpoint] | None:
    query = (
        select(WebhookEvent, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookEvent.endpoint_id)
        .where(WebhookEvent.id == event_id)
    )
    row = (await session.execute(query)).one_or_none()
    return (row[0], row[1]) if row else None


async def signing_secrets(session: AsyncSession, api_key_id: uuid.UUID, now: datetime) -> list[str]:
    """The key's current webhook secret, and its previous one while that is still valid."""
    query = select(
        ApiKey.webhook_secret,
        ApiKey.previous_webhook_secret,
        ApiKey.previous_webhook_secret_expires_at,
    ).where(ApiKey.id == api_key_id)
    row = (await session.execute(query)).one_or_none()
    if row is None:
        return []
    current, previous, expires_at = row
    if previous and expires_at is not None and expires_at > now:
        return [current, previous]
    return [current]


async def lock_event(session: AsyncSession, event_id: str) -> WebhookEvent | None:
    query = select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def queued_events(session: AsyncSession, event_ids: Sequence[str]) -> list[Queued]:
    query = _queued_query().where(
        WebhookEvent.id.in_(event_ids), WebhookEvent.status == DeliveryStatus.pending
    )
    return [Queued(row[0], row[1], row[2], row[3], row[4]) for row in await session.execute(query)]


async def overdue_pending_events(
    session: AsyncSession, *, due_before: datetime, limit: int
) -> list[Queued]:
    query = (
        _queued_query()
        .where(
            WebhookEvent.status == DeliveryStatus.pending,
            WebhookEvent.next_attempt_at < due_before,
        )
        .order_by(WebhookEvent.next_attempt_at)
        .limit(limit)
    )
    return [Queued(row[0], row[1], row[2], row[3], row[4]) for row in await session.execute(query)]


def _queued_query() -> Select[str, int, uuid.UUID, datetime, bool]:
    return select(
        WebhookEvent.id,
        WebhookEvent.attempts,
        WebhookEvent.endpoint_id,
        WebhookEvent.next_attempt_at,
        WebhookEndpoint.failing_since.is_not(None),
    ).join(WebhookEndpoint, WebhookEndpoint.id == WebhookEvent.endpoint_id)


async def mark_endpoint_succeeded(
    session: AsyncSession, endpoint_id: uuid.UUID, now: datetime
) -> None:
    await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(failing_since=None, last_success_at=now)
    )


async def mark_endpoint_failing(
    session: AsyncSession, endpoint_id: uuid.UUID, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """Start (or continue) the endpoint's failing run; returns (failing_since, disabled_at)."""
    result = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(failing_since=func.coalesce(WebhookEndpoint.failing_since, now))
        .returning(WebhookEndpoint.failing_since, WebhookEndpoint.disabled_at)
    )
    row = result.one()
    return row[0], row[1]


async def disable_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, reason: str, now: datetime
) -> bool:
    """Disable it unless it already is; True when this call disabled it."""
    result = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
        .returning(WebhookEndpoint.id)
    )
    return result.scalar_one_or_none() is not None


async def fail_pending_events(
    session: AsyncSession, endpoint_id: uuid.UUID, error: str
) -> list[WebhookEvent]:
    """Fail the endpoint's pending events; returns them, for their sinks to settle. Rows
    another delivery holds locked are skipped (no lock-order deadlock): they fail on
    their own when next tried."""
    locked = (
        select(WebhookEvent.id)
        .where(
            WebhookEvent.endpoint_id == endpoint_id,
            WebhookEvent.status == DeliveryStatus.pending,
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(locked))
        .values(status=DeliveryStatus.failed, last_error=error)
        .returning(WebhookEvent)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def other_enabled_endpoints(
    session: AsyncSession, api_key_id: uuid.UUID, but: uuid.UUID
) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint)
        .where(
            WebhookEndpoint.api_key_id == api_key_id,
            WebhookEndpoint.id != but,
            WebhookEndpoint.disabled_at.is_(None),
            # Only receivers of webhooks: a CMS's write-back endpoint takes no notices.
            exists().where(
                WebhookEvent.endpoint_id == WebhookEndpoint.id,
                WebhookEvent.sink == WEBHOOK_SINK,
            ),
        )
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list((await session.execute(query)).scalars())


# --- what the API reads --------------------------------------------------------------


async def _one_or_none(session: AsyncSession, query: Select[_Row], for_update: bool) -> _Row | None:
    """The one row a key owns (or none), locked when it is about to change."""
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def own_endpoint(
    session: AsyncSession, api_key_id: uuid.UUID, endpoint_id: uuid.UUID, *, for_update: bool
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.api_key_id == api_key_id
    )
    return await _one_or_none(session, query, for_update)


async def list_endpoints(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.api_key_id == api_key_id)
    if after is not None:
        query = query.where(tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id) > after)
    query = query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id).limit(limit)
    return list((await session.execute(query)).scalars())


async def own_event(
    session: AsyncSession, api_key_id: uuid.UUID, event_id: str, *, for_update: bool = False
) -> WebhookEvent | None:
    query = select(WebhookEvent).where(
        WebhookEvent.id == event_id, WebhookEvent.api_key_id == api_key_id
    )
    return await _one_or_none(session, query, for_update)


async def list_events(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    status: DeliveryStatus | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[WebhookEvent]:
    """Newest first."""
    query = select(WebhookEvent).where(WebhookEvent.api_key_id == api_key_id)
    if status is not None:
        query = query.where(WebhookEvent.status == status)
    if after is not None:
        query = query.where(tuple_(WebhookEvent.created_at, WebhookEvent.id) < after)
    query = query.order_by(WebhookEvent.created_at.desc(), WebhookEvent.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def attempts_of(session: AsyncSession, event_id: str) -> list[WebhookAttempt]:
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.event_id == event_id)
        .order_by(WebhookAttempt.number, WebhookAttempt.id)
    )
    return list((await session.execute(query)).scalars())
