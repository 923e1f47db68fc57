"""Bad input is a 422 naming the field, and it creates nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.kit.pagination import encode_cursor
from service.models import Batch, Job
from service.state import State
from tests.conftest import Caller


def job(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red bicycle", **fields}


def batch(*jobs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"jobs": list(jobs) or [job()], **fields}


async def stored(state: State) -> tuple[int, int]:
    async with state.sessionmaker() as session:
        batches = await session.scalar(select(func.count()).select_from(Batch))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    return batches or 0, jobs or 0


def assert_rejected(
    response: httpx.Response, field: str, *, code: str = "validation_error"
) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["details"], error
    for detail in error["details"]:
        assert set(detail) == {"field", "message"}
        assert isinstance(detail["message"], str)
        assert detail["message"]
    assert error["details"][0]["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error
    return dict(error)


TOO_MANY_JOBS = batch(*[job() for _ in range(10_001)])
BAD_BODIES = {
    "missing prompt": (batch({"width": 512}), "jobs[0].prompt"),
    "empty prompt": (batch(job(prompt="")), "jobs[0].prompt"),
    "whitespace prompt": (batch(job(), job(prompt=" \t\n ")), "jobs[1].prompt"),
    "prompt of 4001 characters": (batch(job(prompt="x" * 4001)), "jobs[0].prompt"),
    "no jobs": ({"jobs": []}, "jobs"),
    "10,001 jobs": (TOO_MANY_JOBS, "jobs"),
    "width 63": (batch(job(width=63)), "jobs[0].width"),
    "width 4104": (batch(job(width=4104)), "jobs[0].width"),
    "width not a multiple of 8": (batch(job(width=100)), "jobs[0].width"),
    "height in defaults": (batch(defaults={"height": 4104}), "defaults.height"),
    "seed beyond 32 bits": (batch(job(seed=2**32)), "jobs[0].seed"),
    "seed beyond 64 bits": (batch(job(seed=2**70)), "jobs[0].seed"),
    "unknown model": (batch(job(), job(), job(model="nope/nothing")), "jobs[2].model"),
    "unknown model in defaults": (batch(defaults={"model": "nope/nothing"}), "jobs[0].model"),
    "unknown format": (batch(job(format="gif")), "jobs[0].format"),
    "ftp callback_url": (batch(callback_url="ftp://x"), "callback_url"),
    "callback_url not a url": (batch(callback_url="not a url"), "callback_url"),
    "same output_name twice": (
        batch(job(output_name="cover"), job(output_name="Cover")),
        "jobs[1].output_name",
    ),
    "unknown top-level field": (batch(colour="red"), "colour"),
    "unknown job field": (batch(job(), job(size="big")), "jobs[1].size"),
    "metadata nested too deep": (
        batch(metadata=json.loads('{"a":' * 40 + "1" + "}" * 40)),
        "metadata",
    ),
    "metadata not an object": (batch(metadata=[1, 2]), "metadata"),
    "jobs not a list": ({"jobs": {"prompt": "x"}}, "jobs"),
    "unknown priority": (batch(priority="urgent"), "priority"),
    "priority per job": (batch(job(priority="realtime")), "jobs[0].priority"),
    "zero budget": (batch(budget_usd=0), "budget_usd"),
    "negative budget": (batch(budget_usd=-5), "budget_usd"),
    "budget as text": (batch(budget_usd="ten dollars"), "budget_usd"),
    "budget beyond a million": (batch(budget_usd=1e7), "budget_usd"),
    "budget that rounds to a million": (batch(budget_usd=999999.9999999999), "budget_usd"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_body_is_rejected_and_creates_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert_rejected(response, field)
    assert await stored(state) == (0, 0)


RAW_BODIES = {
    "malformed JSON": b'{"jobs": [{"prompt": "a red bicycle"}',
    "trailing garbage": b'{"jobs": [{"prompt": "x"}]} x',
    "not UTF-8": b'{"jobs": [{"prompt": "\xff\xfe"}]}',
    "nested past the parser's limit": b'{"jobs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "an array nested past the parser's limit": b"[" * 100_000 + b"]" * 100_000,
    "nested past the body limit": b'{"jobs": [{"prompt": "x", "metadata": '
    + b'{"a":' * 70
    + b"1"
    + b"}" * 70
    + b"}]}",
    "nested past the body limit, unclosed": b'{"jobs": [' + b'{"a": [' * 40,
}


@pytest.mark.parametrize("raw", RAW_BODIES.values(), ids=RAW_BODIES.keys())
async def test_malformed_json_is_rejected_and_creates_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State, raw: bytes
) -> None:
    headers = {**caller.headers, "content-type": "application/json"}
    response = await client.post("/v1/batches", content=raw, headers=headers)
    assert_rejected(response, "body", code="invalid_json")
    assert await stored(state) == (0, 0)


NOT_AN_OBJECT = {
    "empty": ("application/json", b""),
    "null": ("application/json", b"null"),
    "a list": ("application/json", b'[{"prompt": "x"}]'),
}


@pytest.mark.parametrize(("content_type", "raw"), NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
async def test_a_body_that_is_not_an_object_is_rejected(
    client: httpx.AsyncClient, caller: Caller, state: State, content_type: str, raw: bytes
) -> None:
    headers = {**caller.headers, "content-type": content_type}
    response = await client.post("/v1/batches", content=raw, headers=headers)
    assert_rejected(response, "body")
    assert await stored(state) == (0, 0)


NON_FINITE = {
    "NaN": '{"jobs": [{"prompt": "x", "metadata": {"score": NaN}}]}',
    "Infinity": '{"metadata": {"a": [-Infinity]}, "jobs": [{"prompt": "x"}]}',
}


@pytest.mark.parametrize("raw", NON_FINITE.values(), ids=NON_FINITE.keys())
async def test_non_finite_numbers_are_rejected(
    client: httpx.AsyncClient, caller: Caller, state: State, raw: str
) -> None:
    """Python's JSON parser accepts NaN and Infinity; jsonb does not."""
    headers = {**caller.headers, "content-type": "application/json"}
    response = await client.post("/v1/batches", content=raw, headers=headers)
    field = "jobs[0].metadata.score" if "score" in raw else "metadata.a[0]"
    assert_rejected(response, field)
    assert await stored(state) == (0, 0)


async def test_every_invalid_job_is_named(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = batch(job(), job(width=63), job(), job(prompt=""), job(format="bmp"))
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    error = assert_rejected(response, "jobs[1].width")
    assert [d["field"] for d in error["details"]] == [
        "jobs[1].width",
        "jobs[3].prompt",
        "jobs[4].format",
    ]
    assert "(and 2 more)" in error["message"]
    assert await stored(state) == (0, 0)


async def test_big_numbers_in_metadata_are_kept(client: httpx.AsyncClient, caller: Caller) -> None:
    metadata = {"big": 2**70, "negative": -(2**80), "small": 1e-300, "deep": {"a": [{"b": None}]}}
    body = batch(job(metadata=metadata), metadata=metadata)
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == metadata
    jobs = await client.get(f"/v1/batches/{response.json()['id']}/jobs", headers=caller.headers)
    assert jobs.json()["items"][0]["metadata"] == metadata


BAD_CURSORS = {
    "not base64": "%%%",
    "not JSON": encode_cursor(["x"])[:-3] + "!!!",
    "wrong shape": encode_cursor([1, 2, 3]),
    "not a timestamp": encode_cursor([12, str(uuid.uuid4())]),
    "not an id": encode_cursor(["2026-01-01T00:00:00+00:00", "nope"]),
    "year 1 east of UTC": encode_cursor(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
    "year 9999 west of UTC": encode_cursor(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]),
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_bad_batch_cursor_is_rejected(
    client: httpx.AsyncClient, caller: Caller, cursor: str
) -> None:
    response = await client.get("/v1/batches", params={"cursor": cursor}, headers=caller.headers)
    assert_rejected(response, "cursor")


async def test_cursors_at_the_ends_of_time_are_answered(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    for created in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"):
        cursor = encode_cursor([created, str(uuid.uuid4())])
        response = await client.get(
            "/v1/batches", params={"cursor": cursor}, headers=caller.headers
        )
        assert response.status_code == 200, response.text


BAD_JOB_CURSORS = {
    "a string": encode_cursor(["3"]),
    "a float": encode_cursor([3.5]),
    "true": encode_cursor([True]),
    "beyond 64 bits": encode_cursor([2**70]),
    "beyond 32 bits": encode_cursor([2**40]),
    "negative": encode_cursor([-1]),
    "negative beyond 64 bits": encode_cursor([-(2**70)]),
}


@pytest.mark.parametrize("cursor", BAD_JOB_CURSORS.values(), ids=BAD_JOB_CURSORS.keys())
async def test_bad_job_cursor_is_rejected(
    client: httpx.AsyncClient, caller: Caller, cursor: str
) -> None:
    response = await client.post("/v1/batches", json=batch(), headers=caller.headers)
    url = f"/v1/batches/{response.json()['id']}/jobs"
    response = await client.get(url, params={"cursor": cursor}, headers=caller.headers)
    assert_rejected(response, "cursor")


async def test_ten_thousand_jobs_are_accepted_and_all_stored(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = batch(*[job(prompt=f"image {i}", seed=i) for i in range(10_000)])
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["total"] == 10_000
    assert await stored(state) == (1, 10_000)
    async with state.sessionmaker() as session:
        indexes = await session.scalar(
            select(func.count(func.distinct(Job.index))).where(
                Job.batch_id == response.json()["id"]
            )
        )
    assert indexes == 10_000
