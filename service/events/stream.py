"""A batch's live events as a Server-Sent Events stream, for any route that streams
them (the API's, with an API key; the UI's, with its cookie).

The stream: a `retry:` hint; a `batch` snapshot read from Postgres (in a short session,
closed before anything streams), unless a Last-Event-ID resumes within the batch's
stream; the events missed since that id; then live events as they are published, with
`: ping` comments every `events_heartbeat_s` of silence. A stream lasts at most
`events_max_stream_s`; the client reconnects with Last-Event-ID and misses nothing.
After a `batch` event whose status is final, the stream stays open
`events_final_linger_s` for events another process published late, then ends (a client
should close its EventSource on the final `batch` event, or it reconnects and gets the
final snapshot again).

Stale counts: a process may publish counts it read just before the batch completed
after the final event (another process's coalesced counts). So once a stream has sent a
final `batch` event it drops later non-final ones, unless a `job` event putting a job
back in line came between: a batch retry publishes its requeued jobs before its counts,
and only a retry makes a finished batch live again.

Last-Event-ID: an id within the stream resumes after it, with exactly the events missed.
An id older than the stream keeps (trimmed, expired, or Redis was flushed) resumes from
the oldest kept, after a fresh snapshot that covers the gap. A malformed id, or one
newer than the stream's last entry (or for a stream with none), is treated as none:
snapshot, then from now (an id from the future would otherwise hide every event).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from starlette.responses import StreamingResponse

from service.events.hub import Frame, Listener, frame_of, hub_for, parse_event_id, snapshot_frame
from service.events.publish import batch_snapshots, stream_key
from service.events.schemas import HEARTBEAT
from service.logging import get_logger
from service.state import State

log = get_logger(__name__)

RETRY_MS = 3000
REPLAY_PAGE = 1000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(state: State, batch_id: uuid.UUID, last_event_id: str | None) -> StreamingResponse:
    """The StreamingResponse both the API and the UI return (authorise first)."""
    return StreamingResponse(
        sse_stream(state, batch_id, last_event_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def sse_stream(
    state: State, batch_id: uuid.UUID, last_event_id: str | None
) -> AsyncIterator[bytes]:
    """The SSE bytes of one listener (see the module's docstring). The caller has
    checked that the batch exists and may be read."""
    hub = hub_for(state)
    listener = await hub.subscribe(batch_id)
    try:
        async for chunk in _stream(state, listener, last_event_id):
            yield chunk
    finally:
        hub.unsubscribe(listener)


async def _stream(
    state: State, listener: Listener, last_event_id: str | None
) -> AsyncIterator[bytes]:
    settings = state.settings
    yield f"retry: {RETRY_MS}\n\n".encode()
    resume = parse_event_id(last_event_id)
    frames: list[Frame] = []
    covered = False
    if resume is not None:
        replayed = await _replay(state, listener.batch_id, resume)
        if replayed is None:
            resume = None  # not an id of this stream: as if malformed
        else:
            frames, covered = replayed
    if not covered:  # after the replayed events, which it is newer than
        snapshot = await _snapshot(state, listener.batch_id)
        if snapshot is False:
            return  # the batch is gone
        if snapshot is not None:
            frames.append(snapshot)
    last = resume
    final = False
    requeued = False  # a job was put back in line since the last final `batch` event
    ends_at: float | None = None
    closes_at = time.monotonic() + settings.events_max_stream_s
    while True:
        chunk: list[bytes] = []
        for frame in frames:
            position = parse_event_id(frame.event_id)
            if position is not None:
                if last is not None and position <= last:
                    continue  # already sent (read by the replay and by the hub)
                last = position
            if frame.final is not None:
                if final and not frame.final and not requeued:
                    continue  # stale counts, read before the batch ended
                final, requeued = frame.final, False
            elif frame.requeued:
                requeued = True
            chunk.append(frame.data)
        if chunk:  # what arrived together goes in one write, not one per event
            yield b"".join(chunk)
        if listener.dropped:
            log.info("events_stream_dropped", batch_id=str(listener.batch_id))
            return
        if not final:
            ends_at = None
        elif ends_at is None:
            ends_at = time.monotonic() + settings.events_final_linger_s
        timeout = min(settings.events_heartbeat_s, closes_at - time.monotonic())
        if ends_at is not None:
            timeout = min(timeout, ends_at - time.monotonic())
        if timeout <= 0:
            return
        waited = await listener.wait(timeout)
        if waited is None and ends_at is None:
            yield HEARTBEAT
        frames = waited or []


async def _replay(
    state: State, batch_id: uuid.UUID, after: tuple[int, int]
) -> tuple[list[Frame], bool] | None:
    """The stream's entries after `after`, and whether they are all the events since
    (False: the id is older than the oldest entry kept, or Redis cannot say). None: the
    id is newer than the stream's last entry, or the stream has none."""
    key = stream_key(batch_id)
    start = f"({after[0]}-{after[1]}"
    frames: list[Frame] = []
    try:
        newest = await state.redis.xrevrange(key, count=1)
        last = parse_event_id(newest[0][0].decode()) if newest else None
        if last is None or after > last:
            return None
        oldest = await state.redis.xrange(key, count=1)
        while True:
            entries = await state.redis.xrange(key, min=start, count=REPLAY_PAGE)
            frames += [frame_of(raw.decode(), fields) for raw, fields in entries]
            if len(entries) < REPLAY_PAGE:
                break
            start = f"({entries[-1][0].decode()}"
    except Exception as exc:
        log.warning("events_replay_failed", error=repr(exc))
        return [], False
    if not oldest:
        return frames, False
    first = parse_event_id(oldest[0][0].decode())
    return frames, first is not None and first <= after


async def _snapshot(state: State, batch_id: uuid.UUID) -> Frame | Literal[False] | None:
    """The batch's counts now; None if Postgres cannot say (the stream goes on without
    it), False if the batch no longer exists."""
    try:
        events = await batch_snapshots(state, [batch_id])
    except Exception as exc:
        log.warning("events_snapshot_failed", error=repr(exc))
        return None
    return snapshot_frame(state, events[0]) if events else False
