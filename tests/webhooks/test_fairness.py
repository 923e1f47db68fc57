"""One slow receiver must not stall anyone else: an endpoint holds at most a few slots,
its backlog waits parked in Redis (not in arq), and the reconciler recovers what Redis
lost without ever re-queuing an event before its time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from arq.constants import job_key_prefix
from arq.worker import Worker
from sqlalchemy import update

from service.kit.base import utcnow
from service.models import DeliveryStatus, WebhookEvent
from service.state import State
from service.webhooks.delivery import endpoint_slots
from service.webhooks.fairness import parked_key
from service.webhooks.tasks import enqueue_deliveries, reconcile_webhooks
from service.worker import build_workers
from tests.conftest import Caller, make_caller
from tests.webhooks.helpers import attempts, endpoint_of, event, new_event
from tests.webhooks.receiver import running_receiver, running_trickler


def webhook_worker(state: State) -> Worker:
    [worker] = [
        w for w in build_workers(state) if w.queue_name == state.settings.webhook_queue_name
    ]
    return worker


async def queued_job_ids(state: State) -> list[str]:
    raw = await state.redis.zrange(state.settings.webhook_queue_name, 0, -1)
    return [r.decode() for r in raw]


async def test_new_events_beyond_the_slots_are_parked_in_order(
    state: State, caller: Caller
) -> None:
    state.settings.webhook_endpoint_slots = 2
    url = "http://127.0.0.1:9/never-called"
    ids = [await new_event(state, caller.api_key_id, url) for _ in range(5)]
    await enqueue_deliveries(state, ids[:3])
    await enqueue_deliveries(state, ids[3:])
    endpoint = await endpoint_of(state, ids[0])
    assert sorted(await queued_job_ids(state)) == sorted(f"{i}:0" for i in ids[:2])
    parked = await state.redis.zrange(parked_key(endpoint.id), 0, -1)
    assert [p.decode() for p in parked] == ids[2:]
    assert await endpoint_slots(state).in_flight(endpoint.id) == 2  # reserved for the two


async def test_a_slow_endpoint_s_backlog_does_not_delay_another_key(state: State) -> None:
    state.settings.webhook_endpoint_slots = 2
    state.settings.webhook_timeout_s = 1.0
    slow_key, other_key = await make_caller(state, "slow"), await make_caller(state, "other")
    async with running_trickler(interval_s=5) as trickler, running_receiver() as receiver:
        backlog = [await new_event(state, slow_key.api_key_id, trickler.url) for _ in range(30)]
        await enqueue_deliveries(state, backlog)
        slow = await endpoint_of(state, backlog[0])
        worker = webhook_worker(state)
        main = asyncio.create_task(worker.main())
        try:
            while trickler.connections < 2:
                await asyncio.sleep(0.01)
            mine = await new_event(state, other_key.api_key_id, receiver.url, enqueue=True)
            in_flight: list[int] = []
            while (await event(state, mine)).status is not DeliveryStatus.delivered:
                in_flight.append(await endpoint_slots(state).in_flight(slow.id))
                await asyncio.sleep(0.02)
            # The other key was served while the slow endpoint still held its slots and
            # had most of its backlog waiting.
            assert len(receiver.received) == 1
            assert max(in_flight) <= 2
            assert await endpoint_slots(state).parked_count(slow.id) >= 25
            # A finished attempt hands its slot on: more than the first two are tried.
            while sum([len(await attempts(state, e)) for e in backlog[:4]]) < 3:
                await asyncio.sleep(0.1)
        finally:
            main.cancel()
            await asyncio.gather(main, return_exceptions=True)
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    assert trickler.connections <= 4
    failing = await endpoint_of(state, backlog[0])
    assert failing.failing_since is not None  # from now on it gets one slot


async def _overdue(state: State, event_id: str, by: timedelta) -> None:
    async with state.sessionmaker() as session:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(next_attempt_at=utcnow() - by, attempts=3)
        )
        await session.commit()


async def test_the_reconciler_never_re_queues_an_event_before_its_time(
    state: State, caller: Caller
) -> None:
    url = "http://127.0.0.1:9/never-called"
    later = await new_event(state, caller.api_key_id, url)
    await _overdue(state, later, -timedelta(hours=1))  # due in an hour, its task lost
    barely = await new_event(state, caller.api_key_id, url)
    await _overdue(state, barely, timedelta(seconds=5))  # due, but its task may be on its way
    assert await reconcile_webhooks(state) == 0
    assert await queued_job_ids(state) == []
    endpoint = await endpoint_of(state, later)
    assert await endpoint_slots(state).parked_count(endpoint.id) == 0


async def test_the_reconciler_restores_lost_events_and_starts_idle_endpoints(
    state: State, caller: Caller
) -> None:
    state.settings.webhook_endpoint_slots = 1
    url = "http://127.0.0.1:9/never-called"
    lost = [await new_event(state, caller.api_key_id, url) for _ in range(3)]
    for event_id in lost:
        await _overdue(state, event_id, timedelta(minutes=5))
    endpoint = await endpoint_of(state, lost[0])
    # One of them is being delivered right now: it holds a live slot.
    held = await endpoint_slots(state).acquire(
        endpoint.id, lost[0], limit=1, due_ms=0, handed=False
    )
    assert held == "granted"
    assert await reconcile_webhooks(state) == 2  # the held one is where it should be
    assert await endpoint_slots(state).parked_count(endpoint.id) == 2
    assert await reconcile_webhooks(state) == 0  # parked ones are not restored twice

    await state.redis.flushdb()  # Redis loses everything, the worker that held died
    assert await reconcile_webhooks(state) == 3
    # The free slot went to the oldest, and arq holds its task; the others wait parked.
    [job_id] = await queued_job_ids(state)
    assert job_id.split(":")[0] in lost
    assert await state.redis.exists(job_key_prefix + job_id)
    assert await endpoint_slots(state).parked_count(endpoint.id) == 2
    assert await endpoint_slots(state).in_flight(endpoint.id) == 1
