"""Bodies of /v1/webhooks: the key's endpoints and its outbox events with their attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.models import WebhookAttempt, WebhookEndpoint, WebhookEvent

EventStatusName = Literal["pending", "delivered", "failed"]


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    status: Literal["enabled", "disabled"]
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None = Field(
        description="The first failure since the last success; none while it is healthy"
    )
    last_success_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            status="disabled" if endpoint.disabled_at else "enabled",
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
            failing_since=endpoint.failing_since,
            last_success_at=endpoint.last_success_at,
            created_at=endpoint.created_at,
        )


class EndpointPage(BaseModel):
    items: list[EndpointOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: str = Field(description="The Standard Webhooks webhook-id, the same on every attempt")
    type: str
    sink: str
    status: EventStatusName
    endpoint_id: uuid.UUID
    url: str
    batch_id: uuid.UUID | None
    job_id: uuid.UUID | None
    integration_id: uuid.UUID | None
    attempts: int
    next_attempt_at: datetime | None = Field(description="Set while the event is pending")
    delivered_at: datetime | None
    last_error: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: WebhookEvent) -> EventOut:
        return cls(**_event_fields(event))


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None = Field(description="At most 20 KB of the receiver's answer")

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> AttemptOut:
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            error=attempt.error,
            response_body=attempt.response_body,
        )


class EventDetail(EventOut):
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]

    @classmethod
    def with_attempts(cls, event: WebhookEvent, attempts: list[WebhookAttempt]) -> EventDetail:
        return cls(
            **_event_fields(event),
            payload=event.payload,
            attempt_log=[AttemptOut.of(a) for a in attempts],
        )


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


def _event_fields(event: WebhookEvent) -> dict[str, Any]:
    pending = event.status.value == "pending"
    return {
        "id": event.id,
        "type": event.type,
        "sink": event.sink,
        "status": event.status.value,
        "endpoint_id": event.endpoint_id,
        "url": event.url,
        "batch_id": event.batch_id,
        "job_id": event.job_id,
        "integration_id": event.integration_id,
        "attempts": event.attempts,
        "next_attempt_at": event.next_attempt_at if pending else None,
        "delivered_at": event.delivered_at,
        "last_error": event.last_error,
        "created_at": event.created_at,
    }
