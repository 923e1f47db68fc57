"""A finished batch to take manifests of: named outputs, a failed job, and each job's row
variables (sku, name, ...)."""

from __future__ import annotations

from typing import Any

import httpx

from service.providers.base import ProviderPermanentError
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install

JOBS: list[dict[str, Any]] = [
    {"prompt": "a red mug", "output_name": "SKU-1", "width": 64, "height": 96, "seed": 7},
    {"prompt": "a blue mug", "output_name": "SKU-2", "width": 64, "height": 96},
    {
        "prompt": "refused",
        "model": "test/scripted",
        "output_name": "SKU-3",
        "width": 64,
        "height": 64,
    },
    {"prompt": "unnamed", "width": 64, "height": 96, "format": "jpeg"},
]
VARIABLES = [
    {"sku": "SKU-1", "name": "Red mug", "status": "new"},
    {"sku": "SKU-2", "name": "Blue mug, large", "status": "old"},
    {"sku": "SKU-3", "name": 'The "refused" one'},
    None,
]


async def finished_batch(client: httpx.AsyncClient, caller: Caller, state: State) -> str:
    install(
        state, ScriptedProvider(errors=[ProviderPermanentError("content_policy", "refused: no")])
    )
    jobs = [
        {**job, "variables": values} if values is not None else job
        for job, values in zip(JOBS, VARIABLES, strict=True)
    ]
    batch_id = await submit(client, caller, {"name": "mugs", "jobs": jobs})
    await run_until_idle(state)
    return batch_id
