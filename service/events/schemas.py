"""What a batch's live events carry, and how they look on the wire (Server-Sent Events).

Two event types: `job` (one job's state changed) and `batch` (the batch's counts or
status changed). Both are small JSON objects; `published_at` is when the event left the
process that published it (a client can measure its lag from it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from service.batches.schemas import BatchCounts
from service.models import FINAL_BATCH_STATUSES

EventType = Literal["job", "batch"]
FINAL_STATUSES = frozenset(status.value for status in FINAL_BATCH_STATUSES)


@dataclass(frozen=True)
class BatchEvent:
    """One event of one batch, ready to publish: `data` is JSON-ready."""

    batch_id: uuid.UUID
    type: EventType
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        """A `batch` event saying the batch is over: the stream may end after it."""
        return self.type == "batch" and self.data.get("status") in FINAL_STATUSES

    @property
    def requeued(self) -> bool:
        """A `job` event putting the job back in line (a retry): its batch is live again."""
        return self.type == "job" and self.data.get("status") == "queued"


class JobEventData(BaseModel):
    """`event: job`: a job's state changed (claimed, finished, put back in line)."""

    id: uuid.UUID
    batch_id: uuid.UUID
    index: int
    status: str
    model: str
    error_code: str | None
    error_message: str | None
    cost_usd: float
    output_url: str | None
    published_at: datetime


class BatchEventData(BaseModel):
    """`event: batch`: the batch's counts as they stand (a snapshot on connect, then
    after changes, at most a few per second)."""

    id: uuid.UUID
    status: str
    counts: BatchCounts
    cost_usd: float
    completed_at: datetime | None
    published_at: datetime


def sse_frame(event_type: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE message. `data` is one line of JSON (no newline inside)."""
    head = f"id: {event_id}\n".encode() if event_id is not None else b""
    return head + b"event: " + event_type.encode() + b"\ndata: " + data + b"\n\n"


HEARTBEAT = b": ping\n\n"
