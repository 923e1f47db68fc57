"""/metrics after a batch ran through the local renderer and a simulated OpenAI account
that answers 429s: the 429s are counted, the latency histograms filled, the cost by
model is the batch's cost, and the state (jobs, queue depths, slots) is read live."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, use_config
from tests.metrics.scraping import names, scrape, total, value

LOCAL_JOBS = 3
OPENAI_JOBS = 4

# The names dashboards and alerts are written against: renaming one breaks them.
STABLE_NAMES = {
    "darkroom_http_request_duration_seconds_bucket",
    "darkroom_http_request_duration_seconds_count",
    "darkroom_http_request_duration_seconds_sum",
    "darkroom_provider_request_duration_seconds_bucket",
    "darkroom_provider_request_duration_seconds_count",
    "darkroom_provider_request_duration_seconds_sum",
    "darkroom_provider_rate_limited_total",
    "darkroom_limiter_wait_seconds_count",
    "darkroom_jobs",
    "darkroom_cost_usd_total",
    "darkroom_queue_depth",
    "darkroom_account_effective_rate",
    "darkroom_account_configured_rate",
    "darkroom_account_slots_in_use",
    "darkroom_account_max_concurrent",
    "darkroom_account_blocked_seconds",
    "darkroom_task_queue_depth",
    "darkroom_metrics_source_up",
}


def config(sim_url: str) -> str:
    return json.dumps(
        {
            "providers": {
                "openai": {
                    "kind": "openai",
                    "base_url": sim_url + "/v1",
                    "token_env": SIM_TOKEN_ENV,
                    "timeout_s": 5,
                },
                # Paced, so that every local job takes a rate token (the limiter's wait).
                "local": {
                    "kind": "local",
                    "limits": {"rate_per_s": 500, "burst": 50, "max_concurrent": 8},
                },
            },
            "models": {
                "gpt-sim": {
                    "provider": "openai",
                    "ref": "gpt-image-1",
                    "price": {"per_image": 0.04},
                },
                "local/priced": {
                    "provider": "local",
                    "ref": "procedural",
                    "price": {"per_image": 0.01},
                },
            },
        }
    )


@pytest.fixture
async def sim(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SimulatorHandle]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig()) as handle:
        await use_config(state, config(handle.url), tmp_path)
        yield handle


async def test_a_batch_shows_in_the_scrape(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    sim: SimulatorHandle,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The provider allows 2/s with no burst; Darkroom was told nothing: it gets 429s.
    await sim.configure(rate_per_s=2, burst=1, rate_limit_hint="none")
    before = await scrape(client)
    jobs = [{"prompt": f"fox {n}", "model": "gpt-sim"} for n in range(OPENAI_JOBS)]
    for job in jobs:
        job.update(width=1024, height=1024)  # what the simulated gpt-image-1 takes
    jobs += [{"prompt": f"tile {n}", "model": "local/priced"} for n in range(LOCAL_JOBS)]
    batch_id = await submit(
        client, caller, {"defaults": {"width": 256, "height": 256}, "jobs": jobs}
    )

    queued = await scrape(client)
    assert value(queued, "darkroom_jobs", state="queued", model="gpt-sim") == OPENAI_JOBS
    assert value(queued, "darkroom_queue_depth", account="openai", priority="bulk") == OPENAI_JOBS
    assert value(queued, "darkroom_queue_depth", account="local", priority="bulk") == LOCAL_JOBS
    assert value(queued, "darkroom_queue_depth", account="local", priority="realtime") == 0

    await run_until_idle(state, wait_for_deferred=True)
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    stats = await sim.stats()
    assert stats["rate_limited"] > 0
    assert delta("darkroom_provider_rate_limited_total", account="openai") == stats["rate_limited"]
    latency = "darkroom_provider_request_duration_seconds_count"
    assert delta(latency, account="openai", operation="generate", outcome="ok") == OPENAI_JOBS
    assert (
        delta(latency, account="openai", operation="generate", outcome="rate_limited")
        == stats["rate_limited"]
    )
    assert delta(latency, account="local", operation="generate", outcome="ok") == LOCAL_JOBS
    assert (
        delta(
            "darkroom_provider_request_duration_seconds_sum",
            account="local",
            operation="generate",
            outcome="ok",
        )
        > 0
    )
    inf_bucket = "darkroom_provider_request_duration_seconds_bucket"
    assert (
        delta(inf_bucket, account="local", operation="generate", outcome="ok", le="+Inf")
        == LOCAL_JOBS
    )
    assert delta("darkroom_limiter_wait_seconds_count", account="local") == LOCAL_JOBS

    batch = (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).json()
    assert batch["status"] == "succeeded"
    assert total(after, "darkroom_cost_usd_total") == pytest.approx(batch["cost_usd"])
    assert value(after, "darkroom_cost_usd_total", model="gpt-sim") == pytest.approx(
        0.04 * OPENAI_JOBS
    )
    assert value(after, "darkroom_cost_usd_total", model="local/priced") == pytest.approx(
        0.01 * LOCAL_JOBS
    )

    assert value(after, "darkroom_jobs", state="succeeded", model="gpt-sim") == OPENAI_JOBS
    assert value(after, "darkroom_jobs", state="succeeded", model="local/priced") == LOCAL_JOBS
    assert value(after, "darkroom_jobs", state="queued", model="gpt-sim") == 0
    assert total(after, "darkroom_queue_depth") == 0
    assert value(after, "darkroom_account_slots_in_use", account="openai") == 0
    assert value(after, "darkroom_account_configured_rate", account="local") == 500
    # The account has no configured rate; the 429s cut it to a rate of its own.
    assert value(after, "darkroom_account_effective_rate", account="openai") > 0
    assert value(after, "darkroom_metrics_source_up", source="postgres") == 1
    assert value(after, "darkroom_metrics_source_up", source="redis") == 1
    assert STABLE_NAMES <= names(after), STABLE_NAMES - names(after)

    # Each 429's line in the worker's log names its job, batch and account.
    lines = [line for line in capfd.readouterr().err.splitlines() if "job_attempt_failed" in line]
    assert len(lines) == stats["rate_limited"]
    for line in lines:
        assert f"batch_id={batch_id}" in line
        assert "job_id=" in line
        assert "account=openai" in line
