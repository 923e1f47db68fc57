"""Prices: each form applied exactly (Decimal, to the micro-dollar), what a job reserves
against what it cost, and what a failed attempt costs. Then the usage-priced forms end to
end through the simulators: Replicate's predict_time and OpenAI's tokens become the
attempt's and the job's cost, and a failed prediction costs what Replicate bills for it."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.catalog import pricing
from service.catalog.config import Price, TokenPrice
from service.models import Job, JobAttempt
from service.providers.base import (
    Output,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.registry import ModelSpec
from service.providers.replicate import prediction_failure
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config

IMAGE = {"width": 1024, "height": 1024}


def spec(charged_on_failure: bool = False, **price: Any) -> ModelSpec:
    return ModelSpec("m", "p", "x", price=Price(**price), charged_on_failure=charged_on_failure)


def output(
    width: int = 1024, height: int = 1024, duration_s: float | None = None, **usage: Any
) -> Output:
    return Output(b"", "png", width, height, duration_s=duration_s, usage=usage)


# -- each form ---------------------------------------------------------------------------


def test_per_image_reserves_and_costs_its_price() -> None:
    model = spec(per_image=Decimal("0.003"))
    assert pricing.estimate(model, IMAGE) == Decimal("0.003000")
    assert pricing.actual(model, IMAGE, output()) == Decimal("0.003000")


def test_per_megapixel_is_charged_on_the_size_made() -> None:
    model = spec(per_megapixel=Decimal("0.0125"))
    # 1024x1024 is 1.048576 MP: 0.0131072, to the micro-dollar half to even.
    assert pricing.estimate(model, IMAGE) == Decimal("0.013107")
    # The provider made 512x512 (0.262144 MP): that is what is charged.
    assert pricing.actual(model, IMAGE, output(512, 512)) == Decimal("0.003277")
    # Forms add up.
    both = spec(per_image=Decimal("0.001"), per_megapixel=Decimal("0.0125"))
    assert pricing.actual(both, IMAGE, output(512, 512)) == Decimal("0.004277")


def test_per_second_is_charged_on_the_video_length_made() -> None:
    model = spec(per_second=Decimal("0.05"))
    params = {**IMAGE, "duration_s": 5}
    assert pricing.estimate(model, params) == Decimal("0.250000")
    assert pricing.actual(model, params, output(duration_s=5.04)) == Decimal("0.252000")
    # No length reported: the length asked for.
    assert pricing.actual(model, params, output()) == Decimal("0.250000")


def test_per_run_second_is_charged_on_the_reported_run_time() -> None:
    model = spec(per_run_second=Decimal("0.001525"))
    # Before it ran: a standard 10 s.
    assert pricing.estimate(model, IMAGE) == Decimal("0.015250")
    # Replicate's predict_time, fal's inference_time: 0.001525 x 2.345678 = 0.00357715895.
    assert pricing.actual(model, IMAGE, output(predict_time=2.345678)) == Decimal("0.003577")
    assert pricing.actual(model, IMAGE, output(inference_time=4)) == Decimal("0.006100")


def test_per_token_is_charged_on_reported_tokens_per_million() -> None:
    model = spec(per_token=TokenPrice(input=Decimal(5), output=Decimal(40)))
    # 100 x 5 / 1M + 4160 x 40 / 1M
    assert pricing.estimate(model, IMAGE) == Decimal("0.166900")
    used = output(input_tokens=25, output_tokens=4160, total_tokens=4185)
    assert pricing.actual(model, IMAGE, used) == Decimal("0.166525")
    # Chat-style names count too; 7 x 5 / 1M = 0.000035.
    chat = output(prompt_tokens=7, completion_tokens=0)
    assert pricing.actual(model, IMAGE, chat) == Decimal("0.000035")


def test_a_declared_estimate_is_what_a_job_reserves() -> None:
    model = spec(per_run_second=Decimal("0.001525"), estimate=Decimal("0.02"))
    assert pricing.estimate(model, IMAGE) == Decimal("0.020000")
    # Reported usage decides what it cost.
    assert pricing.actual(model, IMAGE, output(predict_time=2)) == Decimal("0.003050")
    # Nothing reported: the estimate is the best figure there is.
    assert pricing.actual(model, IMAGE, output()) == Decimal("0.020000")


def test_a_providers_own_dollar_figure_wins() -> None:
    model = spec(per_image=Decimal("0.003"))
    made = Output(b"", "png", 8, 8, cost_usd=Decimal("0.0421234"))
    assert pricing.actual(model, IMAGE, made) == Decimal("0.042123")


@pytest.mark.parametrize(
    "value", [math.inf, math.nan, -1.0, True, "2.5", None, 1e300, [1], {"s": 1}]
)
def test_unbelievable_usage_is_not_charged_on(value: Any) -> None:
    """No nonsense from a provider becomes a cost, or a crash: it counts as unreported."""
    model = spec(per_run_second=Decimal("0.001"))
    assert pricing.actual(model, IMAGE, output(predict_time=value)) == Decimal("0.010000")


def test_a_figure_never_exceeds_what_the_column_holds() -> None:
    model = spec(per_megapixel=Decimal("99999999"))
    assert pricing.estimate(model, {"width": 4096, "height": 4096}) == pricing.MAX_USD


# -- failed attempts ---------------------------------------------------------------------


def billable(**usage: Any) -> ProviderRetryableError:
    return ProviderRetryableError("provider_failed", "oom", billable=True, usage=usage)


def test_a_failure_costs_nothing_unless_the_model_is_charged_for_it() -> None:
    free = spec(per_run_second=Decimal("0.001525"))
    assert pricing.failed(free, IMAGE, billable(predict_time=3.5)) == Decimal(0)


def test_a_charged_failure_costs_its_reported_usage() -> None:
    model = spec(True, per_run_second=Decimal("0.001525"))
    assert pricing.failed(model, IMAGE, billable(predict_time=3.5)) == Decimal("0.005338")


def test_a_charged_failure_without_usage_costs_the_price_asked() -> None:
    assert pricing.failed(spec(True, per_image=Decimal("0.003")), IMAGE, billable()) == Decimal(
        "0.003000"
    )
    usage_priced = spec(True, per_run_second=Decimal("0.001"), estimate=Decimal("0.007"))
    assert pricing.failed(usage_priced, IMAGE, billable()) == Decimal("0.007000")


def test_a_failure_that_did_not_run_is_never_charged() -> None:
    model = spec(True, per_image=Decimal("0.003"))
    refused = ProviderPermanentError("invalid_input", "bad size", http_status=422)
    assert pricing.failed(model, IMAGE, refused) == Decimal(0)


def test_replicate_bills_failed_predictions_not_canceled_or_aborted() -> None:
    failed = prediction_failure("replicate", "p1", "CUDA out of memory", {"predict_time": 1.5})
    assert failed.retryable
    assert (failed.billable, failed.usage) == (True, {"predict_time": 1.5})
    nsfw = prediction_failure("replicate", "p2", "NSFW content detected", {"predict_time": 2})
    assert (nsfw.code, nsfw.billable) == ("content_policy", True)
    model = spec(True, per_run_second=Decimal("0.001"))
    assert pricing.failed(model, IMAGE, failed) == Decimal("0.001500")


def test_a_billable_error_survives_the_handle_being_stored() -> None:
    """A handle is stored as JSON between a poll and its completion: what is billable,
    and the usage, come back with it."""
    error = prediction_failure("replicate", "p1", "boom", {"predict_time": 1.25})
    handle = RemoteHandle("p1", "failed", {"metrics": {"predict_time": 1.25}}, error)
    back = RemoteHandle.from_json(json.loads(json.dumps(handle.to_json())))
    assert back.error is not None
    assert back.error.retryable
    assert (back.error.billable, back.error.usage) == (True, {"predict_time": 1.25})


# -- end to end through the simulators -----------------------------------------------------

RUN_PRICE = Decimal("0.001525")
TOKEN_PRICE = {"input": 5, "output": 40}


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig()) as handle:
        await handle.configure(latency={"kind": "fixed", "s": 0.3})
        yield handle


async def priced(
    state: State, sim: SimulatorHandle, tmp_path: Path, *, charged: bool, attempts: int = 1
) -> None:
    config = json.loads(sim_config(sim.url, max_attempts=attempts))
    config["models"]["flux-sim"] |= {
        "price": {"per_run_second": str(RUN_PRICE)},
        "charged_on_failure": charged,
    }
    config["models"]["gpt-sim"]["price"] = {"per_token": TOKEN_PRICE}
    await use_config(state, json.dumps(config), tmp_path)


async def attempts_of(state: State, batch_id: str) -> list[tuple[Job, JobAttempt]]:
    async with state.sessionmaker() as session:
        rows = await session.execute(
            select(Job, JobAttempt)
            .join(JobAttempt, JobAttempt.job_id == Job.id)
            .where(Job.batch_id == batch_id)
            .order_by(Job.index, JobAttempt.number)
        )
        return [(job, attempt) for job, attempt in rows]


async def predict_time(sim: SimulatorHandle, remote_id: str | None) -> Decimal:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        response = await http.get(
            f"/v1/predictions/{remote_id}", headers={"authorization": "Bearer sim-token"}
        )
    return Decimal(str(response.json()["metrics"]["predict_time"]))


async def test_replicate_run_time_is_what_a_job_costs(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: SimulatorHandle, tmp_path: Path
) -> None:
    await priced(state, sim, tmp_path, charged=False)
    body = {"defaults": {"model": "flux-sim", "width": 256, "height": 256}}
    body["jobs"] = [{"prompt": f"lighthouse {n}"} for n in range(2)]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    rows = await attempts_of(state, batch_id)
    assert [attempt.outcome for _, attempt in rows] == ["succeeded"] * 2
    for job, attempt in rows:
        seconds = await predict_time(sim, attempt.remote_id)
        assert seconds > 0
        expected = (RUN_PRICE * seconds).quantize(pricing.MICRO)
        assert attempt.cost_usd == expected
        assert job.cost_usd == expected
        assert Decimal(str(attempt.usage["predict_time"])) == seconds  # type: ignore[index]


async def test_openai_tokens_are_what_a_job_costs(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: SimulatorHandle, tmp_path: Path
) -> None:
    await priced(state, sim, tmp_path, charged=False)
    body = {"defaults": {"model": "gpt-sim", "width": 1024, "height": 1024}}
    body["jobs"] = [{"prompt": "a fox " * n} for n in (1, 9)]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    rows = await attempts_of(state, batch_id)
    assert [attempt.outcome for _, attempt in rows] == ["succeeded"] * 2
    costs = set()
    for job, attempt in rows:
        usage = attempt.usage or {}
        assert usage["input_tokens"] > 0
        assert usage["output_tokens"] > 0
        expected = (
            Decimal(usage["input_tokens"]) * 5 / 1_000_000
            + Decimal(usage["output_tokens"]) * 40 / 1_000_000
        ).quantize(pricing.MICRO)
        assert attempt.cost_usd == job.cost_usd == expected
        costs.add(expected)
    assert len(costs) == 2  # the longer prompt's input tokens cost more


async def test_a_failed_prediction_costs_its_run_time_when_charged(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Two attempts, each a prediction that ran and failed: each costs its own
    predict_time at the price, and the failed job costs both."""
    await priced(state, sim, tmp_path, charged=True, attempts=2)
    await sim.configure(prediction_failed=1.0)
    body = {"defaults": {"model": "flux-sim", "width": 256, "height": 256}}
    body["jobs"] = [{"prompt": "storm"}]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    rows = await attempts_of(state, batch_id)
    assert [attempt.outcome for _, attempt in rows] == ["retry", "failed"]
    total = Decimal(0)
    for _, attempt in rows:
        seconds = await predict_time(sim, attempt.remote_id)
        assert attempt.cost_usd == (RUN_PRICE * seconds).quantize(pricing.MICRO) > 0
        total += attempt.cost_usd
    job = rows[0][0]
    assert job.status == "failed"
    assert job.cost_usd == total


async def test_a_failed_prediction_costs_nothing_when_not_charged(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: SimulatorHandle, tmp_path: Path
) -> None:
    await priced(state, sim, tmp_path, charged=False)
    await sim.configure(prediction_failed=1.0)
    body = {"defaults": {"model": "flux-sim", "width": 256, "height": 256}}
    body["jobs"] = [{"prompt": "storm"}]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    await run_until_idle(state, wait_for_deferred=True)

    [(job, attempt)] = await attempts_of(state, batch_id)
    assert attempt.outcome == "failed"
    assert await predict_time(sim, attempt.remote_id) > 0  # it ran, and is not billed
    assert attempt.cost_usd == job.cost_usd == Decimal(0)


async def test_a_canceled_prediction_costs_nothing_even_when_failures_are_charged(
    client: httpx.AsyncClient, caller: Caller, state: State, sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Canceled at Replicate (not by Darkroom's caller): the job fails, unbilled."""
    await priced(state, sim, tmp_path, charged=True)
    await sim.configure(latency={"kind": "fixed", "s": 30})
    body = {"defaults": {"model": "flux-sim", "width": 256, "height": 256}}
    body["jobs"] = [{"prompt": "calm"}]  # type: ignore[assignment]
    batch_id = await submit(client, caller, body)
    running = asyncio.create_task(run_until_idle(state, wait_for_deferred=True))
    remote_id = await submitted(state, batch_id)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        canceled = await http.post(
            f"/v1/predictions/{remote_id}/cancel", headers={"authorization": "Bearer sim-token"}
        )
        assert canceled.status_code == 200, canceled.text
    await running

    [(job, attempt)] = await attempts_of(state, batch_id)
    assert (job.status, attempt.error_code) == ("failed", "canceled")
    assert attempt.cost_usd == job.cost_usd == Decimal(0)


async def submitted(state: State, batch_id: str) -> str:
    """The prediction id once the job has been submitted (the dispatcher runs meanwhile)."""
    for _ in range(400):
        async with state.sessionmaker() as session:
            remote_id = await session.scalar(select(Job.remote_id).where(Job.batch_id == batch_id))
        if remote_id:
            return remote_id
        await asyncio.sleep(0.05)
    raise AssertionError("the job was never submitted")
