"""Model health on a real Redis: error rate and latency over the last attempts, the
cooldown once a model fails too often (and the clean slate after it), Redis away, and
outcomes recorded by real jobs going through the engine."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from service.catalog import health
from service.catalog.config import Health
from service.providers.base import (
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.scripted import ScriptedProvider, install, run_attempt

MODEL = "acme/flux"
OTHER = "acme/other"


async def outcomes(state: State, config: Health, model: str, results: list[int | None]) -> None:
    """Record each: a latency (ms) is a success, None a failure."""
    for result in results:
        await health.record(state.redis, config, model, ok=result is not None, latency_ms=result)


async def test_error_rate_and_latency_over_the_window(state: State) -> None:
    config = Health(window=5, min_attempts=5, threshold=0.9)
    # Seven outcomes: the first two fall out of a window of five.
    await outcomes(state, config, MODEL, [None, None, 100, None, 300, 200, 400])

    seen = (await health.snapshot(state.redis, config, [MODEL, OTHER]))[MODEL]

    assert seen.attempts == 5
    assert seen.failures == 1
    assert seen.error_rate == 0.2
    assert seen.latency_ms_mean == 250.0
    assert seen.latency_ms_p50 == 200
    assert seen.latency_ms_p95 == 400
    assert not seen.cooled_down


async def test_a_model_with_no_attempts_shows_nothing(state: State) -> None:
    seen = await health.snapshot(state.redis, Health(), [OTHER])
    assert seen[OTHER] == health.ModelHealth()
    assert seen[OTHER].error_rate is None
    assert seen[OTHER].latency_ms_p50 is None


async def test_failures_cool_a_model_down_only_once_there_are_min_attempts(
    state: State,
) -> None:
    config = Health(window=20, threshold=0.5, min_attempts=6, cooldown_s=600)
    # Five failures in a row: too few attempts to judge.
    await outcomes(state, config, MODEL, [None] * 5)
    assert await health.cooled_down(state.redis, [MODEL]) == {}
    # The sixth: 6 of 6 failed.
    cooled = await health.record(state.redis, config, MODEL, ok=False, latency_ms=50)
    assert cooled is True

    left = await health.cooled_down(state.redis, [MODEL, OTHER])
    assert list(left) == [MODEL]
    assert 0 < left[MODEL] <= 600
    seen = (await health.snapshot(state.redis, config, [MODEL]))[MODEL]
    assert seen.cooled_down
    assert 0 < seen.cooled_down_for_s <= 600
    # The window was cleared, and outcomes while cooling down are not counted.
    assert seen.attempts == 0
    await outcomes(state, config, MODEL, [None, 100])
    assert (await health.snapshot(state.redis, config, [MODEL]))[MODEL].attempts == 0


async def test_below_the_threshold_no_cooldown(state: State) -> None:
    config = Health(window=10, threshold=0.5, min_attempts=4, cooldown_s=600)
    # 4 failures of 9 is under half (and so was every share on the way).
    await outcomes(state, config, MODEL, [10, 10, 10, None, 10, None, 10, None, None])
    assert await health.cooled_down(state.redis, [MODEL]) == {}
    # The fifth makes 5 of 10: at the threshold.
    assert await health.record(state.redis, config, MODEL, ok=False, latency_ms=None)
    assert MODEL in await health.cooled_down(state.redis, [MODEL])


async def test_after_its_cooldown_a_model_starts_with_a_clean_slate(state: State) -> None:
    config = Health(window=4, threshold=0.5, min_attempts=2, cooldown_s=0.05)
    await outcomes(state, config, MODEL, [None, None])
    assert MODEL in await health.cooled_down(state.redis, [MODEL])
    for _ in range(200):  # the key expires by itself
        if not await health.cooled_down(state.redis, [MODEL]):
            break
        await asyncio.sleep(0.01)
    assert await health.cooled_down(state.redis, [MODEL]) == {}
    seen = (await health.snapshot(state.redis, config, [MODEL]))[MODEL]
    assert (seen.attempts, seen.cooled_down) == (0, False)
    # Had the two failures stayed, a third would cool it down again; alone, it is one
    # attempt, under min_attempts.
    assert not await health.record(state.redis, config, MODEL, ok=False, latency_ms=None)
    assert await health.cooled_down(state.redis, [MODEL]) == {}


@pytest.fixture
async def redis_down() -> AsyncIterator[Redis]:
    """A client of a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_away_means_healthy_and_nothing_recorded(redis_down: Redis) -> None:
    assert await health.cooled_down(redis_down, [MODEL]) == {}
    assert await health.record(redis_down, Health(), MODEL, ok=False, latency_ms=5) is False
    seen = await health.snapshot(redis_down, Health(), [MODEL])
    assert seen == {MODEL: health.ModelHealth()}


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (ProviderPermanentError("content_policy", "refused"), False),
        (ProviderPermanentError("invalid_input", "bad size"), False),
        (ProviderRetryableError("timeout", "no answer"), True),
        (ProviderPermanentError("unknown_model", "gone"), True),
        (ProviderRateLimited("slow down"), False),
        (ProviderPermanentError("auth", "bad token"), False),
        (ProviderPermanentError("input_not_found", "no upload"), False),
        (ProviderPermanentError("parent_failed", "parent"), False),
        (ProviderPermanentError("budget_exceeded", "over"), False),
        (ProviderRetryableError("storage_unavailable", "disk"), False),
    ],
)
def test_which_failures_count_against_the_model(error: Exception, counts: bool) -> None:
    assert isinstance(error, ProviderPermanentError | ProviderRetryableError)
    assert health.blames_model(error) is counts


async def job_id_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> uuid.UUID:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return uuid.UUID(response.json()["items"][0]["id"])


async def test_jobs_through_the_engine_record_their_outcomes(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    errors: list[Exception] = [
        ProviderRetryableError("upstream_503", "busy"),
        ProviderRateLimited("slow down", retry_after_s=0),
    ]
    install(state, ScriptedProvider(errors=errors), max_attempts=5)
    body = {"jobs": [{"prompt": "x", "model": "test/scripted", "width": 64, "height": 64}]}
    batch_id = await submit(client, caller, body)
    job_id = await job_id_of(client, caller, batch_id)
    await state.dispatch.queue("scripted").purge(batch_id)  # run by hand below

    await run_attempt(state, job_id)  # 503: the model's failure
    seen = (await health.snapshot(state.redis, state.registry.health, ["test/scripted"]))[
        "test/scripted"
    ]
    assert (seen.attempts, seen.failures) == (1, 1)

    await run_attempt(state, job_id)  # 429: the account's, not counted
    await run_attempt(state, job_id)  # success, with its latency
    job = (await client.get(f"/v1/jobs/{job_id}", headers=caller.headers)).json()
    assert job["status"] == "succeeded"
    seen = (await health.snapshot(state.redis, state.registry.health, ["test/scripted"]))[
        "test/scripted"
    ]
    assert (seen.attempts, seen.failures, seen.error_rate) == (2, 1, 0.5)
    assert seen.latency_ms_p50 is not None


async def test_a_model_failing_through_the_engine_is_cooled_down(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.registry.health = Health(window=4, threshold=0.5, min_attempts=2, cooldown_s=600)
    errors: list[Exception] = [ProviderPermanentError("model_not_found", "gone")] * 2
    install(state, ScriptedProvider(errors=errors))
    job = {"prompt": "x", "model": "test/scripted"}
    await submit(client, caller, {"jobs": [job, job]})
    await run_until_idle(state)

    assert "test/scripted" in await health.cooled_down(state.redis, ["test/scripted"])
