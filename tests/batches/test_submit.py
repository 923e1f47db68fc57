from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from service.models import Batch, Job
from service.state import State
from tests.conftest import Caller, make_caller, submit


def one_job_batch(**extra: object) -> dict[str, object]:
    return {"jobs": [{"prompt": "a red bicycle"}], **extra}


async def test_submit_returns_202_with_location_and_stores_every_job(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "name": "covers",
        "metadata": {"team": "blog"},
        "defaults": {"width": 512, "height": 256, "format": "webp", "metadata": {"a": 1}},
        "jobs": [
            {"prompt": "a red bicycle", "seed": 3, "output_name": "bike"},
            {"prompt": "a blue kite", "format": "jpeg", "metadata": {"b": 2}},
        ],
    }
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["status"] == "queued"
    assert batch["counts"] == {
        "total": 2,
        "queued": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert batch["metadata"] == {"team": "blog"}

    jobs = (await client.get(f"/v1/batches/{batch['id']}/jobs", headers=caller.headers)).json()
    first, second = jobs["items"]
    assert first["params"] == {
        "width": 512,
        "height": 256,
        "format": "webp",
        "seed": 3,
        "output_name": "bike.webp",
    }
    assert second["params"]["format"] == "jpeg"
    assert second["params"]["output_name"] == "00001.jpg"
    assert isinstance(second["params"]["seed"], int)
    assert second["metadata"] == {"a": 1, "b": 2}
    assert first["model"] == "local/procedural"
    assert jobs["next_cursor"] is None

    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 2


async def test_jobs_fall_back_to_settings(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.post("/v1/batches", json=one_job_batch(), headers=caller.headers)
    batch_id = response.json()["id"]
    job = (await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)).json()
    params = job["items"][0]["params"]
    assert (params["width"], params["height"], params["format"]) == (1024, 1024, "png")


async def test_idempotency_key_replays_and_conflicts(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    headers = {**caller.headers, "idempotency-key": "article-42"}
    first = await client.post("/v1/batches", json=one_job_batch(), headers=headers)
    again = await client.post("/v1/batches", json=one_job_batch(), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]

    other = await client.post("/v1/batches", json=one_job_batch(name="x"), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 1


async def test_get_list_and_paginate_batches(client: httpx.AsyncClient, caller: Caller) -> None:
    ids = []
    for n in range(5):
        response = await client.post(
            "/v1/batches", json=one_job_batch(name=f"b{n}"), headers=caller.headers
        )
        ids.append(response.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/batches", params=params, headers=caller.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once

    one = (await client.get(f"/v1/batches/{ids[0]}", headers=caller.headers)).json()
    assert one["name"] == "b0"
    assert one["counts"]["total"] == 1


async def test_job_listing_filters_by_status_and_pages(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    body = {"jobs": [{"prompt": f"p{n}"} for n in range(7)]}
    batch_id = (await client.post("/v1/batches", json=body, headers=caller.headers)).json()["id"]
    url = f"/v1/batches/{batch_id}/jobs"
    page = (await client.get(url, params={"limit": 3}, headers=caller.headers)).json()
    assert [j["index"] for j in page["items"]] == [0, 1, 2]
    rest = (
        await client.get(
            url, params={"limit": 10, "cursor": page["next_cursor"]}, headers=caller.headers
        )
    ).json()
    assert [j["index"] for j in rest["items"]] == [3, 4, 5, 6]
    assert rest["next_cursor"] is None
    none = (await client.get(url, params={"status": "succeeded"}, headers=caller.headers)).json()
    assert none["items"] == []

    bad = await client.get(url, params={"cursor": "garbage!"}, headers=caller.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "cursor"


async def test_keys_see_only_their_own_batches_and_jobs(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch = (await client.post("/v1/batches", json=one_job_batch(), headers=caller.headers)).json()
    jobs = (await client.get(f"/v1/batches/{batch['id']}/jobs", headers=caller.headers)).json()
    job_id = jobs["items"][0]["id"]
    stranger = await make_caller(state, "stranger")
    for path in (
        f"/v1/batches/{batch['id']}",
        f"/v1/batches/{batch['id']}/jobs",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/output",
    ):
        response = await client.get(path, headers=stranger.headers)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    cancel = await client.post(f"/v1/batches/{batch['id']}/cancel", headers=stranger.headers)
    assert cancel.status_code == 404
    listed = (await client.get("/v1/batches", headers=stranger.headers)).json()
    assert listed["items"] == []
    missing = await client.get(f"/v1/batches/{uuid.uuid4()}", headers=caller.headers)
    assert missing.status_code == 404


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient, caller: Caller) -> None:
    no_key = await client.post("/v1/batches", json=one_job_batch())
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert no_key.json()["error"]["code"] == "unauthorized"
    wrong = await client.get("/v1/batches", headers={"authorization": "Bearer dk_nope"})
    assert wrong.status_code == 401
    basic = await client.get("/v1/batches", headers={"authorization": "Basic Zm9vOmJhcg=="})
    assert basic.status_code == 401


async def test_forged_cursors_are_422_not_500(client: httpx.AsyncClient, caller: Caller) -> None:
    from service.kit.pagination import encode_cursor

    batch_id = (
        await client.post("/v1/batches", json=one_job_batch(), headers=caller.headers)
    ).json()["id"]
    forged = [
        ("/v1/batches", encode_cursor(["2026-01-01T00:00:00", 5])),
        ("/v1/batches", encode_cursor([1, 2])),
        ("/v1/batches", encode_cursor(["x"])),
        (f"/v1/batches/{batch_id}/jobs", encode_cursor([2**40])),
        (f"/v1/batches/{batch_id}/jobs", encode_cursor(["3"])),
        (f"/v1/batches/{batch_id}/jobs", "%%%"),
    ]
    for path, cursor in forged:
        response = await client.get(path, params={"cursor": cursor}, headers=caller.headers)
        assert response.status_code == 422, (path, cursor, response.text)
        assert response.json()["error"]["details"][0]["field"] == "cursor"


async def test_oversized_bodies_are_413(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.max_request_bytes = 2048
    from service.app import create_app

    app = create_app(state.settings)
    app.state.darkroom = state
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as small:
        body = {"jobs": [{"prompt": "x" * 1000} for _ in range(3)]}
        declared = await small.post("/v1/batches", json=body, headers=caller.headers)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"

        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"jobs": ['
            for _ in range(10):
                yield b'{"prompt": "' + b"y" * 500 + b'"},'
            yield b'{"prompt": "z"}]}'

        streamed = await small.post(
            "/v1/batches",
            content=chunks(),
            headers={**caller.headers, "content-type": "application/json"},
        )
        assert streamed.status_code == 413
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 0


async def test_concurrent_requests_with_one_idempotency_key_make_one_batch(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    import asyncio

    headers = {**caller.headers, "idempotency-key": "raced"}
    body = {"jobs": [{"prompt": f"p{n}"} for n in range(200)]}
    responses = await asyncio.gather(
        *(client.post("/v1/batches", json=body, headers=headers) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    assert len({r.json()["id"] for r in responses}) == 1
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 1
        assert await session.scalar(select(func.count()).select_from(Job)) == 200


async def test_priority_and_budget_are_kept_and_realtime_goes_ahead(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    from service.dispatch.queue import Grant

    bulk = await submit(client, caller, {"jobs": [{"prompt": f"b{n}"} for n in range(50)]})
    body = {"priority": "realtime", "budget_usd": 2.5, "jobs": [{"prompt": "cover"}]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202
    realtime = response.json()
    assert (realtime["priority"], realtime["budget_usd"]) == ("realtime", 2.5)
    shown = (await client.get(f"/v1/batches/{bulk}", headers=caller.headers)).json()
    assert (shown["priority"], shown["budget_usd"]) == ("bulk", None)
    # Submitted behind 50 bulk jobs, the realtime job is the next one granted.
    grant = await state.dispatch.queue("local").take()
    assert isinstance(grant, Grant)
    assert (grant.batch_id, grant.priority.value) == (realtime["id"], "realtime")
