"""Nothing is lost when the process dies between the Postgres commit and the Redis enqueue,
or when Redis forgets everything: the reconciler re-enqueues from Postgres."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from service.batches.schemas import BatchCreate
from service.batches.service import submit_batch
from service.db import session_scope
from service.jobs.tasks import reconcile_jobs
from service.models import ApiKey, DeliveryStatus, WebhookEvent
from service.state import State
from service.webhooks.tasks import reconcile_webhooks
from service.worker import run_until_idle
from tests.conftest import Caller
from tests.jobs.scripted import run_attempt
from tests.webhooks.receiver import running_receiver


async def commit_without_enqueue(state: State, caller: Caller, body: dict[str, object]) -> str:
    """What POST /v1/batches does, up to the crash: the commit happens, the enqueue never."""
    async with session_scope(state.sessionmaker) as session:
        api_key = await session.get(ApiKey, caller.api_key_id)
        assert api_key is not None
        submitted = await submit_batch(
            session,
            api_key=api_key,
            body=BatchCreate.model_validate(body),
            idempotency_key=None,
            registry=state.registry,
            settings=state.settings,
        )
    return str(submitted.batch.id)


async def test_jobs_committed_but_never_enqueued_are_recovered(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {"jobs": [{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(5)]}
    batch_id = await commit_without_enqueue(state, caller, body)
    assert await state.dispatch.queue("local").backlog() == 0

    await run_until_idle(state)  # a worker alone finds nothing: the work is only in Postgres
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["counts"]["queued"] == 5

    assert await reconcile_jobs(state) == 0  # too fresh to be presumed lost
    state.settings.reconcile_stale_after_s = 0
    assert await reconcile_jobs(state) == 5
    assert await reconcile_jobs(state) == 0  # idempotent: already queued
    await run_until_idle(state)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["counts"]["succeeded"] == 5


async def test_redis_losing_everything_loses_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.reconcile_stale_after_s = 0
    async with running_receiver() as receiver:
        body = {
            "callback_url": receiver.url,
            "jobs": [{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(3)],
        }
        response = await client.post("/v1/batches", json=body, headers=caller.headers)
        batch_id = response.json()["id"]
        assert await state.dispatch.queue("local").backlog() == 3
        await state.redis.flushdb()  # Redis forgets the queue
        assert await reconcile_jobs(state) == 3

        # Run the jobs (their deliveries get enqueued), then Redis forgets again.
        jobs = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
        for job in jobs.json()["items"]:
            await run_attempt(state, uuid.UUID(job["id"]))
        await state.redis.flushdb()
        async with state.sessionmaker() as session:
            pending = list((await session.execute(select(WebhookEvent))).scalars())
        assert len(pending) == 4
        assert {e.status for e in pending} == {DeliveryStatus.pending}

        assert await reconcile_webhooks(state) == 4
        await run_until_idle(state)

    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 4
    assert len(set(ids)) == 4
    async with state.sessionmaker() as session:
        events = list((await session.execute(select(WebhookEvent))).scalars())
    assert {e.status for e in events} == {DeliveryStatus.delivered}
