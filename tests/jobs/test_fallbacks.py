"""Fallbacks end to end, across three simulated providers (OpenAI, Replicate, fal): a job
moves to its next model when its model refuses it or runs out of attempts, never on a
429 or an account's error, never back to a model it tried; when every model fails it
fails with every reason and nothing is stored; and a create that may have made a
generation is looked for at its provider before the job may move (never paid twice)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Select, select

from service.db import session_scope
from service.jobs.tasks import reconcile_jobs
from service.models import Job, JobAttempt
from service.providers.base import ProviderRetryableError, RemoteHandle
from service.state import State
from service.worker import run_until_idle
from simulators import SimConfig, SimulatorHandle, run_simulator
from simulators.fal import FalHandle, FalSimConfig, run_fal
from tests.conftest import Caller, submit
from tests.jobs.recovery import create_then_die, job_and_attempts
from tests.jobs.sim_accounts import FAL_KEY_ENV, SIM_TOKEN_ENV, fal_account, use_config

# Their jobs are retried several times and waited for to the end.
pytestmark = pytest.mark.usefixtures("quick_retries")

GPT, FLUX, FAL = "gpt-fb", "flux-fb", "fal-fb"
PRICES = {GPT: "0.04", FLUX: "0.003", FAL: "0.025"}
SIZE = {"width": 1024, "height": 1024}


def chain_config(
    openai_url: str,
    replicate_url: str,
    fal_url: str,
    attempts: dict[str, int],
    deadline_s: float = 60.0,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> str:
    """An OpenAI, a Replicate and a fal account (each at its own simulator), one model each."""
    account = {"token_env": SIM_TOKEN_ENV, "timeout_s": 2}
    providers = {
        "openai": {"kind": "openai", "base_url": openai_url + "/v1", **account},
        "replicate": {"kind": "replicate", "base_url": replicate_url, **account},
        "fal": fal_account(fal_url),
    }
    refs = {
        GPT: ("openai", "gpt-image-1"),
        FLUX: ("replicate", "black-forest-labs/flux-schnell"),
        FAL: ("fal", "fal-ai/flux/dev"),
    }
    models = {
        name: {
            "provider": provider,
            "ref": ref,
            "price": {"per_image": float(PRICES[name])},
            "max_attempts": attempts.get(name, 2),
            "charged_on_failure": False,
            "deadline_s": deadline_s,
        }
        for name, (provider, ref) in refs.items()
    }
    for name, changes in (overrides or {}).items():
        models[name] |= changes
    return json.dumps({"providers": providers, "models": models})


class Sims:
    def __init__(self, openai: SimulatorHandle, replicate: SimulatorHandle, fal: FalHandle):
        self.openai, self.replicate, self.fal = openai, replicate, fal

    async def use(
        self,
        state: State,
        tmp_path: Path,
        deadline_s: float = 60.0,
        overrides: dict[str, dict[str, Any]] | None = None,
        **attempts: int,
    ) -> None:
        urls = (self.openai.url, self.replicate.url, self.fal.url)
        text = chain_config(*urls, attempts, deadline_s, overrides)
        await use_config(state, text, tmp_path)


@pytest.fixture
async def sims(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Sims]:
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    monkeypatch.setenv(FAL_KEY_ENV, "sim-fal-key")
    # One simulator per provider: the OpenAI one refuses "FORBIDDEN", the Replicate one
    # does not (its own content policy word is one no prompt here holds).
    replicate_config = SimConfig(content_policy_word="NEVER-IN-A-PROMPT")
    fal_config = FalSimConfig(run_s=0.05, concurrency=4, webhook_retries=0)
    async with (
        run_simulator(SimConfig()) as openai,
        run_simulator(replicate_config) as replicate,
        run_fal(fal_config) as fal,
    ):
        found = Sims(openai, replicate, fal)
        await found.use(state, tmp_path, **{FLUX: 3})
        yield found


async def one_job(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    model: str,
    fallbacks: list[dict[str, Any]],
    prompt: str = "a harbour at dawn",
) -> tuple[str, str]:
    """A job on `model` with these fallbacks (as submit writes them); (batch id, job id)."""
    batch_id = await submit(client, caller, {"jobs": [{"prompt": prompt, "model": model, **SIZE}]})
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    job_id = response.json()["items"][0]["id"]
    async with session_scope(state.sessionmaker) as session:
        job = await session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.params = {**job.params, "fallbacks": fallbacks}
    return batch_id, job_id


def stored_files(state: State, batch_id: str) -> list[Path]:
    folder = Path(state.settings.storage_dir) / batch_id
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


async def test_a_chain_across_three_providers_ends_on_the_one_that_works(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims
) -> None:
    # OpenAI refuses the prompt; every Replicate prediction fails (transiently); fal works.
    await sims.replicate.configure(prediction_failed=1.0)
    fallbacks = [
        {"model": FLUX, "params": {"aspect_ratio": "1:1"}},
        {"model": FAL, "params": {"aspect_ratio": None}},
    ]
    batch_id, job_id = await one_job(
        client, caller, state, GPT, fallbacks, prompt="a FORBIDDEN harbour"
    )
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert (job["model"], job["provider"]) == (FAL, "fal")
    assert job["error"] is None
    assert [(a["model"], a["provider"], a["outcome"]) for a in attempts] == [
        (GPT, "openai", "failed"),
        (FLUX, "replicate", "retry"),
        (FLUX, "replicate", "retry"),
        (FLUX, "replicate", "failed"),
        (FAL, "fal", "succeeded"),
    ]
    assert attempts[0]["error_code"] == "content_policy"
    assert [a["error_code"] for a in attempts[1:4]] == ["provider_failed"] * 3
    assert job["attempts"] == 1  # the fal model's own count
    hops = job["params"]["hops"]
    assert [(h["model"], h["account"], h["code"]) for h in hops] == [
        (GPT, "openai", "content_policy"),
        (FLUX, "replicate", "provider_failed"),
    ]
    assert hops[1]["attempts"] == 3
    assert job["params"]["fallbacks"] == []
    assert "aspect_ratio" not in job["params"]  # each hop's parameter changes applied
    # Only what was charged: failures cost nothing here, the image cost fal's price.
    assert [a["cost_usd"] for a in attempts] == [0, 0, 0, 0, float(PRICES[FAL])]
    async with state.sessionmaker() as session:
        row = await session.get(Job, uuid.UUID(job_id))
        assert row is not None
        rows = (await session.execute(_attempt_costs(job_id))).scalars().all()
    assert row.cost_usd == sum(rows, Decimal(0)) == Decimal(PRICES[FAL])
    assert len(stored_files(state, batch_id)) == 1
    assert (await sims.replicate.stats())["creations_accepted"] == 3


async def test_a_configured_chain_with_a_charged_failure_costs_what_was_charged(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    """The chain as a user writes it (the model's `fallbacks` in the configuration, the
    job submitted as usual), with a Replicate model that bills the predictions that ran
    and failed: the job costs those runs plus fal's image, and nothing for OpenAI's
    refusal."""
    overrides = {
        GPT: {"fallbacks": [FLUX, FAL]},
        FLUX: {"price": {"per_run_second": 0.0014}, "charged_on_failure": True},
    }
    await sims.use(state, tmp_path, overrides=overrides, **{FLUX: 2})
    await sims.replicate.configure(prediction_failed=1.0, latency={"kind": "fixed", "s": 0.3})
    job = {"prompt": "a FORBIDDEN harbour", "model": GPT, **SIZE}
    batch_id = await submit(client, caller, {"jobs": [job]})
    await run_until_idle(state, wait_for_deferred=True)

    [found] = (await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)).json()[
        "items"
    ]
    job_out, attempts = await job_and_attempts(client, caller, found["id"])
    assert job_out["status"] == "succeeded", job_out["error"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        (GPT, "failed"),
        (FLUX, "retry"),
        (FLUX, "failed"),
        (FAL, "succeeded"),
    ]
    async with state.sessionmaker() as session:
        rows = (await session.execute(_attempt_costs(found["id"]))).scalars().all()
        usage = (
            (
                await session.execute(
                    select(JobAttempt.usage).where(JobAttempt.job_id == uuid.UUID(found["id"]))
                )
            )
            .scalars()
            .all()
        )
        row = await session.get(Job, uuid.UUID(found["id"]))
        assert row is not None
    gpt, flux_1, flux_2, fal = rows
    assert gpt == 0  # a refusal is never charged
    # Each failed prediction is billed for the time it ran, as Replicate reported it.
    for cost, used in zip((flux_1, flux_2), usage[1:3], strict=True):
        assert used is not None
        assert used["predict_time"] > 0
        expected = (Decimal("0.0014") * Decimal(str(used["predict_time"]))).quantize(
            Decimal("0.000001")
        )
        assert cost == expected > 0
    assert fal == Decimal(PRICES[FAL])
    assert row.cost_usd == gpt + flux_1 + flux_2 + fal
    assert job_out["cost_usd"] == float(row.cost_usd)


def _attempt_costs(job_id: str) -> Select[tuple[Decimal]]:
    return select(JobAttempt.cost_usd).where(JobAttempt.job_id == uuid.UUID(job_id))


async def test_when_every_model_fails_the_job_fails_with_every_reason_and_stores_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    await sims.use(state, tmp_path, **{FLUX: 2})
    await sims.replicate.configure(prediction_failed=1.0)
    await sims.fal.outcome("nsfw", count=5)  # fal's safety checker flags what it makes
    fallbacks = [{"model": FLUX, "params": {}}, {"model": FAL, "params": {}}]
    batch_id, job_id = await one_job(
        client, caller, state, GPT, fallbacks, prompt="a FORBIDDEN lighthouse"
    )
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert job["output"] is None
    assert job["error"]["code"] == "content_policy"  # the last model's
    message = job["error"]["message"]
    # Every model's reason, in order (a provider's own message may hold "; " too).
    reasons = [
        f"{GPT}: content_policy: openai 400: ",
        f"; {FLUX}: provider_failed after 2 attempts: replicate: prediction ",
        f"; {FAL}: content_policy: fal: request ",
    ]
    assert message.startswith(reasons[0]), message
    where = [message.find(reason) for reason in reasons]
    assert -1 not in where, message
    assert where == sorted(where), message
    assert [a["model"] for a in attempts] == [GPT, FLUX, FLUX, FAL]
    assert sum(a["cost_usd"] for a in attempts) == 0
    # No placeholder, no file: nothing stored for the job or its batch.
    assert stored_files(state, batch_id) == []
    async with state.sessionmaker() as session:
        row = await session.get(Job, uuid.UUID(job_id))
        assert row is not None
        assert row.output_key is None
        assert row.cost_usd == 0
        assert row.model == FAL


async def test_a_429_storm_never_moves_the_job(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    # One attempt only: if a 429 counted, the first would send the job to OpenAI.
    await sims.use(state, tmp_path, **{FAL: 1})
    storm = 6
    headers = {"retry-after-ms": "20"}
    body = {"detail": "Too many requests"}
    await sims.fal.fault(
        method="POST", path="^/fal-ai", status=429, body=body, headers=headers, count=storm
    )
    _, job_id = await one_job(client, caller, state, FAL, [{"model": GPT, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert (job["model"], job["attempts"]) == (FAL, 1)
    assert {a["model"] for a in attempts} == {FAL}
    assert [a["outcome"] for a in attempts] == ["rate_limited"] * storm + ["succeeded"]
    assert "hops" not in job["params"]
    assert (await sims.openai.stats())["creations_by_provider"].get("openai", 0) == 0


async def test_an_auth_error_is_the_accounts_and_never_moves_the_job(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims
) -> None:
    await sims.openai.configure(token="rotated")  # every OpenAI request now answers 401
    _, job_id = await one_job(client, caller, state, GPT, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "auth"
    assert job["model"] == GPT
    assert [(a["model"], a["outcome"]) for a in attempts] == [(GPT, "failed")]
    assert (await sims.fal.stats()).get("submitted", 0) == 0


async def test_a_model_is_tried_once_however_often_the_list_names_it(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims
) -> None:
    # Both refuse the prompt; the list names the current model and each model twice.
    await sims.replicate.configure(content_policy_word="FORBIDDEN")
    fallbacks = [{"model": m, "params": {}} for m in (GPT, FLUX, GPT, FLUX)]
    _, job_id = await one_job(client, caller, state, GPT, fallbacks, prompt="FORBIDDEN fruit")
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert [a["model"] for a in attempts] == [GPT, FLUX]
    assert job["error"]["message"].count(f"{GPT}: ") == 1
    assert job["error"]["message"].count(f"{FLUX}: ") == 1
    assert [h["model"] for h in job["params"]["hops"]] == [GPT]


async def test_a_synchronous_provider_that_cannot_be_asked_moves_on_after_its_attempts(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims
) -> None:
    await sims.openai.configure(error_500=1.0)
    _, job_id = await one_job(client, caller, state, GPT, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        (GPT, "retry"),
        (GPT, "failed"),
        (FAL, "succeeded"),
    ]
    assert all(a["note"] is None for a in attempts)


async def test_a_lost_create_is_looked_for_before_the_job_may_move(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    """The create made a prediction but its answer was cut: the job's one attempt is
    used up, yet it does not move to fal (which would pay again): its next attempt looks
    at Replicate, finds the prediction and finishes with it."""
    await sims.use(state, tmp_path, **{FLUX: 1})
    await sims.replicate.configure(reset=1.0, latency={"kind": "fixed", "s": 0.2})
    _, job_id = await one_job(client, caller, state, FLUX, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["model"] == FLUX
    assert [(a["model"], a["outcome"]) for a in attempts] == [(FLUX, "retry"), (FLUX, "succeeded")]
    assert attempts[0]["error_code"] == "connection_error"
    assert attempts[0]["note"].startswith(f"not moved to {FAL} yet")
    assert attempts[1]["note"].startswith("resumed ")
    replicate = await sims.replicate.stats()
    assert replicate["creations_accepted"] == 1
    assert replicate["duplicate_submissions"] == 0
    assert (await sims.fal.stats()).get("submitted", 0) == 0


async def test_a_doubt_that_cannot_be_cleared_fails_the_job_rather_than_pay_again(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    """Replicate answers 503 (it may have made something): the look finds nothing, the
    create is sent again and again answers 503. The job fails on Replicate, saying why it
    did not move, instead of paying fal for what Replicate may be making."""
    await sims.use(state, tmp_path, **{FLUX: 1})
    await sims.replicate.configure(error_503=1.0)
    _, job_id = await one_job(client, caller, state, FLUX, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "server_error"
    assert f"not moved to {FAL}" in job["error"]["message"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [(FLUX, "retry"), (FLUX, "failed")]
    replicate = await sims.replicate.stats()
    assert replicate["requests_by_route"]["GET /v1/predictions"] == 1  # looked once
    assert (await sims.fal.stats()).get("submitted", 0) == 0


async def test_a_model_past_its_deadline_hands_the_job_on_at_once(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    """A deadline is the model's failure: the job moves with attempts left (a retry
    would wait as long again), and the overdue prediction is cancelled."""
    await sims.use(state, tmp_path, deadline_s=1.0, **{FLUX: 3})
    await sims.replicate.configure(latency={"kind": "fixed", "s": 60})
    _, job_id = await one_job(client, caller, state, FLUX, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [(FLUX, "failed"), (FAL, "succeeded")]
    assert attempts[0]["error_code"] == "deadline_exceeded"
    assert (await sims.replicate.stats())["cancels"] == 1


async def test_an_overdue_generation_that_cannot_be_cancelled_is_not_paid_for_again(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    sims: Sims,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its deadline, a prediction that Replicate would not cancel may still run and
    be billed: the job fails, saying so, rather than pay fal (or Replicate again)."""
    await sims.use(state, tmp_path, deadline_s=1.0, **{FLUX: 3})
    await sims.replicate.configure(latency={"kind": "fixed", "s": 60})

    async def refuse(handle: RemoteHandle) -> None:
        raise ProviderRetryableError("server_error", "replicate 503: cancel failed")

    monkeypatch.setattr(state.registry.providers["replicate"], "cancel", refuse)
    _, job_id = await one_job(client, caller, state, FLUX, [{"model": FAL, "params": {}}])
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "deadline_not_cancelled"
    assert "not paid for twice" in job["error"]["message"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [(FLUX, "failed")]
    assert (await sims.fal.stats()).get("submitted", 0) == 0


async def test_a_worker_that_died_mid_create_leaves_a_doubt_cleared_before_moving(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    """The job's only attempt made a prediction, then its worker died before storing the
    handle. The attempts are used up, but the job looks at Replicate before it may move:
    it finds the prediction and finishes with it; fal is never asked."""
    await sims.use(state, tmp_path, **{FLUX: 1})
    batch_id, job_id = await one_job(client, caller, state, FLUX, [{"model": FAL, "params": {}}])
    await state.dispatch.queue("replicate").purge(batch_id)
    await create_then_die(state, FLUX, job_id, max_attempts=1)

    state.settings.reconcile_stale_after_s = 0
    assert await reconcile_jobs(state) == 1
    await run_until_idle(state, wait_for_deferred=True)
    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        (FLUX, "abandoned"),
        (FLUX, "succeeded"),
    ]
    assert attempts[1]["note"].startswith("resumed ")
    assert (await sims.replicate.stats())["creations_accepted"] == 1
    assert (await sims.fal.stats()).get("submitted", 0) == 0


async def test_a_retried_job_starts_again_from_its_first_model_with_every_fallback(
    client: httpx.AsyncClient, caller: Caller, state: State, sims: Sims, tmp_path: Path
) -> None:
    await sims.use(state, tmp_path, **{FLUX: 1, FAL: 1})
    await sims.replicate.configure(prediction_failed=1.0)
    await sims.fal.outcome("nsfw", count=1)
    fallbacks = [{"model": FLUX, "params": {}}, {"model": FAL, "params": {}}]
    batch_id, job_id = await one_job(
        client, caller, state, GPT, fallbacks, prompt="a FORBIDDEN lighthouse"
    )
    await run_until_idle(state, wait_for_deferred=True)
    job, _ = await job_and_attempts(client, caller, job_id)
    assert (job["status"], job["model"]) == ("failed", FAL)

    await sims.replicate.configure(prediction_failed=0.0)  # Replicate works again
    response = await client.post(f"/v1/batches/{batch_id}/retry", headers=caller.headers)
    assert response.status_code == 202, response.text
    await run_until_idle(state, wait_for_deferred=True)

    job, attempts = await job_and_attempts(client, caller, job_id)
    assert job["status"] == "succeeded", job["error"]
    # From the first model again (OpenAI still refuses the prompt), then on to Replicate.
    assert [a["model"] for a in attempts] == [GPT, FLUX, FAL, GPT, FLUX]
    assert job["model"] == FLUX
    assert [h["model"] for h in job["params"]["hops"]] == [GPT]
    assert [f["model"] for f in job["params"]["fallbacks"]] == [FAL]
