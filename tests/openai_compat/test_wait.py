"""The door's wait for its images: woken by the batch's live events, and still finding
its jobs by looking again when there are no events to wake it."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service.events.hub import Hub
from service.models import JobStatus
from service.openai_compat import images
from service.state import State
from tests.conftest import Caller, submit
from tests.jobs.scripted import run_attempt

BODY = {"jobs": [{"prompt": "a red kite", "width": 64, "height": 64}]}


async def _job_ids(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[uuid.UUID]:
    page = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return [uuid.UUID(job["id"]) for job in page.json()["items"]]


async def test_a_finished_job_wakes_the_wait(
    state: State, client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the looks an hour apart, only the job's event can end the wait in time."""
    monkeypatch.setattr(images, "FIRST_LOOK_S", 3600.0)
    monkeypatch.setattr(images, "LONGEST_PAUSE_S", 3600.0)
    batch_id = await submit(client, caller, BODY)
    (job_id,) = await _job_ids(client, caller, batch_id)
    waiting = asyncio.create_task(images.wait_for_jobs(state, uuid.UUID(batch_id), 3600))
    await asyncio.sleep(0.2)  # the wait has looked once and is listening
    assert not waiting.done()
    await run_attempt(state, job_id)
    jobs = await asyncio.wait_for(waiting, timeout=30)
    assert [(job.id, job.status) for job in jobs] == [(job_id, JobStatus.succeeded)]


async def test_without_events_the_wait_looks_again(
    state: State, client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis cannot be read when the wait starts: it falls back to its growing pauses."""

    async def unreachable(self: Hub, batch_id: uuid.UUID) -> None:
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(Hub, "subscribe", unreachable)
    batch_id = await submit(client, caller, BODY)
    (job_id,) = await _job_ids(client, caller, batch_id)
    waiting = asyncio.create_task(images.wait_for_jobs(state, uuid.UUID(batch_id), 3600))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await run_attempt(state, job_id)
    jobs = await asyncio.wait_for(waiting, timeout=30)
    assert [(job.id, job.status) for job in jobs] == [(job_id, JobStatus.succeeded)]
