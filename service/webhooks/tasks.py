"""arq tasks and enqueueing for outbox deliveries (webhooks and write-backs alike).

Deliveries run on their own arq queue and worker, so a slow or dead receiver never takes
a slot from image jobs; within it, an endpoint holds at most a few tasks at once and the
rest of its backlog waits parked in Redis, not in arq (`fairness.py`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from redis.exceptions import RedisError

from service.jobs.queue import DELIVER_WEBHOOK, missing_from_queue
from service.kit.base import utcnow
from service.logging import get_logger
from service.state import State
from service.webhooks import repository
from service.webhooks.delivery import (
    attempt_and_record,
    endpoint_slots,
    ms,
    plan,
    release_slot,
    slot_limit,
)
from service.webhooks.repository import Queued
from service.webhooks.service import disabled_error, settle, url_host

__all__ = ["deliver_webhook", "enqueue_deliveries", "reconcile_webhooks", "url_host"]

log = get_logger(__name__)


def delivery_job_id(event_id: str, attempts: int) -> str:
    """One arq job per attempt: arq refuses to enqueue an id twice while it is known."""
    return f"{event_id}:{attempts}"


async def _enqueue(state: State, event_id: str, job_id: str, **options: Any) -> None:
    try:
        await state.redis.enqueue_job(
            DELIVER_WEBHOOK,
            event_id,
            _job_id=job_id,
            _queue_name=state.settings.webhook_queue_name,
            **options,
        )
    except (RedisError, OSError) as exc:  # the reconciler finds it later
        log.warning("webhook_enqueue_failed", event_id=event_id, error=repr(exc))


async def enqueue_deliveries(state: State, event_ids: Sequence[str]) -> None:
    """Send new events on their way after commit: each takes (reserves) one of its
    endpoint's slots and goes to arq, or, when the endpoint is full, waits parked. Best
    effort: a Redis failure here is repaired by the reconciler."""
    if not event_ids:
        return
    async with state.sessionmaker() as session:
        queued = await repository.queued_events(session, event_ids)
    slots = endpoint_slots(state)
    for item in queued:
        try:
            grant = await slots.acquire(
                item.endpoint_id,
                item.event_id,
                limit=slot_limit(state, item.failing),
                due_ms=ms(item.next_attempt_at),
                handed=False,
            )
        except (RedisError, OSError) as exc:
            log.warning("webhook_enqueue_failed", event_id=item.event_id, error=repr(exc))
            continue
        if grant == "granted":
            await _enqueue(
                state, item.event_id, delivery_job_id(item.event_id, item.attempts), handed=True
            )


async def enqueue_handed(state: State, event_ids: Sequence[str]) -> None:
    """Parked events a finished delivery handed its slot to."""
    stamp = int(time.time() * 1000)
    for event_id in event_ids:
        await _enqueue(state, event_id, f"{event_id}:h{stamp}", handed=True)


async def enqueue_retry(state: State, event_id: str, attempts: int, at: datetime) -> None:
    await _enqueue(state, event_id, delivery_job_id(event_id, attempts), _defer_until=at)


async def deliver_webhook(ctx: dict[str, Any], event_id: str, handed: bool = False) -> None:
    with structlog.contextvars.bound_contextvars(event_id=event_id):
        await _deliver_webhook(ctx["state"], event_id, handed=handed)


async def _deliver_webhook(state: State, event_id: str, *, handed: bool = False) -> None:
    """One delivery task. `handed`: a slot was reserved for this event (at enqueue, or by
    the delivery that finished before it), and must be given back if nothing is sent."""
    planned = await plan(state, event_id)
    event, endpoint = planned.event, planned.endpoint
    if planned.skip == "disabled" and event is not None and endpoint is not None:
        await _fail_for_disabled(state, event_id, disabled_error(endpoint))
    if planned.skip is not None or event is None or endpoint is None:
        if handed and endpoint is not None:
            failing = endpoint.failing_since is not None
            await enqueue_handed(
                state, await release_slot(state, endpoint.id, event_id, failing=failing)
            )
        return
    failing = endpoint.failing_since is not None
    grant = await endpoint_slots(state).acquire(
        endpoint.id,
        event_id,
        limit=slot_limit(state, failing),
        due_ms=ms(event.next_attempt_at),
        handed=handed,
    )
    if grant != "granted":
        return  # parked (a finishing delivery hands it a slot) or already running
    await attempt_and_record(state, event, endpoint)


async def _fail_for_disabled(state: State, event_id: str, error: str) -> None:
    from service.db import session_scope
    from service.models import DeliveryStatus

    settled: list[str] = []
    async with session_scope(state.sessionmaker) as session:
        event = await repository.lock_event(session, event_id)
        if event is not None and event.status is DeliveryStatus.pending:
            event.status, event.last_error = DeliveryStatus.failed, error
            settled = await settle(session, event)
    await enqueue_deliveries(state, settled)


async def reconcile_webhooks(state: State) -> int:
    """Put back pending events Redis lost, and start endpoints whose slots were left free.

    Only events already overdue by `reconcile_stale_after_s` are looked at, so a retry
    waiting for its time is never re-queued early. An overdue event is where it should be
    if arq holds its task, or it is parked, or it holds a live slot (being delivered);
    anything else is parked again, in order of its due time. Then each of those endpoints
    hands its free slots to the head of its line (a worker that died held them)."""
    settings = state.settings
    due_before = utcnow().timestamp() - settings.reconcile_stale_after_s
    async with state.sessionmaker() as session:
        overdue = await repository.overdue_pending_events(
            session, due_before=datetime.fromtimestamp(due_before, tz=utcnow().tzinfo), limit=5_000
        )
    by_endpoint: dict[Any, list[Queued]] = defaultdict(list)
    for item in overdue:
        by_endpoint[item.endpoint_id].append(item)
    slots = endpoint_slots(state)
    restored = 0
    for endpoint_id, items in by_endpoint.items():
        parked, held = await slots.whereabouts(endpoint_id, [i.event_id for i in items])
        loose = [i for i in items if i.event_id not in parked and i.event_id not in held]
        jobs = {delivery_job_id(i.event_id, i.attempts): i for i in loose}
        missing = [jobs[job_id] for job_id in await missing_from_queue(state.redis, list(jobs))]
        await slots.park(endpoint_id, [(i.event_id, ms(i.next_attempt_at)) for i in missing])
        restored += len(missing)
        handed = await slots.release(endpoint_id, None, limit=slot_limit(state, items[0].failing))
        await enqueue_handed(state, handed)
    if restored:
        log.warning("reconciler_restored_deliveries", count=restored)
    return restored
