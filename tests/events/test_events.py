"""A batch's live events: what a listener sees, in order, and how it resumes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from service.events import BatchEvent, publish_batch_events, sse_stream, stream_key
from service.events.hub import parse_event_id
from service.providers.base import ProviderPermanentError, ProviderRetryableError
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller, submit
from tests.events.conftest import Message, messages
from tests.jobs.scripted import ScriptedProvider, install, run_attempt
from tests.live import live_server

JOBS = 4


def small_batch(n: int = JOBS, **job: object) -> dict[str, object]:
    return {
        "jobs": [{"prompt": f"a shell {i}", "width": 64, "height": 64, **job} for i in range(n)]
    }


async def collect(stream: AsyncIterator[bytes], *, until_end: bool = True) -> list[Message]:
    """Every message until the stream ends (it does after the final batch event)."""
    return [m async for m in messages(stream) if until_end]


def events(got: list[Message]) -> list[Message]:
    return [m for m in got if m.comment is None]


async def listen(state: State, batch_id: str, last_event_id: str | None = None) -> list[Message]:
    """A listener that is subscribed before this returns, and its messages once it ends."""
    stream = sse_stream(state, uuid.UUID(batch_id), last_event_id)
    first = await anext(stream)  # retry hint: the listener is subscribed now
    assert first.startswith(b"retry: ")

    async def rest() -> list[Message]:
        return await collect(stream)

    return await asyncio.wait_for(rest(), 30)


def assert_job_lifecycles(got: list[Message], n: int) -> None:
    by_job: dict[int, list[str]] = {}
    for message in got:
        if message.event == "job":
            by_job.setdefault(message.json["index"], []).append(message.json["status"])
    assert sorted(by_job) == list(range(n))
    for statuses in by_job.values():
        assert statuses == ["running", "succeeded"]


async def test_a_batch_run_on_the_local_renderer_streams_in_order(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch())
    with live_server(state.settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            async with http.stream(
                "GET", f"/v1/batches/{batch_id}/events", headers=caller.headers
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                assert response.headers["x-accel-buffering"] == "no"
                chunks = response.aiter_text()
                reading = asyncio.create_task(collect(chunks))  # type: ignore[arg-type]
                # The snapshot is read before anything else is sent: once it is here,
                # the listener is subscribed.
                await asyncio.sleep(0)
                await run_until_idle(state)
                got = events(await asyncio.wait_for(reading, 30))

    snapshot, *rest = got
    assert (snapshot.event, snapshot.id) == ("batch", None)
    assert snapshot.json["id"] == batch_id
    assert snapshot.json["counts"]["total"] == JOBS
    assert_job_lifecycles(rest, JOBS)
    ids = [parse_event_id(m.id) for m in rest]
    assert all(ids)
    assert ids == sorted(ids)
    final = rest[-1]
    assert final.event == "batch"
    assert final.json["status"] == "succeeded"
    assert final.json["counts"] == {
        "total": JOBS,
        "queued": 0,
        "running": 0,
        "succeeded": JOBS,
        "failed": 0,
        "cancelled": 0,
    }
    assert final.json["completed_at"] is not None
    succeeded = [m.json for m in rest if m.event == "job" and m.json["status"] == "succeeded"]
    for job in succeeded:
        assert job["output_url"] == f"http://testserver/v1/jobs/{job['id']}/output"
        assert job["error_code"] is None
    # Counts never go backwards.
    done = [m.json["counts"]["succeeded"] for m in rest if m.event == "batch"]
    assert done == sorted(done)


async def test_last_event_id_resumes_with_exactly_the_missed_events(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch())
    await run_until_idle(state)
    await asyncio.sleep(state.settings.events_coalesce_s * 4)  # the last counts published
    entries = await state.redis.xrange(stream_key(batch_id))
    ids = [raw.decode() for raw, _ in entries]
    assert len(ids) >= 2 * JOBS + 1

    for cut in (0, JOBS, len(ids) - 2):
        got = events(await listen(state, batch_id, ids[cut]))
        assert [m.id for m in got] == ids[cut + 1 :]  # no snapshot: nothing was lost
        assert got[-1].json["status"] == "succeeded"


async def test_a_listener_late_or_with_a_lost_id_starts_from_a_snapshot(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(2))
    await run_until_idle(state)
    # Late, with no id, or a malformed one: the final snapshot, and the stream ends.
    for last_event_id in (None, "not-an-id", "12-x", "-1", " "):
        [snapshot] = events(await listen(state, batch_id, last_event_id))
        assert (snapshot.event, snapshot.id) == ("batch", None)
        assert snapshot.json["status"] == "succeeded"
        assert snapshot.json["counts"]["succeeded"] == 2
    # Redis flushed (or the stream trimmed or expired): the snapshot covers the gap.
    await state.redis.flushdb()
    [snapshot] = events(await listen(state, batch_id, "1-0"))
    assert (snapshot.event, snapshot.json["status"]) == ("batch", "succeeded")


async def test_quiet_streams_get_heartbeats_and_end_after_their_longest(
    client: httpx.AsyncClient, caller: Caller, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state.settings, "events_max_stream_s", 0.9)
    batch_id = await submit(client, caller, small_batch(1))
    got = await listen(state, batch_id)  # ends although the batch is still queued
    assert got[0].event == "batch"
    assert got[0].json["status"] == "queued"
    assert {m.comment for m in got[1:]} == {"ping"}
    assert len(got[1:]) >= 3  # every 0.2 s of silence


async def test_events_need_a_key_and_the_batch_of_that_key(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(1))
    path = f"/v1/batches/{batch_id}/events"
    missing = await client.get(path)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = await client.get(path, headers={"authorization": "Bearer dk_nope"})
    assert wrong.status_code == 401
    other = await make_caller(state, "other")
    theirs = await client.get(path, headers=other.headers)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    unknown = await client.get(f"/v1/batches/{uuid.uuid4()}/events", headers=caller.headers)
    assert unknown.status_code == 404
    bad = await client.get("/v1/batches/nope/events", headers=caller.headers)
    assert bad.status_code == 422


async def test_retries_failures_and_a_batch_retry_are_streamed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider(
        errors=[ProviderRetryableError("flaky", "try again"), ProviderPermanentError("nope", "no")]
    )
    install(state, provider)
    batch_id = await submit(client, caller, small_batch(1, model="test/scripted"))
    jobs_page = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    job_id = uuid.UUID(jobs_page.json()["items"][0]["id"])
    stream = sse_stream(state, uuid.UUID(batch_id), None)
    await anext(stream)
    reading = asyncio.create_task(collect(stream))
    await run_attempt(state, job_id)  # retryable: back in line
    await run_attempt(state, job_id)  # permanent: failed, and the batch with it
    first = events(await asyncio.wait_for(reading, 30))  # ends after the final event

    def jobs(got: list[Message]) -> list[tuple[str, str | None]]:
        return [(m.json["status"], m.json["error_code"]) for m in got if m.event == "job"]

    assert jobs(first) == [
        ("running", None),
        ("queued", "flaky"),
        ("running", "flaky"),
        ("failed", "nope"),
    ]
    assert first[0].json["status"] == "queued"
    assert first[-1].event == "batch"
    assert first[-1].json["status"] == "failed"
    assert first[-1].json["counts"]["failed"] == 1

    retried = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert retried.status_code == 202
    await run_attempt(state, job_id)
    await asyncio.sleep(state.settings.events_coalesce_s * 4)
    last_seen = next(m.id for m in reversed(first) if m.id is not None)
    second = events(await listen(state, batch_id, last_seen))
    assert jobs(second) == [("queued", None), ("running", None), ("succeeded", None)]
    statuses = [m.json["status"] for m in second if m.event == "batch"]
    assert statuses[0] == "running"  # the retry's counts
    assert statuses[-1] == "succeeded"


async def test_a_cancel_streams_the_cancelled_jobs_and_ends(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(3))
    stream = sse_stream(state, uuid.UUID(batch_id), None)
    await anext(stream)
    reading = asyncio.create_task(collect(stream))
    cancelled = await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)
    assert cancelled.status_code == 200
    got = events(await asyncio.wait_for(reading, 30))
    jobs = sorted((m.json["index"], m.json["status"]) for m in got if m.event == "job")
    assert jobs == [(0, "cancelled"), (1, "cancelled"), (2, "cancelled")]
    assert got[-1].event == "batch"
    assert got[-1].json["status"] == "cancelled"
    assert got[-1].json["counts"]["cancelled"] == 3


def test_event_ids_are_read_strictly() -> None:
    assert parse_event_id("1700000000000-3") == (1700000000000, 3)
    assert parse_event_id(" 5-0 ") == (5, 0)
    for bad in (None, "", "5", "5-", "-5", "a-1", "1-²", "²-1", "1-2-3", "9" * 16 + "-0"):
        assert parse_event_id(bad) is None


async def test_stale_counts_after_the_final_event_are_dropped_until_a_retry(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider(errors=[ProviderPermanentError("nope", "no")])
    install(state, provider)
    batch_id = await submit(client, caller, small_batch(1, model="test/scripted"))
    jobs_page = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    job_id = uuid.UUID(jobs_page.json()["items"][0]["id"])
    await run_attempt(state, job_id)  # failed, and the batch with it
    await asyncio.sleep(state.settings.events_coalesce_s * 4)
    key = stream_key(batch_id)
    before = [raw.decode() for raw, _ in await state.redis.xrange(key)]
    stale = BatchEvent(uuid.UUID(batch_id), "batch", {"id": batch_id, "status": "running"})
    # This process saw the batch end: counts its coalescer read before are not published.
    await publish_batch_events(state, [stale], coalesced=True)
    assert [raw.decode() for raw, _ in await state.redis.xrange(key)] == before
    # Another process's are: a stream that sent the final event drops them, and ends.
    await publish_batch_events(state, [stale])
    got = events(await listen(state, batch_id, before[0]))
    assert [m.json["status"] for m in got if m.event == "batch"][-1] == "failed"
    assert got[-1].event == "batch"

    retried = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert retried.status_code == 202
    await run_attempt(state, job_id)
    await asyncio.sleep(state.settings.events_coalesce_s * 4)
    got = events(await listen(state, batch_id, before[0]))
    statuses = [m.json["status"] for m in got if m.event == "batch"]
    after = statuses[statuses.index("failed") + 1 :]
    assert after[0] == "running"  # a retry's counts are no stale counts
    assert after[-1] == "succeeded"


async def test_a_last_event_id_newer_than_the_stream_is_treated_as_malformed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, small_batch(2))
    await run_until_idle(state)
    [(newest, _)] = await state.redis.xrevrange(stream_key(batch_id), count=1)
    first, sequence = parse_event_id(newest.decode()) or (0, 0)
    for future in (f"{first}-{sequence + 1}", f"{first + 10**9}-0"):
        [snapshot] = events(await listen(state, batch_id, future))
        assert (snapshot.event, snapshot.id) == ("batch", None)
        assert snapshot.json["status"] == "succeeded"
