"""One attempt against real receivers: its total deadline, no redirects, the 20 KB body
cap, Retry-After, and a record whatever ends it (cancellation included)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from service.kit.base import utcnow
from service.models import DeliveryStatus
from service.state import State
from service.webhooks.delivery import endpoint_slots
from service.webhooks.sinks import MAX_RESPONSE_BODY_CHARS
from service.webhooks.tasks import _deliver_webhook
from tests.conftest import Caller
from tests.webhooks.helpers import attempts, endpoint_of, event, new_event
from tests.webhooks.receiver import running_receiver, running_trickler


async def test_a_trickling_receiver_is_cut_off_at_the_total_deadline(
    state: State, caller: Caller
) -> None:
    state.settings.webhook_timeout_s = 0.5
    async with running_trickler(interval_s=0.2) as trickler:  # the status line takes ~8 s
        event_id = await new_event(state, caller.api_key_id, trickler.url)
        began = time.perf_counter()
        await _deliver_webhook(state, event_id)
        elapsed = time.perf_counter() - began
    [attempt] = await attempts(state, event_id)
    assert attempt.status_code is None
    assert attempt.error == "no answer within the 0.5 s deadline"
    assert 400 <= attempt.duration_ms < 1500
    assert elapsed < 2.5  # the attempt and its recording
    found = await event(state, event_id)
    assert found.status is DeliveryStatus.pending
    assert found.attempts == 1
    assert found.next_attempt_at > attempt.started_at


async def test_redirects_are_never_followed(state: State, caller: Caller) -> None:
    async with running_receiver() as target, running_receiver() as receiver:
        receiver.status, receiver.headers = 302, [(b"location", target.url.encode())]
        event_id = await new_event(state, caller.api_key_id, receiver.url)
        await _deliver_webhook(state, event_id)
    assert target.received == []
    assert len(receiver.received) == 1
    [attempt] = await attempts(state, event_id)
    assert attempt.status_code == 302
    assert attempt.error == "receiver answered HTTP 302 (redirects are not followed)"
    assert (await event(state, event_id)).status is DeliveryStatus.pending  # retried


async def test_at_most_20_kb_of_the_answer_is_kept(state: State, caller: Caller) -> None:
    async with running_receiver() as receiver:
        receiver.status, receiver.body = 500, b"x" * (200 * 1024)
        event_id = await new_event(state, caller.api_key_id, receiver.url)
        await _deliver_webhook(state, event_id)
        receiver.status, receiver.body = 200, b"\x00thanks\xff"
        await _make_due(state, event_id)
        await _deliver_webhook(state, event_id)
    failed, delivered = await attempts(state, event_id)
    assert failed.response_body == "x" * MAX_RESPONSE_BODY_CHARS
    assert MAX_RESPONSE_BODY_CHARS == 20 * 1024
    assert delivered.status_code == 200
    assert delivered.error is None
    assert delivered.response_body == "\ufffdthanks\ufffd"  # what Postgres text can hold


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [
        (429, "7", 7, 7),  # within [5 s, 10 s]: as asked
        (503, "1", 5, 5),  # sooner than the step: the step
        (429, "86400", 10, 10),  # later than twice the step: twice the step
        (500, "86400", 4, 6),  # not a 429 or 503: ignored, the jittered step
    ],
)
async def test_retry_after_moves_the_next_attempt_within_bounds(
    state: State, caller: Caller, status: int, retry_after: str, low: float, high: float
) -> None:
    state.settings.webhook_schedule_scale = 1.0
    async with running_receiver() as receiver:
        receiver.status, receiver.headers = status, [(b"retry-after", retry_after.encode())]
        event_id = await new_event(state, caller.api_key_id, receiver.url)
        await _deliver_webhook(state, event_id)
    found = await event(state, event_id)
    [attempt] = await attempts(state, event_id)
    recorded_at = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
    wait = (found.next_attempt_at - recorded_at).total_seconds()
    assert low - 0.1 <= wait <= high + 0.5


async def test_a_cancelled_attempt_is_still_recorded_and_its_slot_freed(
    state: State, caller: Caller
) -> None:
    async with running_trickler(interval_s=5) as trickler:
        event_id = await new_event(state, caller.api_key_id, trickler.url)
        task = asyncio.create_task(_deliver_webhook(state, event_id))
        while trickler.connections == 0:
            await asyncio.sleep(0.01)
        task.cancel()  # what arq does on its job timeout, or a stopping worker
        with pytest.raises(asyncio.CancelledError):
            await task
    [attempt] = await attempts(state, event_id)
    assert attempt.status_code is None
    assert "cancelled" in (attempt.error or "")
    found = await event(state, event_id)
    assert found.attempts == 1
    assert found.status is DeliveryStatus.pending
    assert found.next_attempt_at > utcnow() - timedelta(seconds=1)  # moved on, not stale
    endpoint = await endpoint_of(state, event_id)
    assert await endpoint_slots(state).in_flight(endpoint.id) == 0


async def test_a_delivery_that_is_not_due_sends_nothing(state: State, caller: Caller) -> None:
    async with running_receiver() as receiver:
        receiver.status = 503
        state.settings.webhook_schedule_scale = 1.0  # the next attempt is 5 s away
        event_id = await new_event(state, caller.api_key_id, receiver.url)
        await _deliver_webhook(state, event_id)
        found = await event(state, event_id)
        await _deliver_webhook(state, event_id)  # e.g. a duplicate task: too early
        assert len(receiver.received) == 1
    assert (await event(state, event_id)).attempts == found.attempts == 1


async def _make_due(state: State, event_id: str) -> None:
    from sqlalchemy import update

    from service.models import WebhookEvent

    async with state.sessionmaker() as session:
        await session.execute(
            update(WebhookEvent).where(WebhookEvent.id == event_id).values(next_attempt_at=utcnow())
        )
        await session.commit()
