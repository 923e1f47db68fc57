"""What the tests of recovery share: a create whose worker died before it stored the
handle, and a job with its attempts as the API shows them."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx

from service.db import session_scope
from service.jobs import requests, service
from service.state import State
from tests.conftest import Caller


async def create_then_die(state: State, model: str, job_id: str, *, max_attempts: int) -> None:
    """Start the job's attempt on the Replicate account and make its prediction there, as
    a worker would; store nothing more (the worker died before it kept the id)."""
    spec = state.registry.model(model)
    assert spec is not None
    async with session_scope(state.sessionmaker) as session:
        started = await service.start_attempt(
            session,
            uuid.UUID(job_id),
            account="replicate",
            max_attempts=max_attempts,
            price=Decimal(0),
            public_url="http://x",
        )
    assert isinstance(started, service.StartedJob)
    await state.registry.providers["replicate"].submit(  # type: ignore[attr-defined]
        await requests.generation_request(state, spec, started)
    )


async def job_and_attempts(
    client: httpx.AsyncClient, caller: Caller, job_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    attempts = (await client.get(f"/v1/jobs/{job_id}/attempts", headers=caller.headers)).json()
    return job, attempts
