"""Queries for integrations and their inbound events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import ApiKey, InboundEvent, Integration


async def get_integration(
    session: AsyncSession, integration_id: uuid.UUID, api_key_id: uuid.UUID
) -> Integration | None:
    query = select(Integration).where(
        Integration.id == integration_id, Integration.api_key_id == api_key_id
    )
    return (await session.execute(query)).scalar_one_or_none()


# The hook's statements are built once: building one costs more than running it.
_EVENTS: Table = InboundEvent.__table__  # type: ignore[assignment]
_HOOK_INTEGRATION = (
    select(Integration, ApiKey)
    .join(ApiKey, ApiKey.id == Integration.api_key_id)
    .where(Integration.id == bindparam("integration_id"), ApiKey.revoked_at.is_(None))
)
_INSERT_EVENT = (
    insert(_EVENTS)
    .on_conflict_do_nothing(index_elements=["integration_id", "dedupe_key"])
    .returning(_EVENTS.c.id)
)
_UPDATE_EVENT = update(_EVENTS).where(_EVENTS.c.id == bindparam("event_id_"))


async def integration_for_hook(
    session: AsyncSession, integration_id: uuid.UUID
) -> tuple[Integration, ApiKey] | None:
    """The integration a hook names, with its key: one round trip. A revoked key's
    integrations take no more deliveries."""
    result = await session.execute(_HOOK_INTEGRATION, {"integration_id": integration_id})
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


async def count_rejection(session: AsyncSession, integration_id: uuid.UUID) -> None:
    await session.execute(
        update(Integration)
        .where(Integration.id == integration_id)
        .values(rejected_count=Integration.rejected_count + 1)
        .execution_options(synchronize_session=False)
    )


async def list_integrations(
    session: AsyncSession,
    api_key_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Integration]:
    query = select(Integration).where(Integration.api_key_id == api_key_id)
    if after is not None:
        query = query.where(tuple_(Integration.created_at, Integration.id) < tuple_(*after))
    query = query.order_by(Integration.created_at.desc(), Integration.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def list_events(
    session: AsyncSession,
    integration_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[InboundEvent]:
    query = select(InboundEvent).where(InboundEvent.integration_id == integration_id)
    if after is not None:
        query = query.where(tuple_(InboundEvent.received_at, InboundEvent.id) < tuple_(*after))
    query = query.order_by(InboundEvent.received_at.desc(), InboundEvent.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on (integration_id, dedupe_key): False when the
    event is already there. A concurrent insert of the same key waits for the first to
    commit (or roll back), so two deliveries of one event never both get True."""
    connection = await session.connection()
    return (await connection.execute(_INSERT_EVENT, values)).scalar_one_or_none() is not None


async def lock_event(
    session: AsyncSession, integration_id: uuid.UUID, dedupe_key: str
) -> InboundEvent:
    """The row a duplicate delivery matched, locked: a failed or ignored event may be
    processed again by one redelivery at a time."""
    query = (
        select(InboundEvent)
        .where(InboundEvent.integration_id == integration_id, InboundEvent.dedupe_key == dedupe_key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one()


async def update_event(session: AsyncSession, event_id: str, values: dict[str, Any]) -> None:
    connection = await session.connection()
    await connection.execute(_UPDATE_EVENT, {**values, "event_id_": event_id})
