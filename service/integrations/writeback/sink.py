"""The write-back sink: once a CMS job has succeeded, its image goes back onto the article.

A write-back is an outbox event (sink "writeback"), written in the transaction that
records the job's success and delivered by the same machinery as webhooks: its own
attempts log, the same retry schedule, the same fairness between endpoints. It never runs
inline in the job, and once it has succeeded it is never run again for that job (the
event is delivered; a redelivery would find the image already there: every kind's
write-back is idempotent). The article is the one the webhook was about: its reference
was kept on the inbound event when the webhook was read.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import Settings
from service.integrations.kinds.base import (
    Article,
    ImageSource,
    WritebackError,
)
from service.integrations.writeback import WRITEBACKS
from service.integrations.writeback.http import transport_error
from service.integrations.writeback.outbox import SINK
from service.jobs.presenter import job_out
from service.models import Batch, DeliveryStatus, InboundEvent, Integration, Job, WebhookEvent
from service.state import State
from service.storage.base import StorageUnavailable
from service.webhooks.service import record_event
from service.webhooks.sinks import MAX_RESPONSE_BODY_CHARS, AttemptOutcome, register_sink


class WritebackSink:
    def deadline_s(self, settings: Settings) -> float:
        return settings.writeback_timeout_s

    async def attempt(self, state: State, event: WebhookEvent) -> AttemptOutcome:
        async with state.sessionmaker() as session:
            loaded = await _load(session, event)
        if isinstance(loaded, str):
            return AttemptOutcome(None, loaded, permanent=True)
        integration, inbound, job = loaded
        client = WRITEBACKS.get(integration.kind)
        if client is None:
            return AttemptOutcome(
                None, f"no write-back for kind {integration.kind}", permanent=True
            )
        try:
            config = client.config_model.model_validate(integration.writeback)
        except ValidationError as exc:  # saved before a change of the block's rules
            error = f"the integration's writeback block is not valid: {exc.errors()[0]['msg']}"
            return AttemptOutcome(None, error, permanent=True)
        article = _article_of(inbound)
        image = _image_source(state, job)
        deadline_s = self.deadline_s(state.settings)
        try:
            async with asyncio.timeout(deadline_s):
                result = await client.write_back(
                    state.http, config, article, image, writeback_env(state.settings)
                )
        except WritebackError as exc:
            return AttemptOutcome(
                exc.status_code,
                exc.message,
                permanent=exc.permanent,
                retry_after_s=exc.retry_after_s,
            )
        except TimeoutError:
            return AttemptOutcome(None, f"the write-back took longer than {deadline_s:g} s")
        except httpx.HTTPError as exc:  # a client that let one through: retried
            return AttemptOutcome(None, transport_error(exc, "write-back").message)
        except StorageUnavailable as exc:
            return AttemptOutcome(None, f"the output could not be read from storage: {exc}")
        await _keep_result(state, inbound.id, result)
        body = json.dumps(result, default=str)[:MAX_RESPONSE_BODY_CHARS]
        return AttemptOutcome(200, None, response_body=body)

    async def settled(self, session: AsyncSession, event: WebhookEvent) -> list[str]:
        """The write-back is over: say so on the inbound event and to the integration's
        callback_url (writeback.succeeded / writeback.failed)."""
        inbound_id = str(event.payload.get("inbound_event_id", ""))
        inbound = await session.get(InboundEvent, inbound_id, with_for_update=True)
        delivered = event.status is DeliveryStatus.delivered
        data: dict[str, Any] = {
            "integration_id": event.payload.get("integration_id"),
            "event_id": inbound_id,
            "job_id": event.payload.get("job_id"),
        }
        if inbound is not None:
            inbound.writeback_status = "succeeded" if delivered else "failed"
            inbound.writeback_error = None if delivered else event.last_error
            data["result"] = inbound.writeback_result
        if not delivered:
            data["error"] = event.last_error
        batch = await session.get(Batch, event.batch_id) if event.batch_id else None
        if batch is None:
            return []
        kind = "succeeded" if delivered else "failed"
        event_id = await record_event(
            session, batch=batch, type=f"writeback.{kind}", data=data, job_id=event.job_id
        )
        return [event_id] if event_id else []


async def _load(
    session: AsyncSession, event: WebhookEvent
) -> tuple[Integration, InboundEvent, Job] | str:
    """What the attempt needs, or why it can never be made."""
    payload = event.payload
    integration = await session.get(Integration, uuid.UUID(payload["integration_id"]))
    if integration is None:
        return "the integration was deleted"
    if not integration.writeback:
        return "the integration no longer writes back"
    inbound = await session.get(InboundEvent, payload["inbound_event_id"])
    if inbound is None:
        return "the inbound event is gone"
    job = await session.get(Job, uuid.UUID(payload["job_id"]))
    if job is None or job.output_key is None:
        return "the job or its output is gone"
    return integration, inbound, job


def _article_of(inbound: InboundEvent) -> Article:
    """The article as the webhook described it, as ingest read it: its reference, its
    variables, and the body as `raw`."""
    return Article(
        event_type=inbound.event_type,
        dedupe_key=inbound.dedupe_key,
        ref=dict(inbound.ref or {}),
        variables={**(inbound.variables or {}), "raw": inbound.body},
    )


def _image_source(state: State, job: Job) -> ImageSource:
    key = job.output_key or ""
    output = job_out(job, state.settings.public_url, state.storage).output
    storage = state.storage

    def open_stream() -> AsyncIterator[bytes]:
        return storage.open(key)

    return ImageSource(
        filename=key.rsplit("/", 1)[-1],
        content_type=job.output_content_type or "application/octet-stream",
        size=job.output_bytes or 0,
        sha256=job.output_sha256 or "",
        url=output.url if output else "",
        open=open_stream,
    )


async def _keep_result(state: State, inbound_id: str, result: dict[str, Any]) -> None:
    async with state.sessionmaker() as session, session.begin():
        inbound = await session.get(InboundEvent, inbound_id)
        if inbound is not None:
            inbound.writeback_result = json.loads(json.dumps(result, default=str))


def writeback_env(settings: Settings) -> dict[str, str]:
    """The environment a write-back may read: only the variables meant for it."""
    prefix = settings.writeback_env_prefix
    return {name: value for name, value in os.environ.items() if name.startswith(prefix)}


register_sink(SINK, WritebackSink())
