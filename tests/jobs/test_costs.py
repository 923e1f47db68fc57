"""A generation is paid for once the provider has made it, whatever happens to it after:
an output that could not be stored still costs its price, and the job's cost is the sum
of its attempts'."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import httpx

from service.catalog.config import Price
from service.state import State
from service.storage.base import StorageUnavailable
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install


async def test_an_output_that_could_not_be_stored_still_costs_what_it_cost(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    install(state, ScriptedProvider())
    spec = state.registry.models["test/scripted"]
    priced = dataclasses.replace(spec, price=Price(per_image=Decimal("0.01")))
    state.registry.models["test/scripted"] = priced
    storage = state.storage
    put = storage.put
    failures = [StorageUnavailable("the store is away")]

    async def put_once_failing(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await put(*args, **kwargs)

    storage.put = put_once_failing  # type: ignore[method-assign]
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "x", "model": "test/scripted"}]})
    await run_until_idle(state, wait_for_deferred=True)

    jobs = (await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)).json()
    [job] = jobs["items"]
    assert job["status"] == "succeeded"
    attempts = (await client.get(f"/v1/jobs/{job['id']}/attempts", headers=caller.headers)).json()
    assert [(a["outcome"], a["cost_usd"]) for a in attempts] == [
        ("retry", 0.01),
        ("succeeded", 0.01),
    ]
    assert job["cost_usd"] == 0.02
