"""Routes end to end: a job names a route, the route picks the model (first, cheapest,
weighted; conditions; health), the job runs on it, and the job records why."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from service.catalog.health import cooldown_key
from service.models import JobAttempt
from service.state import State
from service.worker import run_until_idle
from tests.batches.test_capabilities import LOCAL, jobs_of, local_config, refused
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import use_config

SMALL = {"width": 64, "height": 64}
MODELS: dict[str, dict[str, Any]] = {
    "text-only": {**LOCAL, "max_reference_images": 0, "price": {"per_image": 0.003}},
    "restyler": {**LOCAL, "max_reference_images": 2, "price": {"per_image": 0.01}},
    "clip": {**LOCAL, "media": "video", "price": {"per_second": 0.05}},
    "big": {**LOCAL, "price": {"per_megapixel": 0.01}},
    # The local renderer takes no mask, so the task routed on here is controlnet.
    "controller": {
        **LOCAL,
        "tasks": ["text-to-image", "controlnet"],
        "max_reference_images": 1,
        "price": {"per_image": 0.02},
    },
    "pricey": {**LOCAL, "price": {"per_image": 0.04}},
    "thrifty": {**LOCAL, "price": {"per_image": 0.001}, "sizes": {"aspect_ratios": ["1:1"]}},
    "middling": {**LOCAL, "price": {"per_image": 0.002}},
}
ROUTES: dict[str, Any] = {
    "hybrid": {
        "candidates": [
            {"model": "restyler", "when": {"has_reference_images": True}},
            {"model": "clip", "when": {"media": "video"}},
            {"model": "big", "when": {"width_gt": 1024}},
            {"model": "controller", "when": {"task": "controlnet"}},
            {"model": "text-only"},
        ],
        "fallbacks": ["middling", "text-only"],
    },
    "cheap": {
        "strategy": "cheapest",
        "candidates": [{"model": "pricey"}, {"model": "thrifty"}, {"model": "middling"}],
    },
    "spread": {
        "strategy": "weighted",
        "candidates": [{"model": "middling", "weight": 1}, {"model": "pricey", "weight": 3}],
    },
    "healthy": {"candidates": [{"model": "pricey"}, {"model": "middling"}]},
}


async def attempt_models(state: State, job_id: str) -> list[str | None]:
    async with state.sessionmaker() as session:
        query = (
            select(JobAttempt.model)
            .where(JobAttempt.job_id == uuid.UUID(job_id))
            .order_by(JobAttempt.number)
        )
        return list((await session.execute(query)).scalars())


async def test_first_takes_the_first_candidate_whose_condition_and_capabilities_fit(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    body = {
        "defaults": {"model": "hybrid"},
        "jobs": [
            {"prompt": "a plain cover", **SMALL},
            {"prompt": "restyle it", **SMALL, "input": {"job": 0}},
            {"prompt": "a clip", **SMALL, "duration_s": 1, "fps": 4},
            {"prompt": "a wide banner", "width": 1280, "height": 64},
            # restyler takes the reference but not the task: passed over.
            {"prompt": "follow the pose", **SMALL, "task": "controlnet", "input": {"job": 0}},
        ],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(routed)
    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded"] * 5, [j["error"] for j in jobs]
    chosen = ["text-only", "restyler", "clip", "big", "controller"]
    assert [job["model"] for job in jobs] == chosen
    assert [job["route"] for job in jobs] == ["hybrid"] * 5
    for job, model in zip(jobs, chosen, strict=True):
        assert await attempt_models(routed, job["id"]) == [model]
        assert job["params"]["routing"]["model"] == model
        assert job["params"]["routing"]["strategy"] == "first"

    plain, restyled, clip, banner, controlled = (job["params"]["routing"] for job in jobs)
    assert restyled["reason"] == (
        "first candidate whose condition (has_reference_images) and capabilities fit"
    )
    assert restyled["skipped"] == []  # first: only the candidates before the one taken
    assert plain["reason"] == "first candidate whose capabilities fit"
    assert {s["model"]: s["reason"] for s in plain["skipped"]} == {
        "restyler": "condition has_reference_images=true does not hold",
        "clip": "condition media=video does not hold",
        "big": "condition width_gt=1024 does not hold (width is 64)",
        "controller": "condition task=controlnet does not hold",
    }
    assert clip["reason"] == "first candidate whose condition (media) and capabilities fit"
    assert banner["reason"] == "first candidate whose condition (width_gt) and capabilities fit"
    passed_over = controlled["skipped"][0]
    assert passed_over["model"] == "restyler"
    assert passed_over["reason"].startswith("cannot: task: model 'restyler' does ")
    # The route's fallbacks, not the model's; a model is never its own fallback.
    assert [hop["model"] for hop in jobs[0]["params"]["fallbacks"]] == ["middling"]
    assert [hop["model"] for hop in jobs[1]["params"]["fallbacks"]] == ["middling"]
    skipped = jobs[1]["params"]["routing"]["skipped_fallbacks"]
    assert skipped[0]["model"] == "text-only"
    assert skipped[0]["reason"].startswith("cannot: reference_images:")


async def test_a_candidate_whose_condition_holds_but_that_cannot_is_passed_over(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    refs = ["https://example.com/a.png", "https://example.com/b.png"]
    jobs = [
        # Two reference images and a parent's output: restyler takes 2, text-only none.
        {"prompt": "three refs", "model": "hybrid", **SMALL, "reference_images": refs},
        {"prompt": "x", "model": "text-only", **SMALL},
    ]
    jobs[0]["input"] = {"job": 1}
    details = await refused(client, caller, jobs)
    assert list(details) == ["jobs[0].model"]
    message = details["jobs[0].model"]
    assert "route 'hybrid'" in message
    assert "restyler: cannot: reference_images:" in message
    assert "clip: condition media=video does not hold" in message
    assert "text-only: cannot:" in message


async def test_cheapest_takes_the_lowest_estimate_among_those_that_fit(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    body = {
        "defaults": {"model": "cheap"},
        "jobs": [{"prompt": "square", **SMALL}, {"prompt": "wide", "width": 128, "height": 64}],
    }
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    assert response.json()["estimate_by_model"] == {"thrifty": 0.001, "middling": 0.002}
    batch_id = response.json()["id"]
    await run_until_idle(routed)
    square, wide = await jobs_of(client, caller, batch_id)
    assert (square["model"], wide["model"]) == ("thrifty", "middling")
    assert (square["status"], wide["status"]) == ("succeeded", "succeeded")
    assert await attempt_models(routed, wide["id"]) == ["middling"]
    assert (
        square["params"]["routing"]["reason"] == "cheapest candidate that fits ($0.001000 per job)"
    )
    [skipped] = wide["params"]["routing"]["skipped"]
    assert skipped["model"] == "thrifty"
    assert skipped["reason"].startswith("cannot: width:")


async def test_weighted_spreads_jobs_among_the_candidates(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    body = {"defaults": {"model": "spread", **SMALL}, "jobs": [{"prompt": "p"}] * 40}
    batch_id = await submit(client, caller, body)
    await run_until_idle(routed)
    jobs = await jobs_of(client, caller, batch_id)
    assert {job["status"] for job in jobs} == {"succeeded"}
    counts = Counter(job["model"] for job in jobs)
    # 1:3 by weight; both used (all 40 on one has a chance of about 1 in 100,000).
    assert set(counts) == {"middling", "pricey"}, counts
    for job in jobs[:3]:
        assert await attempt_models(routed, job["id"]) == [job["model"]]
        assert job["params"]["routing"]["reason"].startswith("chosen at random by weight")


async def test_a_cooling_down_candidate_is_skipped_unless_nothing_else_fits(
    client: httpx.AsyncClient, caller: Caller, routed: State
) -> None:
    await routed.redis.set(cooldown_key("pricey"), "1", px=41_000)
    batch_id = await submit(
        client, caller, {"jobs": [{"prompt": "p", "model": "healthy", **SMALL}]}
    )
    await run_until_idle(routed)
    [job] = await jobs_of(client, caller, batch_id)
    assert (job["model"], job["status"]) == ("middling", "succeeded")
    assert await attempt_models(routed, job["id"]) == ["middling"]
    [skipped] = job["params"]["routing"]["skipped"]
    assert skipped["model"] == "pricey"
    assert skipped["reason"].startswith("cooling down for ")
    assert skipped["reason"].endswith(" s")

    await routed.redis.set(cooldown_key("middling"), "1", px=41_000)
    batch_id = await submit(
        client, caller, {"jobs": [{"prompt": "p", "model": "healthy", **SMALL}]}
    )
    [job] = await jobs_of(client, caller, batch_id)
    assert job["model"] == "pricey"  # the first that fits, all cooling down: run anyway
    reason = job["params"]["routing"]["reason"]
    assert "every candidate that fits is cooling down, so it runs anyway" in reason


async def test_a_video_candidate_with_durations_takes_a_job_that_asks_none(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    models = {**MODELS, "seedance": {**LOCAL, "media": "video", "durations": [5, 10]}}
    routes = {
        "moving": {
            "candidates": [
                {"model": "seedance", "when": {"media": "video"}},
                {"model": "text-only"},
            ]
        }
    }
    await use_config(state, local_config(models, routes), tmp_path)
    body = {"jobs": [{"prompt": "a clip", "model": "moving", "media": "video", **SMALL}]}
    [job] = await jobs_of(client, caller, await submit(client, caller, body))
    assert (job["model"], job["route"]) == ("seedance", "moving")
    assert job["params"]["duration_s"] == 5
    assert job["params"]["mapped"] == {"duration_s": {"asked": None, "sent": 5}}


async def test_a_task_that_contradicts_the_inputs_is_refused_once_on_the_task(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    """Not once per candidate under `model`: no candidate could change it."""
    await use_config(state, local_config(MODELS, ROUTES), tmp_path)
    details = await refused(
        client, caller, [{"prompt": "paint over", "model": "hybrid", **SMALL, "task": "inpaint"}]
    )
    assert details == {"jobs[0].task": "inpaint needs a mask"}


async def test_a_candidate_still_refuses_an_option_it_does_not_take(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    """Only fallbacks leave options behind; a route picks a candidate that takes them."""
    models = {**MODELS, "fussy": {**LOCAL, "options": {}}}
    routes = {"strict": {"candidates": [{"model": "fussy"}, {"model": "middling"}]}}
    await use_config(state, local_config(models, routes), tmp_path)
    body = {"jobs": [{"prompt": "p", "model": "strict", **SMALL, "options": {"steps": 2}}]}
    [job] = await jobs_of(client, caller, await submit(client, caller, body))
    assert job["model"] == "middling"
    [skipped] = job["params"]["routing"]["skipped"]
    assert skipped == {
        "model": "fussy",
        "reason": "cannot: options.steps: model 'fussy' takes no option 'steps'; "
        "it takes no options",
    }
