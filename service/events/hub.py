"""One reader per process for every live listener: XREAD BLOCK over the streams of the
batches that have listeners, fanned out to each listener's bounded buffer.

A listener never holds a database connection nor a Redis connection of its own: 200
browsers watching one batch cost one XREAD. A listener whose buffer is full (a client
that stopped reading) is dropped, and only it: its stream ends, and its client
reconnects with Last-Event-ID. When Redis comes back after an error, every listened
batch gets a fresh snapshot from Postgres, which covers whatever was lost meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from service.events.publish import batch_snapshots, encode_event, stream_key
from service.events.schemas import BatchEvent, sse_frame
from service.logging import get_logger
from service.state import State

log = get_logger(__name__)

# How long one XREAD waits for events before it is made again (a new batch's stream is
# added sooner, by a wake-up entry).
BLOCK_MS = 5000
READ_COUNT = 1000
ERROR_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)


# ASCII digits only: str.isdigit() also takes "²", which int() refuses.
_EVENT_ID = re.compile(r"([0-9]{1,15})-([0-9]{1,19})")


@dataclass(frozen=True)
class Frame:
    """One SSE message, encoded once for every listener. `event_id` is the stream entry
    id (None for a snapshot, which is not in the stream)."""

    event_id: str | None
    data: bytes
    # A `batch` event: whether the batch is final. None for a `job` event.
    final: bool | None
    # A `job` event putting its job back in line (a retry): the batch is live again.
    requeued: bool = False


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """A stream entry id ("1700000000000-3") as a comparable pair; None if malformed."""
    match = _EVENT_ID.fullmatch(value.strip()) if value is not None else None
    return (int(match[1]), int(match[2])) if match else None


def frame_of(event_id: str, fields: dict[bytes, bytes]) -> Frame:
    event_type = fields.get(b"t", b"job").decode()
    data = fields.get(b"d", b"{}")
    final = fields.get(b"f") == b"1" if event_type == "batch" else None
    requeued = fields.get(b"q") == b"1"
    return Frame(event_id, sse_frame(event_type, data, event_id), final, requeued)


def snapshot_frame(state: State, event: BatchEvent) -> Frame:
    """A snapshot read from Postgres: not in the stream, so it has no id."""
    fields = encode_event(event, state, time.time())
    return Frame(None, sse_frame(event.type, fields["d"]), event.final)


@dataclass(eq=False)
class Listener:
    batch_id: uuid.UUID
    limit: int
    frames: deque[Frame] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def offer(self, frame: Frame) -> bool:
        if self.dropped:
            return False
        if len(self.frames) >= self.limit:
            self.dropped = True
            self.frames.clear()
            self.wake.set()
            return False
        self.frames.append(frame)
        self.wake.set()
        return True

    async def wait(self, timeout: float) -> list[Frame] | None:
        """The frames waiting, or None if none came within `timeout` seconds."""
        if not self.frames and not self.dropped:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                return None
        self.wake.clear()
        frames = list(self.frames)
        self.frames.clear()
        return frames


@dataclass(eq=False)
class _Stream:
    position: str
    listeners: set[Listener] = field(default_factory=set)


class Hub:
    def __init__(self, state: State) -> None:
        self.state = state
        self.streams: dict[str, _Stream] = {}
        self.task: asyncio.Task[None] | None = None
        self.wake_key = f"dr:ev:wake:{uuid.uuid4().hex}"
        self.wake_position = "0-0"
        self._stopping: asyncio.Task[None] | None = None

    def end_all(self) -> None:
        """Every stream of this hub ends now (the server is stopping); each client
        resumes elsewhere by Last-Event-ID."""
        for stream in self.streams.values():
            for listener in stream.listeners:
                listener.dropped = True
                listener.wake.set()

    @property
    def listener_count(self) -> int:
        return sum(len(stream.listeners) for stream in self.streams.values())

    async def subscribe(self, batch_id: uuid.UUID) -> Listener:
        """Events of the batch published from now on reach the listener (take its
        snapshot after this, so that nothing falls between)."""
        key = stream_key(batch_id)
        listener = Listener(batch_id, self.state.settings.events_listener_buffer)
        stream = self.streams.get(key)
        if stream is None:
            position = await self._last_id(key)
            stream = self.streams.setdefault(key, _Stream(position))
            stream.listeners.add(listener)
            await self._wake_reader()
        else:
            stream.listeners.add(listener)
        self._ensure_reader()
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        key = stream_key(listener.batch_id)
        stream = self.streams.get(key)
        if stream is None:
            return
        stream.listeners.discard(listener)
        if not stream.listeners:
            del self.streams[key]
            if not self.streams:  # let the reader see it has nothing left to read
                try:
                    self._stopping = asyncio.get_running_loop().create_task(self._wake_reader())
                except RuntimeError:  # no loop any more (a generator finalised late)
                    pass

    async def _last_id(self, key: str) -> str:
        """Where reading starts for a stream not read yet: its last entry."""
        try:
            last = await self.state.redis.xrevrange(key, count=1)
        except Exception as exc:
            log.warning("events_redis_unavailable", error=repr(exc))
            return f"{int(time.time() * 1000)}-0"
        return last[0][0].decode() if last else "0-0"

    async def _wake_reader(self) -> None:
        """A blocked XREAD does not know of the new stream: an entry in the hub's own
        wake-up stream ends its wait."""
        if self.task is None or self.task.done():
            return
        try:
            pipe = self.state.redis.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1)
            pipe.expire(self.wake_key, 60)
            await pipe.execute()
        except Exception as exc:  # the reader finds the stream within BLOCK_MS anyway
            log.warning("events_wake_failed", error=repr(exc))

    def _ensure_reader(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        failures = 0
        while self.streams:
            positions = {key: stream.position for key, stream in self.streams.items()}
            positions[self.wake_key] = self.wake_position
            try:
                answer = await self.state.redis.xread(
                    positions,  # type: ignore[arg-type]
                    # A burst never fills a buffer that was keeping up.
                    count=min(READ_COUNT, max(1, self.state.settings.events_listener_buffer // 2)),
                    block=BLOCK_MS,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("events_read_failed", error=repr(exc))
                await asyncio.sleep(ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)])
                failures += 1
                continue
            try:
                if failures:
                    failures = 0
                    await self._resync()
                for raw_key, entries in answer or []:
                    self._fan_out(raw_key.decode(), entries)
            except Exception:  # never let one bad entry stop every listener's events
                log.exception("events_fan_out_failed")

    def _fan_out(self, key: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if key == self.wake_key:
            self.wake_position = entries[-1][0].decode()
            return
        stream = self.streams.get(key)
        if stream is None:
            return
        since = parse_event_id(stream.position)
        for raw_id, fields in entries:
            frame = frame_of(raw_id.decode(), fields)
            position = parse_event_id(frame.event_id)
            if since is not None and position is not None and position <= since:
                continue  # read for a stream since removed and listened to again
            stream.position = frame.event_id or stream.position
            for listener in list(stream.listeners):
                if not listener.offer(frame):
                    log.info("events_listener_dropped", batch_id=str(listener.batch_id))
                    stream.listeners.discard(listener)
        if not stream.listeners:
            self.streams.pop(key, None)

    async def _resync(self) -> None:
        """After Redis was away: what was published meanwhile is lost; a snapshot per
        listened batch (one query for all of them) covers it."""
        batch_ids = {next(iter(s.listeners)).batch_id for s in self.streams.values() if s.listeners}
        try:
            events = await batch_snapshots(self.state, batch_ids)
        except Exception as exc:
            log.warning("events_resync_failed", error=repr(exc))
            return
        for event in events:
            frame = snapshot_frame(self.state, event)
            stream = self.streams.get(stream_key(event.batch_id))
            for listener in list(stream.listeners if stream else ()):
                listener.offer(frame)


_HUBS: dict[int, Hub] = {}


def end_all_streams() -> None:
    """From a signal handler: end every open stream of the process, in its own loop."""
    for hub in list(_HUBS.values()):
        task = hub.task
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(hub.end_all)


def hub_for(state: State) -> Hub:
    """The process's hub for this state (created on first use)."""
    found = _HUBS.get(id(state))
    if found is None or found.state is not state:
        found = _HUBS[id(state)] = Hub(state)
    return found
