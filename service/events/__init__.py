"""Live batch events: published to Redis after commit, streamed as Server-Sent Events.

- `publish_batch_events(state, events)`: after commit, never raises.
- `publish_noted(state, *sessions)`: after commit, publishes the job and batch changes
  those sessions flushed (service.events.capture notes them on every session).
- `sse_stream(state, batch_id, last_event_id)`: the SSE bytes of one listener;
  `sse_response(...)` wraps it in the StreamingResponse every route returns.
"""

from service.events import capture as capture  # registers the flush hook
from service.events.publish import (
    batch_snapshots,
    publish_batch_counts,
    publish_batch_events,
    publish_bulk_change,
    publish_noted,
    stream_key,
)
from service.events.schemas import BatchEvent, BatchEventData, JobEventData
from service.events.stream import SSE_HEADERS, sse_response, sse_stream

__all__ = [
    "SSE_HEADERS",
    "BatchEvent",
    "BatchEventData",
    "JobEventData",
    "batch_snapshots",
    "publish_batch_counts",
    "publish_batch_events",
    "publish_bulk_change",
    "publish_noted",
    "sse_response",
    "sse_stream",
    "stream_key",
]
