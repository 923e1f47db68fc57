"""POST /v1/batches?dry_run=true validates, routes, maps and estimates without creating
anything; the 202 body carries the same estimate; a batch shows its cost by model."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from service.models import Batch, Job, JobAttempt
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller

BODY: dict[str, Any] = {
    "jobs": [
        {"prompt": "a", "model": "text-only", "width": 64, "height": 64},
        {"prompt": "b", "model": "text-only", "width": 64, "height": 64},
        # 1000x1000 at $0.01 per megapixel
        {"prompt": "c", "model": "big", "width": 1000, "height": 1000},
        {"prompt": "d", "model": "cheap", "width": 128, "height": 64},
    ]
}


async def counts(state: State) -> tuple[int, int, int]:
    async with state.sessionmaker() as session:
        return (
            await session.scalar(select(func.count()).select_from(Batch)) or 0,
            await session.scalar(select(func.count()).select_from(Job)) or 0,
            await session.scalar(select(func.count()).select_from(JobAttempt)) or 0,
        )


async def test_a_dry_run_estimates_and_creates_nothing(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    headers = {**caller.headers, "idempotency-key": "cover-1"}
    response = await client.post("/v1/batches?dry_run=true", json=BODY, headers=headers)
    assert response.status_code == 200, response.text
    dry = response.json()
    assert "location" not in response.headers
    assert dry["valid"] is True
    assert dry["job_count"] == 4
    assert dry["estimate_by_model"] == {"big": 0.01, "middling": 0.002, "text-only": 0.006}
    assert dry["estimate_usd"] == 0.018
    assert [job["estimate_usd"] for job in dry["jobs"]] == [0.003, 0.003, 0.01, 0.002]
    cheap = dry["jobs"][3]
    assert (cheap["index"], cheap["model"], cheap["route"]) == (3, "middling", "cheap")
    assert cheap["routing"]["strategy"] == "cheapest"
    assert dry["jobs"][0]["route"] is None
    assert dry["jobs"][0]["routing"] is None
    assert dry["jobs"][0]["fallbacks"] == []
    assert await counts(routed) == (0, 0, 0)
    assert await routed.redis.dbsize() == 0  # nothing in line

    # The key was not used: a real submit with it and another body is accepted.
    other = {"jobs": BODY["jobs"][:1]}
    created = await client.post("/v1/batches", json=other, headers=headers)
    assert created.status_code == 202, created.text
    assert created.json()["estimate_usd"] == 0.003


async def test_the_202_body_carries_the_estimate_and_the_batch_its_cost_by_model(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    dry = (await client.post("/v1/batches?dry_run=1", json=BODY, headers=caller.headers)).json()
    response = await client.post("/v1/batches", json=BODY, headers=caller.headers)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["estimate_usd"] == dry["estimate_usd"]
    assert created["estimate_by_model"] == dry["estimate_by_model"]
    assert created["cost_by_model"] == {}
    assert created["counts"]["queued"] == 4

    await run_until_idle(routed)
    batch = (await client.get(f"/v1/batches/{created['id']}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert batch["cost_by_model"] == {"big": 0.01, "middling": 0.002, "text-only": 0.006}
    assert round(sum(batch["cost_by_model"].values()), 6) == batch["cost_usd"]
    listed = (await client.get("/v1/batches", headers=caller.headers)).json()
    assert listed["items"][0]["cost_by_model"] == batch["cost_by_model"]
    # A replay shows the batch as it is (no estimate: it is past).
    replay_headers = {**caller.headers, "idempotency-key": "k"}
    first = await client.post("/v1/batches", json=BODY, headers=replay_headers)
    again = await client.post("/v1/batches", json=BODY, headers=replay_headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert "estimate_usd" not in again.json()


async def test_a_bad_batch_gets_the_same_422_dry_or_not(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    body = {
        "jobs": [
            {"prompt": "a", "model": "thrifty", "width": 1920, "height": 1080},
            {"prompt": "b", "model": "nope"},
            {"prompt": "c", "model": "text-only", "reference_images": ["upl_missing"]},
        ]
    }
    dry = await client.post("/v1/batches?dry_run=true", json=body, headers=caller.headers)
    real = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert dry.status_code == real.status_code == 422
    assert dry.json() == real.json()
    fields = [detail["field"] for detail in dry.json()["error"]["details"]]
    assert fields == ["jobs[0].width", "jobs[1].model", "jobs[2].reference_images"]
    assert await counts(routed) == (0, 0, 0)
