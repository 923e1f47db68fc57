"""Publishing a batch's events: after commit, to the batch's Redis stream.

The events are a convenience; Postgres is the truth. Publishing never raises and never
runs inside a transaction: a Redis that is away is logged and skipped, and a client
catches up from the snapshot it gets on (re)connect.

Batch counts are not computed per job event (at 100 jobs/s that is a query each):
a job event marks its batch, and each process publishes the batch's counts at most
once per `events_coalesce_s` (one grouped count query), and at once when the batch's
status changed (it started, completed, was cancelled or retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from service.batches.repository import BatchTotals, totals_for
from service.events import repository
from service.events.capture import job_data, take_noted
from service.events.schemas import BatchEvent
from service.logging import get_logger
from service.models import Batch, JobStatus
from service.state import State

log = get_logger(__name__)

STREAM_PREFIX = "dr:ev:"
MAX_ENDED = 10_000


def stream_key(batch_id: uuid.UUID | str) -> str:
    return f"{STREAM_PREFIX}{batch_id}"


def encode_event(event: BatchEvent, state: State, published_at: float) -> dict[str, bytes]:
    """The stream entry's fields: `t` (type), `d` (the JSON the client gets), `f` (1 if
    the batch is final: the stream may end), `q` (1 for a job put back in line: what
    lets a stream take the batch's non-final counts after its final ones, a retry)."""
    data = dict(event.data)
    if event.type == "job":
        key = data.pop("output_key", None)
        data["output_url"] = _output_url(state, data["id"], key) if key else None
    data["published_at"] = datetime.fromtimestamp(published_at, UTC).isoformat()
    return {
        "t": event.type.encode(),
        "d": json.dumps(data, separators=(",", ":"), default=str).encode(),
        "f": b"1" if event.final else b"0",
        "q": b"1" if event.requeued else b"0",
    }


def _output_url(state: State, job_id: str, key: str) -> str:
    """The same URL the API shows for the output (service.jobs.presenter)."""
    try:
        url = state.storage.url(key)
    except Exception:  # a storage that cannot sign now: the API's own route stands in
        url = None
    return url or f"{state.settings.public_url.rstrip('/')}/v1/jobs/{job_id}/output"


async def publish_batch_events(
    state: State, events: Sequence[BatchEvent], *, coalesced: bool = False
) -> None:
    """XADD each event to its batch's stream, in order, in one round trip. Call after
    commit. Never raises: Redis away is logged and skipped. Job events also mark their
    batches for a coalesced `batch` event. `coalesced`: counts the coalescer read a
    while ago, dropped if not final for a batch this process has seen end since
    (CountsCoalescer.ended): read before the completion, they would follow its event."""
    ended = counts_for(state).ended
    if coalesced:
        events = [e for e in events if e.final or e.batch_id not in ended]
    for event in events:
        if event.final:
            ended[event.batch_id] = None
            while len(ended) > MAX_ENDED:
                del ended[next(iter(ended))]
        elif event.requeued:  # retried: its counts are news again
            ended.pop(event.batch_id, None)
    if not events:
        return
    settings = state.settings
    now = time.time()
    try:
        pipe = state.redis.pipeline(transaction=False)
        keys: set[str] = set()
        for event in events:
            key = stream_key(event.batch_id)
            keys.add(key)
            fields: Any = encode_event(event, state, now)
            pipe.xadd(key, fields, maxlen=settings.events_stream_maxlen, approximate=True)
        for key in keys:
            pipe.expire(key, settings.events_stream_ttl_s)
        await pipe.execute()
    except Exception as exc:  # the events are a convenience: never fail the caller
        log.warning("events_not_published", events=len(events), error=repr(exc))
    job_batches = {event.batch_id for event in events if event.type == "job"}
    if job_batches:
        counts_for(state).mark(job_batches)


async def publish_noted(state: State, *sessions: Any) -> None:
    """After these sessions committed: publish the job events noted in them
    (service.events.capture), and the counts of batches whose status changed, at once."""
    events: list[BatchEvent] = []
    changed: set[uuid.UUID] = set()
    for session in sessions:
        noted, batches = take_noted(session)
        events += noted
        changed |= batches
    await publish_batch_events(state, events)
    if changed:  # now, and instead of the coalesced counts the job events asked for
        counts_for(state).pending -= changed
        await publish_batch_counts(state, changed)


async def batch_snapshots(state: State, batch_ids: Iterable[uuid.UUID]) -> list[BatchEvent]:
    """`batch` events read from Postgres now, in a short session of their own (closed
    before this returns). A batch that no longer exists has none."""
    ids = list(batch_ids)
    async with state.sessionmaker() as session:
        rows = await session.scalars(select(Batch).where(Batch.id.in_(ids)))
        batches = {batch.id: batch for batch in rows}
        totals = await totals_for(session, list(batches), by_model=False)
    return [_batch_event(batches[batch_id], totals[batch_id]) for batch_id in batches]


def _batch_event(batch: Batch, totals: BatchTotals) -> BatchEvent:
    counts = totals.counts
    data = {
        "id": str(batch.id),
        "status": batch.status.value,
        "counts": {
            "total": batch.job_count,
            "queued": counts.get("queued", 0),
            "running": counts.get("running", 0),
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
        },
        "cost_usd": float(totals.cost_usd),
        "completed_at": batch.completed_at.isoformat() if batch.completed_at else None,
    }
    return BatchEvent(batch.id, "batch", data)


async def publish_batch_counts(
    state: State, batch_ids: Iterable[uuid.UUID], *, coalesced: bool = False
) -> None:
    """Publish the batches' counts now (one grouped query). Never raises."""
    try:
        events = await batch_snapshots(state, batch_ids)
    except Exception as exc:
        log.warning("batch_counts_not_read", error=repr(exc))
        return
    await publish_batch_events(state, events, coalesced=coalesced)


class CountsCoalescer:
    """Per process (per State): batches whose counts changed, published together at
    most once per `events_coalesce_s`."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.pending: set[uuid.UUID] = set()
        self.task: asyncio.Task[None] | None = None
        # Batches whose final event this process published (oldest first, at most
        # MAX_ENDED), until a job of theirs is put back in line.
        self.ended: dict[uuid.UUID, None] = {}
        # Set when the process closes: what is owed is published now, not after the wait.
        self.hurry = asyncio.Event()

    def mark(self, batch_ids: Iterable[uuid.UUID]) -> None:
        self.pending.update(batch_ids)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), self.state.settings.events_coalesce_s)
            batch_ids, self.pending = self.pending, set()
            await publish_batch_counts(self.state, batch_ids, coalesced=True)


_COUNTS: dict[int, CountsCoalescer] = {}


def counts_for(state: State) -> CountsCoalescer:
    found = _COUNTS.get(id(state))
    if found is None or found.state is not state:
        found = _COUNTS[id(state)] = CountsCoalescer(state)
    return found


async def settle_counts(state: State) -> None:
    """Let the counts this process still owes finish publishing, then forget the State:
    before it closes, and before tests empty the tables (a TRUNCATE beside the counts'
    query can deadlock)."""
    found = _COUNTS.pop(id(state), None)
    if found is None or found.state is not state or found.task is None or found.task.done():
        return
    found.hurry.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(found.task, timeout=10)


async def publish_bulk_change(
    state: State,
    batch_id: uuid.UUID,
    *,
    job_ids: Sequence[uuid.UUID] | None = None,
    status: JobStatus | None = None,
    since: datetime | None = None,
) -> None:
    """After a bulk UPDATE committed (a batch's cancel or retry): a `job` event for each
    job it changed (read back in a short session), then the batch's counts. Never raises."""
    try:
        async with state.sessionmaker() as session:
            jobs = await repository.changed_jobs(
                session, batch_id, job_ids=job_ids, status=status, since=since
            )
            events = [BatchEvent(batch_id, "job", job_data(job)) for job in jobs]
    except Exception as exc:
        log.warning("changed_jobs_not_read", error=repr(exc))
        events = []
    await publish_batch_events(state, events)
    await publish_batch_counts(state, [batch_id])
