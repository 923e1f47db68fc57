"""Jobs run end to end through the dispatcher and real workers, and one attempt at a time
through the runner."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from decimal import Decimal

import httpx
from PIL import Image

from service.jobs import attempts, requests
from service.providers.base import Output, ProviderPermanentError, ProviderRetryableError
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install, run_attempt


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def test_batch_runs_to_success_and_serves_outputs(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "defaults": {"width": 256, "height": 128},
        "jobs": [
            {"prompt": "a lighthouse", "output_name": "../../etc/Light House.gif", "seed": 1},
            {"prompt": "a fox", "format": "jpeg", "seed": 2},
            {"prompt": "a boat", "format": "webp", "width": 64, "height": 64, "seed": 3},
        ],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["counts"]["succeeded"] == 3
    assert batch["completed_at"] is not None
    jobs = await jobs_of(client, caller, batch_id)
    expected = [
        ("PNG", 256, 128, "Light-House.png"),
        ("JPEG", 256, 128, "00001.jpg"),
        ("WEBP", 64, 64, "00002.webp"),
    ]
    for job, (fmt, width, height, name) in zip(jobs, expected, strict=True):
        assert job["status"] == "succeeded"
        assert job["attempts"] == 1
        assert job["error"] is None
        assert job["started_at"] is not None
        assert job["finished_at"] is not None
        output = job["output"]
        assert output["url"] == f"http://testserver/v1/jobs/{job['id']}/output"
        assert (output["width"], output["height"]) == (width, height)
        served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
        assert served.status_code == 200
        assert served.headers["content-type"] == output["content_type"]
        assert hashlib.sha256(served.content).hexdigest() == output["sha256"]
        assert len(served.content) == output["bytes"]
        image = Image.open(io.BytesIO(served.content))
        assert (image.format, image.size) == (fmt, (width, height))
        on_disk = state.settings.storage_dir / batch_id / name
        assert on_disk.read_bytes() == served.content

    attempts = await client.get(f"/v1/jobs/{jobs[0]['id']}/attempts", headers=caller.headers)
    [attempt] = attempts.json()
    assert attempt["provider"] == "local"
    assert attempt["outcome"] == "succeeded"
    assert attempt["latency_ms"] is not None


async def test_same_prompt_and_seed_give_the_same_bytes(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    job = {"prompt": "a quiet harbour", "seed": 99, "width": 128, "height": 128}
    first = await submit(client, caller, {"jobs": [job]})
    second = await submit(client, caller, {"jobs": [job, {**job, "seed": 100}]})
    await run_until_idle(state)
    a = (await jobs_of(client, caller, first))[0]["output"]["sha256"]
    b, c = [j["output"]["sha256"] for j in await jobs_of(client, caller, second)]
    assert a == b
    assert b != c


async def test_permanent_failure_fails_one_job_and_the_rest_go_on(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider(errors=[ProviderPermanentError("content_policy", "refused")])
    install(state, provider)
    body = {
        "jobs": [
            {"prompt": "x", "model": "test/scripted"},
            {"prompt": "y", "width": 64, "height": 64},
        ]
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    failed, succeeded = await jobs_of(client, caller, batch_id)
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "content_policy", "message": "refused"}
    assert failed["output"] is None
    assert failed["attempts"] == 1
    assert succeeded["status"] == "succeeded"
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "partially_failed"
    no_output = await client.get(f"/v1/jobs/{failed['id']}/output", headers=caller.headers)
    assert no_output.status_code == 404


async def test_retryable_errors_are_retried_then_succeed(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider(errors=[ProviderRetryableError("upstream_503", "busy")])
    install(state, provider)
    batch_id = await submit(
        client,
        caller,
        {"jobs": [{"prompt": "x", "model": "test/scripted", "width": 64, "height": 64}]},
    )
    job_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    queue = state.dispatch.queue("scripted")
    await queue.purge(batch_id)  # run by hand below, not by the dispatcher
    await run_attempt(state, job_id)
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    assert job["status"] == "queued"
    assert job["error"] == {"code": "upstream_503", "message": "busy"}
    # Back in line once its backoff is over, not before.
    assert await queue.waiting([str(job_id)]) == [True]
    assert await state.redis.zcard(queue.keys.delayed) == 1
    await run_attempt(state, job_id)
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    assert job["error"] is None
    attempts = (await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)).json()
    assert [a["outcome"] for a in attempts] == ["retry", "succeeded"]
    assert attempts[0]["error_code"] == "upstream_503"


async def test_retryable_errors_fail_the_job_after_max_attempts(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    errors: list[Exception] = [ProviderRetryableError("timeout", "no answer") for _ in range(5)]
    install(state, ScriptedProvider(errors=errors), max_attempts=3)
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "x", "model": "test/scripted"}]})
    job_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    for _ in range(3):
        await run_attempt(state, job_id)
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert job["error"]["code"] == "timeout"
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "failed"


async def test_a_job_runs_only_once_when_its_task_runs_twice(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    provider = ScriptedProvider()
    install(state, provider)
    batch_id = await submit(
        client,
        caller,
        {"jobs": [{"prompt": "x", "model": "test/scripted", "width": 64, "height": 64}]},
    )
    job_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    await run_attempt(state, job_id)
    await run_attempt(state, job_id)
    assert provider.calls == 1


async def test_an_attempt_abandoned_by_a_dead_worker_is_closed_and_counted(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    from service.db import session_scope
    from service.jobs import service

    install(state, ScriptedProvider())
    batch_id = await submit(
        client,
        caller,
        {"jobs": [{"prompt": "x", "model": "test/scripted", "width": 64, "height": 64}]},
    )
    job_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    async with session_scope(state.sessionmaker) as session:  # a worker starts, then dies
        await service.start_attempt(
            session,
            job_id,
            account="scripted",
            max_attempts=3,
            price=Decimal(0),
            public_url="http://x",
        )
    # A second grant while the job was touched just now (two reconcilers restoring it at
    # once): its attempt may be under way, so the grant gives way and nothing is sent.
    await run_attempt(state, job_id)
    attempts = (await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)).json()
    assert [(a["outcome"], a["error_code"]) for a in attempts] == [(None, None)]
    # Once the job has been left alone as long as the reconciler waits, the worker is lost.
    state.settings.reconcile_stale_after_s = 0
    await run_attempt(state, job_id)
    attempts = (await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)).json()
    assert [(a["outcome"], a["error_code"]) for a in attempts] == [
        ("abandoned", "worker_lost"),
        ("succeeded", None),
    ]


async def test_cancel_stops_queued_jobs(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": f"p{n}"} for n in range(4)]})
    response = await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)
    assert response.status_code == 200
    batch = response.json()
    assert batch["status"] == "cancelled"
    assert batch["counts"]["cancelled"] == 4
    await run_until_idle(state)  # the queued arq jobs find nothing to do
    jobs = await jobs_of(client, caller, batch_id)
    assert {j["status"] for j in jobs} == {"cancelled"}
    assert all(j["attempts"] == 0 for j in jobs)
    assert not list((state.settings.storage_dir).glob("*/*"))
    again = await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)
    assert again.status_code == 200


async def test_cancel_waits_for_running_jobs_and_refuses_finished_batches(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    from service.db import session_scope
    from service.jobs import service

    batch_id = await submit(
        client, caller, {"jobs": [{"prompt": "a", "width": 64, "height": 64}, {"prompt": "b"}]}
    )
    running_id = uuid.UUID((await jobs_of(client, caller, batch_id))[0]["id"])
    async with session_scope(state.sessionmaker) as session:
        started = await service.start_attempt(
            session,
            running_id,
            account="local",
            max_attempts=3,
            price=Decimal(0),
            public_url="http://x",
        )
    assert isinstance(started, service.StartedJob)
    batch = (await client.post(f"/v1/batches/{batch_id}/cancel", headers=caller.headers)).json()
    assert batch["status"] == "running"
    assert batch["counts"]["running"] == 1
    assert batch["counts"]["cancelled"] == 1
    spec = state.registry.model("local/procedural")
    assert spec is not None
    image = await state.registry.providers["local"].generate(  # type: ignore[attr-defined]
        await requests.generation_request(state, spec, started)
    )
    assert isinstance(image, Output)
    stored = await state.storage.put(started.output_key, image.data, image.content_type)
    async with session_scope(state.sessionmaker) as session:
        transition = await service.record_success(
            session,
            started,
            image,
            stored,
            latency_ms=1,
            cost=Decimal(0),
            price=Decimal(0),
            public_url="http://x",
        )
    await attempts.settle(state, transition)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "cancelled"
    assert batch["counts"]["succeeded"] == 1

    done_id = await submit(client, caller, {"jobs": [{"prompt": "c", "width": 64, "height": 64}]})
    await run_until_idle(state)
    refused = await client.post(f"/v1/batches/{done_id}/cancel", headers=caller.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "batch_finished"


async def test_the_last_jobs_finishing_at_once_complete_the_batch_exactly_once(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    from sqlalchemy import select

    from service.db import session_scope
    from service.jobs import service
    from service.jobs.tasks import reconcile_jobs
    from service.models import WebhookEvent

    body = {
        "callback_url": "http://127.0.0.1:9/hooks",  # events are recorded; none is delivered
        "jobs": [{"prompt": f"p{n}", "width": 64, "height": 64} for n in range(4)],
    }
    batch_id = await submit(client, caller, body)
    await state.dispatch.queue("local").purge(batch_id)
    transitions = []
    for job in await jobs_of(client, caller, batch_id):
        async with session_scope(state.sessionmaker) as session:
            started = await service.start_attempt(
                session,
                uuid.UUID(job["id"]),
                account="local",
                max_attempts=3,
                price=Decimal(0),
                public_url="http://x",
            )
        assert isinstance(started, service.StartedJob)
        async with session_scope(state.sessionmaker) as session:
            error = ProviderPermanentError("content_policy", "refused")
            transitions.append(
                await service.record_failure(
                    session,
                    started,
                    error,
                    latency_ms=1,
                    max_attempts=3,
                    retry_in_s=0,
                    price=Decimal(0),
                    public_url="http://x",
                )
            )
    # Every job committed its final state; two completion steps run at once, and the
    # other two never run (their worker died between the two transactions).
    await asyncio.gather(*(attempts.settle(state, t) for t in transitions[:2]))
    state.settings.reconcile_stale_after_s = 0
    await reconcile_jobs(state)
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "failed"
    async with state.sessionmaker() as session:
        types = list((await session.execute(select(WebhookEvent.type))).scalars())
    assert types.count("batch.completed") == 1
    assert types.count("job.failed") == 4
