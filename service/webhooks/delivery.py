"""One delivery of one outbox event, for any sink: take the endpoint's slot (or park),
make the attempt under its deadline, record it whatever ends it, reschedule or settle,
and hand the slot on.

The attempt is recorded in a shielded `finally`: arq cancelling the task (its timeout, a
worker stopping) still leaves the attempt in the log and the event's next attempt moved
on, so the reconciler never sees a stale event and re-queues it at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import session_scope
from service.kit.base import utcnow
from service.logging import bind_ids, get_logger
from service.metrics import recorded as metrics
from service.models import DeliveryStatus, WebhookAttempt, WebhookEndpoint, WebhookEvent
from service.state import State
from service.webhooks import repository, service
from service.webhooks.fairness import EndpointSlots
from service.webhooks.schedule import retry_delay_s
from service.webhooks.sinks import SINKS, AttemptOutcome, longest_deadline_s

log = get_logger(__name__)

# The sink's own deadline ends an attempt; this backstop covers a sink that overruns it.
BACKSTOP_S = 2.0
# Enough for recording and handing over after the deadline; arq's timeout is longer.
LEASE_MARGIN_S = 25.0

_slots: weakref.WeakKeyDictionary[object, EndpointSlots] = weakref.WeakKeyDictionary()
_recording: set[asyncio.Task[Recorded]] = set()


def endpoint_slots(state: State) -> EndpointSlots:
    """One per Redis pool (scripts are registered once)."""
    slots = _slots.get(state.redis)
    if slots is None:
        lease = longest_deadline_s(state.settings) + BACKSTOP_S + LEASE_MARGIN_S
        slots = _slots[state.redis] = EndpointSlots(state.redis, lease_s=lease)
    return slots


def slot_limit(state: State, failing: bool) -> int:
    """A failing endpoint gets fewer slots: its backlog waits, healthy ones do not."""
    settings = state.settings
    return settings.webhook_failing_endpoint_slots if failing else settings.webhook_endpoint_slots


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class Recorded:
    """What the recording transaction decided, for the steps after commit."""

    retry_at: datetime | None = None
    attempts: int = 0
    failing: bool = False
    enqueue: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """What a delivery task should do next, decided from one read of Postgres."""

    event: WebhookEvent | None
    endpoint: WebhookEndpoint | None
    skip: str | None  # why nothing is sent now


async def plan(state: State, event_id: str) -> Plan:
    async with state.sessionmaker() as session:
        found = await repository.get_event_and_endpoint(session, event_id)
    if found is None:
        return Plan(None, None, "gone")
    event, endpoint = found
    if event.status is not DeliveryStatus.pending:
        return Plan(event, endpoint, "settled")
    if endpoint.disabled_at is not None:
        return Plan(event, endpoint, "disabled")
    if event.next_attempt_at > utcnow() + timedelta(seconds=1):
        return Plan(event, endpoint, "not due")  # its own deferred task comes later
    return Plan(event, endpoint, None)


async def attempt_and_record(state: State, event: WebhookEvent, endpoint: WebhookEndpoint) -> None:
    """The attempt, under its deadline; then the shielded recording and hand-over."""
    bind_ids(batch_id=event.batch_id, job_id=event.job_id)  # the task's own context
    sink = SINKS.get(event.sink)
    started_at, began = utcnow(), time.perf_counter()
    outcome: AttemptOutcome | None = None
    deadline_s = state.settings.webhook_timeout_s
    try:
        if sink is None:
            outcome = AttemptOutcome(None, f"no sink {event.sink!r} in this worker")
        else:
            deadline_s = sink.deadline_s(state.settings)
            async with asyncio.timeout(deadline_s + BACKSTOP_S):
                outcome = await sink.attempt(state, event)
    except TimeoutError:
        outcome = AttemptOutcome(None, f"the attempt overran its {deadline_s:g} s deadline")
    except asyncio.CancelledError:
        outcome = AttemptOutcome(None, "the attempt was cancelled (worker stopping or timeout)")
        raise
    except Exception as exc:  # a sink's bug must not leave the attempt unrecorded
        log.exception("webhook_sink_crashed", sink=event.sink)
        outcome = AttemptOutcome(None, f"the {event.sink} sink crashed: {type(exc).__name__}")
    finally:
        duration_ms = int((time.perf_counter() - began) * 1000)
        final = outcome or AttemptOutcome(None, "the attempt was interrupted")
        metrics.delivery(event.sink, final.delivered, final.permanent, duration_ms / 1000)
        task = asyncio.ensure_future(
            _record_and_hand_over(state, event, endpoint, started_at, duration_ms, final)
        )
        _recording.add(task)  # kept alive even if this task is cancelled again
        task.add_done_callback(_recording.discard)
        await asyncio.shield(task)


async def _record_and_hand_over(
    state: State,
    event: WebhookEvent,
    endpoint: WebhookEndpoint,
    started_at: datetime,
    duration_ms: int,
    outcome: AttemptOutcome,
) -> Recorded:
    from service.webhooks.tasks import enqueue_deliveries, enqueue_handed, enqueue_retry

    try:
        recorded = await record_attempt(state, event.id, started_at, duration_ms, outcome)
    finally:
        failing = not outcome.delivered
        handed = await release_slot(state, endpoint.id, event.id, failing=failing)
        await enqueue_handed(state, handed)
    if recorded.retry_at is not None:
        await enqueue_retry(state, event.id, recorded.attempts, recorded.retry_at)
    await enqueue_deliveries(state, recorded.enqueue)
    return recorded


async def release_slot(
    state: State, endpoint_id: uuid.UUID, event_id: str | None, *, failing: bool
) -> list[str]:
    """Free the slot and reserve free ones for parked events; never raises (a lost release
    ends with its lease)."""
    try:
        return await endpoint_slots(state).release(
            endpoint_id, event_id, limit=slot_limit(state, failing)
        )
    except (RedisError, OSError) as exc:
        log.warning("webhook_slot_release_failed", error=repr(exc))
        return []


async def record_attempt(
    state: State,
    event_id: str,
    started_at: datetime,
    duration_ms: int,
    outcome: AttemptOutcome,
) -> Recorded:
    """Record one attempt; reschedule, settle, or disable the endpoint."""
    recorded = Recorded()
    async with session_scope(state.sessionmaker) as session:
        event = await repository.lock_event(session, event_id)
        if event is None or event.status is not DeliveryStatus.pending:
            return recorded
        event.attempts += 1
        session.add(
            WebhookAttempt(
                event_id=event_id,
                number=event.attempts,
                started_at=started_at,
                duration_ms=duration_ms,
                status_code=outcome.status_code,
                error=outcome.error,
                response_body=outcome.response_body,
            )
        )
        now = utcnow()
        recorded.attempts = event.attempts
        if outcome.delivered:
            await repository.mark_endpoint_succeeded(session, event.endpoint_id, now)
            event.status, event.delivered_at, event.last_error = DeliveryStatus.delivered, now, None
            recorded.enqueue = await service.settle(session, event)
            return recorded
        recorded.failing = True
        event.last_error = outcome.error
        disabled = await _after_failure(state, session, event, outcome, now, recorded)
        delay = None
        if not (outcome.permanent or disabled):
            delay = retry_delay_s(
                event.attempts - event.schedule_offset,
                scale=state.settings.webhook_schedule_scale,
                retry_after_s=_scaled(state, outcome.retry_after_s),
            )
        if delay is None:
            event.status = DeliveryStatus.failed
            _log_failure(event, outcome, None, None)
            recorded.enqueue += await service.settle(session, event)
            return recorded
        event.next_attempt_at = recorded.retry_at = now + timedelta(seconds=delay)
        _log_failure(event, outcome, event.next_attempt_at, delay)
    return recorded


def _scaled(state: State, retry_after_s: float | None) -> float | None:
    if retry_after_s is None:
        return None
    return retry_after_s * state.settings.webhook_schedule_scale


async def _after_failure(
    state: State,
    session: AsyncSession,
    event: WebhookEvent,
    outcome: AttemptOutcome,
    now: datetime,
    recorded: Recorded,
) -> bool:
    """Mark the endpoint failing; disable it on a 410 or after five failing days."""
    failing_since, disabled_at = await repository.mark_endpoint_failing(
        session, event.endpoint_id, now
    )
    if disabled_at is not None:
        return True
    reason = None
    if outcome.gone:
        reason = "the endpoint answered 410 Gone"
    elif failing_since is not None and now - failing_since > timedelta(
        seconds=state.settings.webhook_disable_after_s
    ):
        reason = f"failing without a success since {failing_since.isoformat()}"
    if reason is None:
        return False
    endpoint = await session.get(WebhookEndpoint, event.endpoint_id)
    assert endpoint is not None
    recorded.enqueue += await service.disable_endpoint(
        session, endpoint, reason, now, settling=event.id
    )
    log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason=reason)
    return True


def _log_failure(
    event: WebhookEvent, outcome: AttemptOutcome, next_at: datetime | None, delay: float | None
) -> None:
    fields = {
        "event_id": event.id,
        "event_type": event.type,
        "sink": event.sink,
        "host": service.url_host(event.url),
        "attempt": event.attempts,
        "status_code": outcome.status_code,
        "error": outcome.error,
    }
    if next_at is None:
        log.warning("webhook_given_up", **fields, next_attempt_at=None)
    else:
        retry_in = round(delay or 0.0, 1)
        log.warning(
            "webhook_attempt_failed",
            **fields,
            next_attempt_at=next_at.isoformat(),
            retry_in_s=retry_in,
        )
