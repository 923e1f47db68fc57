"""A CMS job's write-back, written to the outbox in the transaction that records the job's
success (`jobs/steps.finish`); `sink.py` delivers it."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Batch, InboundEvent, Integration, Job
from service.webhooks.service import record_outbox_event

SINK = "writeback"
EVENT_TYPE = "writeback"


async def record_writeback(session: AsyncSession, batch: Batch, job: Job) -> str | None:
    """Write the write-back event for a CMS job that just succeeded (same transaction);
    its id is enqueued after commit. None when the integration writes nothing back."""
    if batch.integration_id is None:
        return None
    integration = await session.get(Integration, batch.integration_id)
    if integration is None or not integration.writeback:
        return None
    inbound = await _inbound_event_of(session, batch.id)
    if inbound is None:
        return None
    event_id = await record_outbox_event(
        session,
        api_key_id=batch.api_key_id,
        url=target_of(integration.kind, integration.writeback),
        type=EVENT_TYPE,
        data={},
        sink=SINK,
        batch_id=batch.id,
        job_id=job.id,
        integration_id=integration.id,
        payload={
            "integration_id": str(integration.id),
            "inbound_event_id": inbound.id,
            "job_id": str(job.id),
        },
    )
    inbound.writeback_status = "pending"
    return event_id


def target_of(kind: str, block: dict[str, Any]) -> str:
    """The endpoint a write-back goes to, for fairness and for the event list: the CMS's
    base URL (the generic kind's URL template, which names its host)."""
    return str(block.get("base_url") or block.get("url") or f"writeback:{kind}")


async def _inbound_event_of(session: AsyncSession, batch_id: uuid.UUID) -> InboundEvent | None:
    query = select(InboundEvent).where(InboundEvent.batch_id == batch_id).limit(1)
    return (await session.execute(query)).scalar_one_or_none()
