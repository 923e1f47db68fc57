"""Claims, outcomes and completion checks of jobs that are ready together go to Postgres
as one group, and each job still gets its own transition, attempt and event."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal

import httpx
from sqlalchemy import select

from service.dispatch.queue import Grant
from service.jobs.batching import Claimed, Moved, batcher
from service.jobs.outcomes import Failed, Outcome, Succeeded
from service.jobs.steps import Transition
from service.jobs.transitions import StartedJob
from service.models import Batch, Job, JobAttempt, Priority, WebhookEvent
from service.models.batch import BatchStatus
from service.providers.base import (
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.ratelimit import now_ms
from service.state import State
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install

HOOK = "http://127.0.0.1:9/hooks"  # events are recorded; none is delivered


async def queued_batch(
    client: httpx.AsyncClient, caller: Caller, state: State, **body: object
) -> tuple[str, list[uuid.UUID]]:
    """A batch whose jobs are out of the dispatch queue: the test grants them itself."""
    batch_id = await submit(client, caller, {"callback_url": HOOK, **body})
    await state.dispatch.queue("local").purge(batch_id)
    async with state.sessionmaker() as session:
        query = select(Job.id).where(Job.batch_id == uuid.UUID(batch_id)).order_by(Job.index)
        return batch_id, list((await session.execute(query)).scalars())


def grant(batch_id: str, job_id: uuid.UUID, account: str = "local") -> Grant:
    return Grant(str(job_id), batch_id, Priority.bulk, account, now_ms())


def failed(started: StartedJob, error: ProviderError) -> Failed:
    """What the runner records for an error, with 3 attempts allowed and a 7 s backoff."""
    return Failed(started, error, 5, 3, 7.0, Decimal(0))


async def claim_all(state: State, batch_id: str, job_ids: list[uuid.UUID]) -> list[Claimed]:
    results = await asyncio.gather(*(batcher(state).claim(grant(batch_id, j)) for j in job_ids))
    claimed = [result for result in results if isinstance(result, Claimed)]
    assert len(claimed) == len(job_ids)
    return claimed


async def test_jobs_granted_together_are_claimed_in_one_group_each_with_its_own_attempt(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    install(state, ScriptedProvider())
    small = {"width": 64, "height": 64}
    batch_id, jobs = await queued_batch(
        client,
        caller,
        state,
        jobs=[{"prompt": f"p{n}", **small} for n in range(3)]
        + [{"prompt": "moved", "model": "test/scripted", **small}],
    )
    cancelled_id, [cancelled] = await queued_batch(
        client, caller, state, jobs=[{"prompt": "c", **small}]
    )
    await client.post(f"/v1/batches/{cancelled_id}/cancel", headers=caller.headers)
    claims = batcher(state).claims
    before = claims.groups

    results = await asyncio.gather(
        *(batcher(state).claim(grant(batch_id, job_id)) for job_id in jobs),
        batcher(state).claim(grant(cancelled_id, cancelled)),
    )

    assert claims.groups == before + 1
    started = [result for result in results[:3] if isinstance(result, Claimed)]
    assert [s.started.job_id for s in started] == jobs[:3]
    assert all(s.started.attempt == 1 and s.spec.provider == "local" for s in started)
    assert results[3] == Moved("scripted", Priority.bulk)
    assert results[4] is None  # cancelled meanwhile: nothing to send
    async with state.sessionmaker() as session:
        attempts = (await session.execute(select(JobAttempt))).scalars().all()
        assert sorted((a.job_id, a.number, a.outcome) for a in attempts) == sorted(
            (job_id, 1, None) for job_id in jobs[:3]
        )
        batch = await session.get(Batch, uuid.UUID(batch_id))
        assert batch is not None
        assert batch.status is BatchStatus.running


async def test_outcomes_recorded_together_keep_their_own_transitions_and_events(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id, jobs = await queued_batch(
        client,
        caller,
        state,
        jobs=[{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(4)],
    )
    won, retried, refused, stale = [c.started for c in await claim_all(state, batch_id, jobs)]
    image = Output(b"\x89PNG", "png", 64, 64)
    stored = await state.storage.put(won.output_key, image.data, image.content_type)
    outcomes: list[Outcome] = [
        Succeeded(won, image, stored, 12, Decimal(0), Decimal(0)),
        failed(retried, ProviderRetryableError("server_error", "HTTP 503")),
        failed(refused, ProviderPermanentError("content_policy", "refused")),
        # A worker presumed dead reporting on an attempt that no longer owns its job.
        failed(dataclasses.replace(stale, attempt=9), ProviderRetryableError("x", "y")),
    ]
    groups = batcher(state).outcomes.groups

    transitions = await asyncio.gather(*(batcher(state).record(o) for o in outcomes))

    assert batcher(state).outcomes.groups == groups + 1
    success, retry, failure, ignored = transitions
    assert retry == Transition([], retry_in_s=7.0)
    assert ignored == Transition([])
    assert len(success.event_ids) == len(failure.event_ids) == 1
    assert success.batch_to_check == failure.batch_to_check == uuid.UUID(batch_id)
    async with state.sessionmaker() as session:
        events = {e.id: e for e in (await session.execute(select(WebhookEvent))).scalars()}
        assert (events[success.event_ids[0]].type, events[success.event_ids[0]].job_id) == (
            "job.succeeded",
            won.job_id,
        )
        assert (events[failure.event_ids[0]].type, events[failure.event_ids[0]].job_id) == (
            "job.failed",
            refused.job_id,
        )
        assert len(events) == 2
        jobs_now = {j.id: j for j in (await session.execute(select(Job))).scalars()}
        assert jobs_now[won.job_id].output_sha256 == stored.sha256
        assert jobs_now[retried.job_id].status.value == "queued"
        assert jobs_now[refused.job_id].error_code == "content_policy"
        assert jobs_now[stale.job_id].status.value == "running"  # its owner goes on
        outcomes_by_job = {
            a.job_id: a.outcome for a in (await session.execute(select(JobAttempt))).scalars()
        }
        assert outcomes_by_job == {
            won.job_id: "succeeded",
            retried.job_id: "retry",
            refused.job_id: "failed",
            stale.job_id: None,
        }


async def test_a_failing_group_is_retried_job_by_job_and_loses_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id, jobs = await queued_batch(
        client,
        caller,
        state,
        jobs=[{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(2)],
    )
    good, bad = [c.started for c in await claim_all(state, batch_id, jobs)]
    # An error code longer than its column: Postgres refuses the whole group's flush.
    unstorable = ProviderPermanentError("x" * 300, "too long to store")
    outcomes = [
        failed(good, ProviderPermanentError("content_policy", "refused")),
        failed(bad, unstorable),
    ]

    results = await asyncio.gather(
        *(batcher(state).record(o) for o in outcomes), return_exceptions=True
    )

    assert isinstance(results[0], Transition)
    assert len(results[0].event_ids) == 1
    assert isinstance(results[1], Exception)
    async with state.sessionmaker() as session:
        jobs_now = {j.id: j for j in (await session.execute(select(Job))).scalars()}
        assert jobs_now[good.job_id].status.value == "failed"
        # The bad one is exactly as its claim left it: running, its attempt open.
        assert jobs_now[bad.job_id].status.value == "running"
        assert jobs_now[bad.job_id].current_attempt == bad.attempt


async def test_checks_of_one_batch_together_complete_it_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id, jobs = await queued_batch(
        client,
        caller,
        state,
        jobs=[{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(3)],
    )
    claimed = [c.started for c in await claim_all(state, batch_id, jobs)]
    refused = ProviderPermanentError("content_policy", "refused")
    for started in claimed:
        await batcher(state).record(failed(started, refused))

    answers = await asyncio.gather(
        *(batcher(state).complete_if_done(uuid.UUID(batch_id)) for _ in claimed)
    )

    assert sorted(len(events) for events in answers) == [0, 0, 1]
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, uuid.UUID(batch_id))
        assert batch is not None
        assert batch.status is BatchStatus.failed
        types = (await session.execute(select(WebhookEvent.type))).scalars().all()
        assert sorted(types).count("batch.completed") == 1
