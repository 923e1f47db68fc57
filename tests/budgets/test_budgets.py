"""Key and account budgets, in one process: the endpoint, reservations at dispatch,
realtime allowances, and settlement of every way an attempt ends."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db import session_scope
from service.jobs import service
from service.jobs.transitions import StartedJob
from service.models import Batch
from service.providers.base import ProviderRetryableError
from service.state import State
from service.worker import run_until_idle
from tests.budgets.helpers import (
    attempts_of,
    batch_body,
    budget_config,
    jobs_of,
    ledgers,
    refusals,
    run_batch,
    statuses,
)
from tests.conftest import Caller, make_caller, submit
from tests.jobs.sim_accounts import use_config

URL = "/v1/keys/current/budget"


async def set_budget(client: httpx.AsyncClient, caller: Caller, **limits: Any) -> dict[str, Any]:
    response = await client.post(URL, json=limits, headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def local(state: State, tmp_path: Path) -> State:
    await use_config(state, budget_config(), tmp_path)
    return state


async def test_a_key_without_budgets_shows_none(client: httpx.AsyncClient, caller: Caller) -> None:
    response = await client.get(URL, headers=caller.headers)
    assert response.status_code == 200
    assert response.json() == {
        "daily_usd": None,
        "monthly_usd": None,
        "realtime_daily_usd": None,
        "realtime_monthly_usd": None,
        "usage": [],
    }


async def test_limits_are_set_kept_and_removed(client: httpx.AsyncClient, caller: Caller) -> None:
    body = await set_budget(client, caller, daily_usd=1, monthly_usd=20.5)
    assert (body["daily_usd"], body["monthly_usd"]) == (1.0, 20.5)
    assert [u["budget"] for u in body["usage"]] == ["daily", "monthly"]
    assert {u["spent_or_reserved_usd"] for u in body["usage"]} == {0.0}
    body = await set_budget(client, caller, realtime_daily_usd=0.5)  # the others stay
    assert (body["daily_usd"], body["realtime_daily_usd"]) == (1.0, 0.5)
    body = await set_budget(client, caller, daily_usd=None)
    assert body["daily_usd"] is None
    assert body["monthly_usd"] == 20.5
    assert [u["budget"] for u in body["usage"]] == ["monthly", "realtime_daily"]
    shown = (await client.get(URL, headers=caller.headers)).json()
    assert shown == body


@pytest.mark.parametrize(
    "body",
    [
        {"daily_usd": 0},
        {"daily_usd": -1},
        {"monthly_usd": 1_000_000},
        # Rounds to a million at six decimals: the column could not hold it.
        {"daily_usd": 999999.9999999998},
        {"monthly_usd": "lots"},
        {"weekly_usd": 5},
    ],
)
async def test_bad_limits_are_refused_naming_the_field(
    client: httpx.AsyncClient, caller: Caller, body: dict[str, Any]
) -> None:
    response = await client.post(URL, json=body, headers=caller.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"][0]["field"].endswith(next(iter(body)))


async def test_another_key_does_not_see_or_spend_this_keys_budget(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.003)
    other = await make_caller(local, "other")
    _, jobs = await run_batch(client, other, local, batch_body(3))
    assert statuses(jobs) == {"succeeded": 3}
    assert (await client.get(URL, headers=other.headers)).json()["daily_usd"] is None
    assert await ledgers(local) == {}  # unbudgeted work makes no ledger


async def test_a_key_daily_budget_stops_dispatch_and_names_itself(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.01)
    batch_id, jobs = await run_batch(client, caller, local, batch_body(5))
    assert statuses(jobs) == {"succeeded": 3, "failed": 2}
    failed = [job for job in jobs if job.status.value == "failed"]
    assert {job.error_code for job in failed} == {"budget_exceeded"}
    assert {job.error_message for job in failed} == {
        "the API key's daily budget of $0.010000 would be exceeded: "
        "$0.009000 spent or reserved, this job costs $0.003000"
    }
    assert not [job for job in failed if job.attempts]  # never sent, never charged
    attempts = await attempts_of(local, batch_id)
    assert len(attempts) == 3
    day = f"key:{caller.api_key_id}:day"
    for attempt in attempts:
        assert attempt.reserved is not None
        assert attempt.reserved["usd"] == "0.003000"
        assert [scope for scope, _ in attempt.reserved["ledgers"]] == [day]
    assert (await ledgers(local))[day] == Decimal("0.009")
    usage = (await client.get(URL, headers=caller.headers)).json()["usage"]
    assert usage[0]["spent_or_reserved_usd"] == pytest.approx(0.009)
    assert usage[0]["remaining_usd"] == pytest.approx(0.001)


async def test_the_monthly_limit_counts_too(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=100, monthly_usd=0.006)
    _, jobs = await run_batch(client, caller, local, batch_body(4))
    assert statuses(jobs) == {"succeeded": 2, "failed": 2}
    assert refusals(jobs) == {
        "the API key's monthly budget of $0.006000 would be exceeded: "
        "$0.006000 spent or reserved, this job costs $0.003000"
    }
    found = await ledgers(local)
    assert found[f"key:{caller.api_key_id}:day"] == Decimal("0.006")
    assert found[f"key:{caller.api_key_id}:month"] == Decimal("0.006")


async def test_an_account_monthly_budget_from_the_config(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    await use_config(state, budget_config(account_budget={"monthly_usd": 0.006}), tmp_path)
    _, jobs = await run_batch(client, caller, state, batch_body(3))
    assert statuses(jobs) == {"succeeded": 2, "failed": 1}
    assert refusals(jobs) == {
        "the local account's monthly budget of $0.006000 would be exceeded: "
        "$0.006000 spent or reserved, this job costs $0.003000"
    }
    assert await ledgers(state) == {"account:local:month": Decimal("0.006")}


async def test_realtime_work_runs_from_its_allowance_when_bulk_has_used_the_budget(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.006, realtime_daily_usd=0.006)
    _, bulk = await run_batch(client, caller, local, batch_body(4, tag="bulk"))
    assert statuses(bulk) == {"succeeded": 2, "failed": 1 + 1}
    body = batch_body(2, tag="cover", priority="realtime")
    _, covers = await run_batch(client, caller, local, body)
    assert statuses(covers) == {"succeeded": 2}
    body = batch_body(1, tag="late", priority="realtime")
    _, [late] = await run_batch(client, caller, local, body)
    assert late.error_code == "budget_exceeded"
    assert late.error_message is not None
    assert late.error_message.startswith("the API key's realtime daily allowance of $0.006000")
    found = await ledgers(local)
    assert found[f"key:{caller.api_key_id}:day"] == Decimal("0.006")
    assert found[f"key:{caller.api_key_id}:day:realtime"] == Decimal("0.006")


async def test_without_an_allowance_realtime_work_shares_the_limit(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.006)
    _, bulk = await run_batch(client, caller, local, batch_body(2, tag="bulk"))
    assert statuses(bulk) == {"succeeded": 2}
    body = batch_body(1, tag="cover", priority="realtime")
    _, [cover] = await run_batch(client, caller, local, body)
    assert cover.error_code == "budget_exceeded"


async def test_a_budget_lowered_below_the_spend_refuses_further_jobs(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=1)
    _, first = await run_batch(client, caller, local, batch_body(3, tag="first"))
    assert statuses(first) == {"succeeded": 3}
    body = await set_budget(client, caller, daily_usd=0.005)
    assert body["usage"][0]["spent_or_reserved_usd"] == pytest.approx(0.009)
    assert body["usage"][0]["remaining_usd"] == 0
    _, jobs = await run_batch(client, caller, local, batch_body(2, tag="second"))
    assert statuses(jobs) == {"failed": 2}
    assert {j.error_code for j in jobs} == {"budget_exceeded"}
    assert (await ledgers(local))[f"key:{caller.api_key_id}:day"] == Decimal("0.009")


async def test_a_budget_set_mid_period_counts_what_was_already_spent(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    _, first = await run_batch(client, caller, local, batch_body(2, tag="before"))
    assert statuses(first) == {"succeeded": 2}
    body = await set_budget(client, caller, daily_usd=0.009)
    assert body["usage"][0]["spent_or_reserved_usd"] == pytest.approx(0.006)
    _, second = await run_batch(client, caller, local, batch_body(3, tag="after"))
    assert statuses(second) == {"succeeded": 1, "failed": 2}
    assert (await ledgers(local))[f"key:{caller.api_key_id}:day"] == Decimal("0.009")


async def test_failed_attempts_release_their_reservation(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.003)
    day = f"key:{caller.api_key_id}:day"
    for tag in ("first", "second"):  # the second fits only if the first gave its back
        body = batch_body(1, model="broken", tag=tag)
        broken_id, [job] = await run_batch(client, caller, local, body)
        assert (job.status.value, job.error_code) == ("failed", "invalid_request")
        [attempt] = await attempts_of(local, broken_id)
        assert attempt.reserved is not None
        assert attempt.reserved["ledgers"][0][0] == day
        assert (await ledgers(local))[day] == 0
    _, ok = await run_batch(client, caller, local, batch_body(1))
    assert statuses(ok) == {"succeeded": 1}


async def test_the_batch_budget_and_the_key_budget_reserve_together_or_not_at_all(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.006)
    batch_id, jobs = await run_batch(client, caller, local, batch_body(4, budget_usd=0.5))
    assert statuses(jobs) == {"succeeded": 2, "failed": 2}
    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["cost_usd"] == pytest.approx(0.006)
    # The refused jobs reserved nothing in the batch's budget either.
    async with local.sessionmaker() as session:
        found = await session.get(Batch, uuid.UUID(batch_id))
        assert found is not None
        assert found.reserved_usd == Decimal("0.006")


async def test_budget_exceeded_never_moves_to_a_fallback(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.001)
    batch_id, [job] = await run_batch(client, caller, local, batch_body(1, model="with-fallback"))
    assert job.status.value == "failed"
    assert job.error_code == "budget_exceeded"
    assert await attempts_of(local, batch_id) == []


async def _start(state: State, job_id: uuid.UUID) -> Any:
    async with session_scope(state.sessionmaker) as session:
        return await service.start_attempt(
            session,
            job_id,
            account="local",
            max_attempts=3,
            price=Decimal("0.003"),
            public_url="http://testserver",
        )


async def test_cancelled_and_abandoned_attempts_release_their_reservation(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.004)
    day = f"key:{caller.api_key_id}:day"
    [job] = await jobs_of(local, await submit(client, caller, batch_body(1)))
    first = await _start(local, job.id)
    assert isinstance(first, StartedJob)
    assert (await ledgers(local))[day] == Decimal("0.003")
    # Its worker died (stale_after_s is 0 here): the next claim releases its reservation
    # before it reserves its own, which would not fit beside it.
    second = await _start(local, job.id)
    assert isinstance(second, StartedJob)
    assert second.attempt == 2
    assert (await ledgers(local))[day] == Decimal("0.003")
    async with session_scope(local.sessionmaker) as session:
        await service.record_cancelled(
            session, second, price=Decimal("0.003"), public_url="http://testserver"
        )
    assert (await ledgers(local))[day] == 0
    outcomes = sorted((a.number, a.outcome) for a in await attempts_of(local, str(job.batch_id)))
    assert outcomes == [(1, "abandoned"), (2, "cancelled")]


async def test_a_retried_attempt_gives_its_reservation_back_before_the_next(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.003)
    day = f"key:{caller.api_key_id}:day"
    [job] = await jobs_of(local, await submit(client, caller, batch_body(1)))
    started = await _start(local, job.id)
    async with session_scope(local.sessionmaker) as session:
        await service.record_failure(
            session,
            started,
            ProviderRetryableError("server_error", "try again"),
            latency_ms=5,
            max_attempts=3,
            retry_in_s=0,
            price=Decimal("0.003"),
            public_url="http://testserver",
        )
    assert (await ledgers(local))[day] == 0
    await run_until_idle(local)
    [job] = await jobs_of(local, str(job.batch_id))
    assert job.status.value == "succeeded"
    assert (await ledgers(local))[day] == Decimal("0.003")


async def test_a_job_reserves_in_every_budget_that_applies(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    account = {"monthly_usd": 0.003, "realtime_monthly_usd": 0.003}
    await use_config(state, budget_config(account_budget=account), tmp_path)
    await set_budget(client, caller, daily_usd=1)
    _, jobs = await run_batch(client, caller, state, batch_body(2, tag="bulk"))
    assert statuses(jobs) == {"succeeded": 1, "failed": 1}
    assert refusals(jobs) == {
        "the local account's monthly budget of $0.003000 would be exceeded: "
        "$0.003000 spent or reserved, this job costs $0.003000"
    }
    body = batch_body(1, tag="cover", priority="realtime")
    cover_id, [cover] = await run_batch(client, caller, state, body)
    assert cover.status.value == "succeeded"
    [attempt] = await attempts_of(state, cover_id)
    assert attempt.reserved is not None
    day = f"key:{caller.api_key_id}:day"
    assert sorted(scope for scope, _ in attempt.reserved["ledgers"]) == [
        "account:local:month:realtime",
        day,
    ]
    assert await ledgers(state) == {
        day: Decimal("0.006"),
        "account:local:month": Decimal("0.003"),
        "account:local:month:realtime": Decimal("0.003"),
    }


async def test_a_job_whose_model_left_the_configuration_gives_its_reservation_back(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    await set_budget(client, caller, daily_usd=0.004)
    day = f"key:{caller.api_key_id}:day"
    [job] = await jobs_of(local, await submit(client, caller, batch_body(1)))
    assert isinstance(await _start(local, job.id), StartedJob)
    assert (await ledgers(local))[day] == Decimal("0.003")
    # Its worker died, and the model is gone from the configuration before it is retried.
    async with session_scope(local.sessionmaker) as session:
        await service.fail_unconfigured(session, job.id, public_url="http://testserver")
    assert (await ledgers(local))[day] == 0
    [failed] = await jobs_of(local, str(job.batch_id))
    assert (failed.status.value, failed.error_code) == ("failed", "unknown_model")
    outcomes = [a.outcome for a in await attempts_of(local, str(job.batch_id))]
    assert outcomes == ["abandoned"]
