"""Delivering outbox events to callers' callback URLs (Standard Webhooks).

Deliveries run on their own arq queue and worker, so a slow or dead receiver never
takes a slot from image jobs. Each attempt is recorded; a failed one is rescheduled
with backoff until the event is older than the retry window (about a day).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from redis.exceptions import RedisError

from service.db import session_scope
from service.jobs.queue import DELIVER_WEBHOOK, missing_from_queue
from service.kit.base import utcnow
from service.kit.signing import sign
from service.logging import get_logger
from service.models import DeliveryStatus, WebhookAttempt
from service.state import State
from service.webhooks import repository
from service.webhooks.service import retry_delay_s
from service.webhooks.ssrf import blocked_reason

log = get_logger(__name__)


def delivery_job_id(event_id: str, attempts: int) -> str:
    """One arq job per attempt: arq refuses to enqueue an id twice while it is known."""
    return f"{event_id}:{attempts}"


async def enqueue_deliveries(state: State, event_ids: Sequence[str]) -> None:
    """Best effort: a Redis failure here is repaired by the reconciler."""
    for event_id in event_ids:
        try:
            await state.redis.enqueue_job(
                DELIVER_WEBHOOK,
                event_id,
                _job_id=delivery_job_id(event_id, 0),
                _queue_name=state.settings.webhook_queue_name,
            )
        except (RedisError, OSError) as exc:
            log.warning("webhook_enqueue_failed", event_id=event_id, error=repr(exc))


async def deliver_webhook(ctx: dict[str, Any], event_id: str) -> None:
    with structlog.contextvars.bound_contextvars(event_id=event_id):
        await _deliver_webhook(ctx["state"], event_id)


async def _deliver_webhook(state: State, event_id: str) -> None:
    async with state.sessionmaker() as session:
        found = await repository.get_event_with_secret(session, event_id)
    if found is None or found[0].status is not DeliveryStatus.pending:
        return
    event, secret = found
    if not state.settings.webhooks_may_reach_private_networks:
        reason = await blocked_reason(event.url)
        if reason is not None:
            await _record_attempt(state, event_id, utcnow(), 0, None, reason, final=True)
            return
    body = json.dumps(event.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, event.id, timestamp, body),
    }
    started_at = utcnow()
    began = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        # Streamed and never read: a receiver's answer is its status, not its body.
        async with state.http.stream("POST", event.url, content=body, headers=headers) as response:
            status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"receiver answered HTTP {status_code}"
    except httpx.InvalidURL as exc:  # no retry can fix the address itself
        error = f"callback_url cannot be used: {exc}"
        await _record_attempt(state, event_id, started_at, 0, None, error, final=True)
        return
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = int((time.perf_counter() - began) * 1000)
    await _record_attempt(state, event_id, started_at, duration_ms, status_code, error)


async def _record_attempt(
    state: State,
    event_id: str,
    started_at: datetime,
    duration_ms: int,
    status_code: int | None,
    error: str | None,
    *,
    final: bool = False,
) -> None:
    """Record one attempt; on failure, reschedule it unless `final` or past the window."""
    settings = state.settings
    retry_job: tuple[str, float] | None = None
    async with session_scope(state.sessionmaker) as session:
        event = await repository.lock_event(session, event_id)
        if event is None or event.status is not DeliveryStatus.pending:
            return
        event.attempts += 1
        session.add(
            WebhookAttempt(
                event_id=event_id,
                number=event.attempts,
                started_at=started_at,
                duration_ms=duration_ms,
                status_code=status_code,
                error=error,
            )
        )
        now = utcnow()
        if error is None:
            event.status = DeliveryStatus.delivered
            event.delivered_at = now
            event.last_error = None
            return
        event.last_error = error
        delay = retry_delay_s(
            event.attempts,
            base_s=settings.webhook_backoff_base_s,
            cap_s=settings.webhook_backoff_cap_s,
        )
        give_up_at = event.created_at + timedelta(seconds=settings.webhook_retry_window_s)
        failure = {
            "event_id": event_id,
            "event_type": event.type,
            "host": url_host(event.url),
            "attempt": event.attempts,
            "status_code": status_code,
            "error": error,
        }
        if final or now + timedelta(seconds=delay) > give_up_at:
            event.status = DeliveryStatus.failed
            log.warning("webhook_given_up", **failure, next_attempt_at=None)
            return
        event.next_attempt_at = now + timedelta(seconds=delay)
        log.warning(
            "webhook_attempt_failed",
            **failure,
            next_attempt_at=event.next_attempt_at.isoformat(),
            retry_in_s=round(delay, 1),
        )
        retry_job = (delivery_job_id(event_id, event.attempts), delay)
    if retry_job is not None:
        job_id, delay = retry_job
        try:
            await state.redis.enqueue_job(
                DELIVER_WEBHOOK,
                event_id,
                _job_id=job_id,
                _defer_by=delay,
                _queue_name=settings.webhook_queue_name,
            )
        except (RedisError, OSError) as exc:
            log.warning("webhook_enqueue_failed", error=repr(exc))


def url_host(url: str) -> str:
    """Host and port only: a callback URL's path and query may carry the receiver's token,
    and its user-info a password."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(unparseable URL)"
    if host is None:
        return "(no host)"
    return host if port is None else f"{host}:{port}"


async def reconcile_webhooks(state: State) -> int:
    """Re-enqueue pending deliveries whose arq job Redis no longer has."""
    settings = state.settings
    due_before = utcnow() - timedelta(seconds=settings.reconcile_stale_after_s)
    async with state.sessionmaker() as session:
        overdue = await repository.overdue_pending_events(
            session, due_before=due_before, limit=5_000
        )
    by_job_id = {delivery_job_id(event_id, attempts): event_id for event_id, attempts in overdue}
    missing = await missing_from_queue(state.redis, list(by_job_id))
    for job_id in missing:
        await state.redis.enqueue_job(
            DELIVER_WEBHOOK,
            by_job_id[job_id],
            _job_id=job_id,
            _queue_name=settings.webhook_queue_name,
        )
    if missing:
        log.warning("reconciler_restored_deliveries", count=len(missing))
    return len(missing)
