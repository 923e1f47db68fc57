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
        status = "disabled" if endpoint.disabled_at else "enabled"
        return cls(**_row_fields(endpoint, cls, status=status))


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
        return cls.model_validate(attempt, from_attributes=True)


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


def _row_fields(row: object, schema: type[BaseModel], **computed: Any) -> dict[str, Any]:
    """The schema's fields, each read from the row's attribute of the same name unless
    `computed` gives it: what the API shows is the schema's choice, not the table's."""
    names = schema.model_fields
    return {name: computed[name] if name in computed else getattr(row, name) for name in names}


def _event_fields(event: WebhookEvent) -> dict[str, Any]:
    pending = event.status.value == "pending"
    return _row_fields(
        event,
        EventOut,
        status=event.status.value,
        next_attempt_at=event.next_attempt_at if pending else None,
    )
