"""Posting batch files, and reading back what was stored."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from service.models import Batch, Job
from service.state import State
from tests.conftest import Caller

CSV = "text/csv"
JSONL = "application/x-ndjson"
YAML = "application/yaml"


async def post_raw(
    client: httpx.AsyncClient,
    caller: Caller,
    body: str | bytes,
    content_type: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return await client.post(
        "/v1/batches",
        content=data,
        params=params,
        headers={**caller.headers, "content-type": content_type, **(headers or {})},
    )


async def post_form(
    client: httpx.AsyncClient,
    caller: Caller,
    file: tuple[str, str | bytes, str | None],
    fields: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    name, content, kind = file
    part = (name, content, kind) if kind else (name, content)
    return await client.post(
        "/v1/batches",
        files={"file": part},
        data=fields or {},
        headers={**caller.headers, **(headers or {})},
    )


def rejected(response: httpx.Response, status: int = 422) -> dict[str, str]:
    """field -> message of each detail of a refused file; the message names the first."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["details"], error
    first = error["details"][0]
    assert error["message"].startswith(f"{first['field']}: {first['message']}"), error
    return {d["field"]: d["message"] for d in error["details"]}


def assert_details_start(details: dict[str, str], expected: dict[str, str]) -> None:
    """Each expected place has a detail, whose message starts as expected."""
    for field, message in expected.items():
        assert details.get(field, "").startswith(message), details


async def stored_jobs(state: State, batch_id: str) -> list[Job]:
    async with state.sessionmaker() as session:
        query = select(Job).where(Job.batch_id == uuid.UUID(batch_id)).order_by(Job.index)
        return list((await session.execute(query)).scalars())


async def stored_batch(state: State, batch_id: str) -> Batch:
    async with state.sessionmaker() as session:
        batch = await session.get(Batch, uuid.UUID(batch_id))
        assert batch is not None
        return batch


async def counts(state: State) -> tuple[int, int]:
    """(batches, jobs) in the database: what a refused file must leave at zero."""
    async with state.sessionmaker() as session:
        batches = await session.scalar(select(func.count()).select_from(Batch))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    return int(batches or 0), int(jobs or 0)


def params_of(job: Job) -> dict[str, Any]:
    return dict(job.params)
