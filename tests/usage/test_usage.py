"""GET /v1/usage: the figures agree with the jobs to the cent. Batches on models with
different prices (per image, per megapixel, per second of video, and a provider that
fails some attempts and is paid for some of those failures), from two API keys, run by
two dispatchers at once; then every grouping is checked against sums over the jobs and
attempts in SQL, exactly."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.catalog.config import Price
from service.kit.base import utcnow
from service.providers.base import ProviderPermanentError, ProviderRetryableError
from service.providers.registry import ModelSpec
from service.state import State, build_state, close_state
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller, submit
from tests.jobs.scripted import ScriptedProvider
from tests.jobs.sim_accounts import use_config

FIGURES = ("cost_usd", "images", "videos", "video_seconds", "attempts", "failed_attempts")
CONFIG = json.dumps(
    {
        "providers": {"local": {"kind": "local"}},
        "models": {
            "cheap": {"provider": "local", "ref": "procedural", "price": {"per_image": 0.003}},
            "cover": {"provider": "local", "ref": "procedural", "price": {"per_image": 0.0125}},
            "by-mp": {
                "provider": "local",
                "ref": "procedural",
                "price": {"per_megapixel": 0.0123},
            },
            "clip": {
                "provider": "local",
                "ref": "procedural",
                "media": "video",
                "price": {"per_second": 0.0105},
            },
        },
    }
)
FLAKY_PRICE = Decimal("0.004")


def flaky_errors() -> list[Exception]:
    """Paid for (it ran), paid for and worth another try, and refused (never paid)."""
    return [
        ProviderPermanentError("content_policy", "flagged after it ran", billable=True),
        ProviderRetryableError("provider_failed", "out of memory", billable=True),
        ProviderPermanentError("invalid_input", "refused", http_status=422),
    ]


def install_flaky(state: State, provider: ScriptedProvider) -> None:
    state.registry.providers[provider.name] = provider
    state.registry.models["flaky"] = ModelSpec(
        "flaky", provider.name, "x", price=Price(per_image=FLAKY_PRICE), charged_on_failure=True
    )


@pytest.fixture
async def second_state(state: State, tmp_path: Path) -> AsyncIterator[State]:
    """Another process's worth of dispatcher and workers on the same Postgres and Redis."""
    other = await build_state(state.settings)
    try:
        yield other
    finally:
        await close_state(other)


@pytest.fixture
async def priced(state: State, second_state: State, tmp_path: Path) -> ScriptedProvider:
    flaky = ScriptedProvider("flaky", flaky_errors())
    for each in (state, second_state):
        await use_config(each, CONFIG, tmp_path)
        install_flaky(each, flaky)
    return flaky


def batch(name: str, n: int) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for i in range(n):
        jobs += [
            {"prompt": f"{name} cheap {i}", "model": "cheap", "width": 64, "height": 64},
            {"prompt": f"{name} cover {i}", "model": "cover", "width": 128, "height": 96},
            # 320x200 is 0.064 MP: 0.0007872 each, which rounds.
            {"prompt": f"{name} mp {i}", "model": "by-mp", "width": 320, "height": 200},
            {"prompt": f"{name} flaky {i}", "model": "flaky", "width": 64, "height": 64},
        ]
    jobs.append(
        {"prompt": f"{name} clip", "model": "clip", "width": 128, "height": 72, "duration_s": 2}
    )
    return {"name": name, "jobs": jobs}


async def run_concurrently(*states: State) -> None:
    await asyncio.gather(*(run_until_idle(s, wait_for_deferred=True) for s in states))


async def usage(
    client: httpx.AsyncClient, caller: Caller, group_by: str, **window: datetime
) -> dict[str, Any]:
    params = {"group_by": group_by}
    params |= {k.rstrip("_"): v.isoformat() for k, v in window.items()}
    response = await client.get("/v1/usage", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def usd(value: Any) -> str:
    """A figure as the columns keep it: 6 decimals."""
    return f"{Decimal(str(value)):.6f}"


async def sql(state: State, query: str, **params: Any) -> list[Any]:
    async with state.engine.connect() as connection:
        return list((await connection.execute(text(query), params)).all())


def assert_groups_add_up(report: dict[str, Any]) -> None:
    totals = report["totals"]
    for figure in FIGURES:
        summed = sum((Decimal(str(g[figure])) for g in report["groups"]), Decimal(0))
        assert usd(summed) == usd(totals[figure]), figure


def by_key(report: dict[str, Any], figure: str = "cost_usd") -> dict[str | None, str]:
    return {g["key"]: usd(g[figure]) for g in report["groups"]}


async def test_usage_agrees_with_the_jobs_to_the_cent_under_concurrency(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    second_state: State,
    priced: ScriptedProvider,
) -> None:
    other = await make_caller(state, "reports")
    started = utcnow() - timedelta(seconds=1)
    first = [await submit(client, caller, batch(f"first-{n}", 4)) for n in range(2)]
    await run_concurrently(state, second_state)
    between = utcnow()
    second = [await submit(client, other, batch(f"second-{n}", 3)) for n in range(2)]
    await run_concurrently(state, second_state)
    everything = {"from_": started, "to": utcnow() + timedelta(minutes=1)}

    assert priced.errors == []  # every scripted failure happened
    [(active,)] = await sql(state, "SELECT count(*) FROM jobs WHERE status IN ('queued','running')")
    assert active == 0
    reports = {g: await usage(client, caller, g, **everything) for g in GROUP_BYS}
    for report in reports.values():
        assert_groups_add_up(report)
        assert report["totals"] == reports["model"]["totals"]
    totals = reports["model"]["totals"]

    # The totals are the jobs' costs and the attempts' costs, exactly.
    [(jobs_cost, attempts_cost)] = await sql(
        state,
        "SELECT (SELECT sum(cost_usd) FROM jobs), (SELECT sum(cost_usd) FROM job_attempts)",
    )
    assert usd(totals["cost_usd"]) == usd(jobs_cost) == usd(attempts_cost)
    # Failures were paid for: two ran (flaky_errors), one was refused.
    [(failed_cost, failed_count)] = await sql(
        state,
        "SELECT sum(cost_usd), count(*) FROM job_attempts WHERE outcome IN ('failed','retry')",
    )
    assert usd(failed_cost) == usd(2 * FLAKY_PRICE)
    assert totals["failed_attempts"] == failed_count == 3
    [(attempt_count,)] = await sql(state, "SELECT count(*) FROM job_attempts")
    assert totals["attempts"] == attempt_count

    # What was made: succeeded jobs, and the seconds of their videos.
    [(images, videos, seconds)] = await sql(
        state,
        "SELECT count(*) FILTER (WHERE coalesce(params->>'media','image') = 'image'), "
        "count(*) FILTER (WHERE params->>'media' = 'video'), "
        "coalesce(sum(output_duration_s::numeric) FILTER (WHERE params->>'media' = 'video'), 0) "
        "FROM jobs WHERE status = 'succeeded'",
    )
    assert (totals["images"], totals["videos"]) == (images, videos)
    assert videos == 4
    assert Decimal(str(totals["video_seconds"])) == seconds > 0

    # Each grouping against SQL over the jobs.
    per_model = await sql(state, "SELECT model, sum(cost_usd) FROM jobs GROUP BY model")
    assert by_key(reports["model"]) == {m: usd(c) for m, c in per_model}
    assert set(by_key(reports["model"])) == {"cheap", "cover", "by-mp", "clip", "flaky"}
    # 14 per-megapixel jobs at 0.0007872 each, rounded per job: 14 x 0.000787.
    assert by_key(reports["model"])["by-mp"] == usd(Decimal("0.000787") * 14)
    per_account = await sql(state, "SELECT provider, sum(cost_usd) FROM jobs GROUP BY provider")
    assert by_key(reports["account"]) == {a: usd(c) for a, c in per_account}
    per_batch = await sql(state, "SELECT batch_id, sum(cost_usd) FROM jobs GROUP BY batch_id")
    assert by_key(reports["batch"]) == {str(b): usd(c) for b, c in per_batch}
    assert {g["name"] for g in reports["batch"]["groups"]} == {
        "first-0", "first-1", "second-0", "second-1"
    }  # fmt: skip
    for owner, batch_id in [(caller, b) for b in first] + [(other, b) for b in second]:
        shown = (await client.get(f"/v1/batches/{batch_id}", headers=owner.headers)).json()
        assert usd(shown["cost_usd"]) == by_key(reports["batch"])[batch_id]
    per_key = await sql(
        state,
        "SELECT b.api_key_id, sum(j.cost_usd) FROM jobs j JOIN batches b ON b.id = j.batch_id "
        "GROUP BY b.api_key_id",
    )
    assert by_key(reports["api_key"]) == {str(k): usd(c) for k, c in per_key}
    keys = {g["key"]: (g["name"], g["prefix"]) for g in reports["api_key"]["groups"]}
    for key, name in ((caller, "tests"), (other, "reports")):
        shown_name, prefix = keys[str(key.api_key_id)]
        assert shown_name == name
        assert key.key.startswith(prefix)
    for report in reports.values():
        assert caller.key not in json.dumps(report)
        assert other.key not in json.dumps(report)
    days: dict[str, Decimal] = defaultdict(Decimal)
    for finished_at, cost in await sql(state, "SELECT finished_at, cost_usd FROM job_attempts"):
        days[finished_at.astimezone(UTC).date().isoformat()] += cost
    assert by_key(reports["day"]) == {d: usd(c) for d, c in days.items()}

    # A window holds only the attempts that finished in it.
    later = await usage(client, caller, "batch", from_=between, to=everything["to"])
    earlier = await usage(client, caller, "batch", from_=started, to=between)
    assert set(by_key(later)) == set(second)
    assert set(by_key(earlier)) == set(first)
    for part in (earlier, later):
        assert_groups_add_up(part)
    for figure in FIGURES:
        both = Decimal(str(earlier["totals"][figure])) + Decimal(str(later["totals"][figure]))
        assert usd(both) == usd(totals[figure]), figure


GROUP_BYS = ("model", "account", "day", "batch", "api_key")


async def test_an_empty_window_is_all_zeros(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    report = await usage(client, caller, "day", from_=start, to=start + timedelta(days=1))
    assert report["groups"] == []
    assert report["totals"] == dict.fromkeys(FIGURES, 0)
    assert report["from"].startswith("2020-01-01T00:00:00")


async def test_the_default_window_is_this_month_so_far(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.get("/v1/usage", headers=caller.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    start, end = datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])
    assert (start.day, start.hour, start.minute, start.second) == (1, 0, 0, 0)
    assert start.utcoffset() == timedelta(0)
    assert timedelta(0) < end - start <= timedelta(days=31)
    assert body["group_by"] == "model"


async def test_a_window_without_an_offset_is_utc(client: httpx.AsyncClient, caller: Caller) -> None:
    params = {"from": "2026-03-01T00:00:00", "to": "2026-03-02T00:00:00+01:00"}
    response = await client.get("/v1/usage", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert datetime.fromisoformat(body["from"]) == datetime(2026, 3, 1, tzinfo=UTC)
    assert datetime.fromisoformat(body["to"]) == datetime(2026, 3, 1, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"to": "9999-12-31T23:59:59-05:00"}, "to"),
    ],
)
async def test_a_bad_query_is_a_422_naming_the_field(
    client: httpx.AsyncClient, caller: Caller, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/usage", params=params, headers=caller.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == field
    if field == "group_by":
        assert "colour" in error["message"]
        assert "api_key" in error["message"]


async def test_usage_needs_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/usage")
    assert response.status_code == 401
