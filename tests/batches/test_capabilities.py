"""What a model can do, checked at submit through the API: a job asking for what its
model cannot do is refused naming the job and the field; what can be mapped is mapped,
and recorded on the job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from service.models import Batch, Job
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.jobs.sim_accounts import use_config

LOCAL = {"provider": "local", "ref": "procedural"}
MODELS: dict[str, dict[str, Any]] = {
    "text-only": {**LOCAL, "max_reference_images": 0, "price": {"per_image": 0.002}},
    "square": {**LOCAL, "sizes": {"aspect_ratios": ["1:1", "4:3"]}},
    "wide": {**LOCAL, "sizes": {"aspect_ratios": ["1:1", "16:9", "9:16"]}},
    "latent": {**LOCAL, "sizes": {"min": 256, "max": 2048, "multiple_of": 64}},
    "listed": {**LOCAL, "sizes": {"list": ["1024x1024", "1536x1024", "1024x1536"]}},
    "stepped": {**LOCAL, "options": {"steps": {"type": "int", "min": 1, "max": 4}}},
    "clip": {**LOCAL, "media": "video", "durations": {"min": 1, "max": 5}, "fps": [8, 24]},
}


def local_config(
    models: dict[str, dict[str, Any]] | None = None, routes: dict[str, Any] | None = None
) -> str:
    """A DARKROOM_CONFIG whose models all run on the built-in local renderer, each with
    its own name, capabilities and price."""
    config = {
        "providers": {"local": {"kind": "local"}},
        "models": MODELS if models is None else models,
        "routes": routes or {},
    }
    return json.dumps(config)  # JSON is YAML


async def refused(
    client: httpx.AsyncClient, caller: Caller, jobs: list[dict[str, Any]]
) -> dict[str, str]:
    """Submit jobs that must be refused; returns field -> message of every detail."""
    response = await client.post("/v1/batches", json={"jobs": jobs}, headers=caller.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    details = {d["field"]: d["message"] for d in error["details"]}
    assert len(details) == len(error["details"]), error  # no message twice
    return details


async def jobs_of(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> list[Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    return list(response.json()["items"])


async def test_each_capability_refuses_naming_the_job_and_field(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    details = await refused(
        client,
        caller,
        [
            {
                "prompt": "restyle",
                "model": "text-only",
                "reference_images": ["https://example.com/a.png"],
            },
            {"prompt": "a cover", "model": "square", "width": 1920, "height": 1080},
            {"prompt": "fast", "model": "stepped", "options": {"guidance": 3.5}},
            {"prompt": "slow", "model": "stepped", "options": {"steps": 50}},
            {"prompt": "a long clip", "model": "clip", "duration_s": 10, "fps": 8},
            {"prompt": "fine", "model": "wide", "width": 1920, "height": 1080},
            {"prompt": "a still from a clip model", "model": "clip", "media": "image"},
        ],
    )
    assert set(details) == {
        "jobs[0].reference_images",
        "jobs[1].width",
        "jobs[2].options.guidance",
        "jobs[3].options.steps",
        "jobs[4].duration_s",
        "jobs[6].media",
    }
    assert "text-only" in details["jobs[0].reference_images"]
    assert "16:9" in details["jobs[1].width"]
    assert "1:1, 4:3" in details["jobs[1].width"]
    assert "steps" in details["jobs[2].options.guidance"]
    assert "1" in details["jobs[3].options.steps"]
    assert "50" in details["jobs[3].options.steps"]
    assert "10 s" in details["jobs[4].duration_s"]
    async with local.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 0


async def test_a_chain_into_a_model_that_takes_no_image_names_the_input(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    details = await refused(
        client,
        caller,
        [
            {"prompt": "a", "model": "wide", "width": 256, "height": 256},
            {"prompt": "b", "model": "text-only", "input": {"job": 0}},
        ],
    )
    assert list(details) == ["jobs[1].input"]


async def test_a_task_the_model_lacks_is_refused(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    details = await refused(
        client,
        caller,
        [
            {
                "prompt": "paint it",
                "model": "wide",
                "task": "controlnet",
                "reference_images": ["https://example.com/pose.png"],
            }
        ],
    )
    assert list(details) == ["jobs[0].task"]
    assert (
        details["jobs[0].task"] == "model 'wide' does text-to-image, image-to-image, not controlnet"
    )


async def test_a_task_that_contradicts_the_inputs_is_refused(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    await use_config(state, local_config(), tmp_path)
    reference = ["https://example.com/a.png"]
    details = await refused(
        client,
        caller,
        [
            {"prompt": "paint over", "model": "wide", "task": "inpaint"},
            {"prompt": "restyle", "model": "wide", "task": "image-to-image"},
            {
                "prompt": "a cover",
                "model": "wide",
                "task": "text-to-image",
                "reference_images": reference,
            },
            {"prompt": "animate", "model": "clip", "task": "image-to-video"},
        ],
    )
    assert details == {
        "jobs[0].task": "inpaint needs a mask",
        "jobs[1].task": "image-to-image needs a reference image",
        "jobs[2].task": "text-to-image takes no reference images; use image-to-image",
        "jobs[3].task": "image-to-video needs a reference image",
    }


async def test_sizes_are_mapped_and_the_mapping_recorded(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    body = {
        "jobs": [
            {"prompt": "a cover", "model": "wide", "width": 1920, "height": 1080},
            {"prompt": "latent", "model": "latent", "width": 1000, "height": 600},
            {"prompt": "listed", "model": "listed", "width": 1200, "height": 800},
            {"prompt": "as asked", "model": "latent", "width": 512, "height": 512},
        ]
    }
    batch_id = await submit(client, caller, body)
    wide, latent, listed, exact = await jobs_of(client, caller, batch_id)
    assert wide["params"]["aspect_ratio"] == "16:9"
    assert wide["params"]["mapped"] == {"size": {"asked": "1920x1080", "sent": "16:9"}}
    assert (latent["params"]["width"], latent["params"]["height"]) == (1024, 576)
    assert latent["params"]["mapped"] == {"size": {"asked": "1000x600", "sent": "1024x576"}}
    assert (listed["params"]["width"], listed["params"]["height"]) == (1536, 1024)
    assert listed["params"]["mapped"]["size"]["sent"] == "1536x1024"
    assert "mapped" not in exact["params"]  # nothing changed, nothing recorded
    assert "fallbacks" not in exact["params"]
    assert "routing" not in exact["params"]

    await run_until_idle(local)
    jobs = await jobs_of(client, caller, batch_id)
    assert [job["status"] for job in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
    output = jobs[1]["output"]
    assert (output["width"], output["height"]) == (1024, 576)  # made at the mapped size


async def test_a_task_given_is_stored_and_an_implied_one_is_not(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    body = {
        "defaults": {"model": "wide", "width": 512, "height": 512},
        "jobs": [{"prompt": "a", "task": "text-to-image"}, {"prompt": "b"}],
    }
    batch_id = await submit(client, caller, body)
    first, second = await jobs_of(client, caller, batch_id)
    assert first["params"]["task"] == "text-to-image"
    assert "task" not in second["params"]
    async with local.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 2


async def test_fallbacks_are_fitted_at_submit(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    models = {
        **MODELS,
        "primary": {
            **LOCAL,
            "sizes": {"aspect_ratios": ["16:9"]},
            "fallbacks": ["square", "latent", "text-only"],
        },
    }
    await use_config(state, local_config(models), tmp_path)
    body = {"jobs": [{"prompt": "a cover", "model": "primary", "width": 1920, "height": 1080}]}
    [job] = await jobs_of(client, caller, await submit(client, caller, body))
    params = job["params"]
    assert params["aspect_ratio"] == "16:9"
    # square cannot take 16:9; latent can, at its own size, without the ratio.
    assert params["fallbacks"] == [
        {
            "model": "latent",
            # Every key a model of the chain sets, set (None deletes), so a hop's params
            # never depend on the hops before it.
            "params": {
                "width": 1920,
                "height": 1088,
                "aspect_ratio": None,
                "mapped": {"size": {"asked": "1920x1080", "sent": "1920x1088"}},
            },
        },
        {
            # A model that takes any size: the size as asked, nothing mapped.
            "model": "text-only",
            "params": {"width": 1920, "height": 1080, "aspect_ratio": None, "mapped": None},
        },
    ]
    [skipped] = params["routing"]["skipped_fallbacks"]
    assert skipped["model"] == "square"
    assert skipped["reason"].startswith("cannot: width:")


SEEDANCE = {
    **LOCAL,
    "media": "video",
    "durations": [5, 10],
    "fps": {"min": 4, "max": 8},
    "price": {"per_second": 0.05},
}


async def test_a_video_default_the_model_cannot_make_is_mapped_not_refused(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    """A job that asks no duration gets the model's nearest one, not a 422 for the 4 s it
    never asked; a duration the job asks is still refused."""
    await use_config(state, local_config({"seedance": SEEDANCE}), tmp_path)
    body = {"jobs": [{"model": "seedance", "prompt": "a clip", "width": 64, "height": 64}]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    assert response.json()["estimate_usd"] == 0.25  # 5 s at $0.05, not 4 s
    [job] = await jobs_of(client, caller, response.json()["id"])
    assert (job["params"]["duration_s"], job["params"]["fps"]) == (5, 8)
    assert job["params"]["mapped"] == {
        "duration_s": {"asked": None, "sent": 5},
        "fps": {"asked": None, "sent": 8},
    }
    await run_until_idle(state)
    [job] = await jobs_of(client, caller, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]

    details = await refused(
        client, caller, [{"model": "seedance", "prompt": "a clip", "duration_s": 4}]
    )
    assert details == {"jobs[0].duration_s": "model 'seedance' makes clips of 5 or 10 s, not 4 s"}
    # A duration set in the batch's defaults is asked too.
    response = await client.post(
        "/v1/batches",
        json={"defaults": {"fps": 24}, "jobs": [{"model": "seedance", "prompt": "a clip"}]},
        headers=caller.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "jobs[0].fps"


def hopped(params: dict[str, Any], *hops: dict[str, Any]) -> dict[str, Any]:
    """The job's params after moving along these hops, as service.jobs.fallbacks.hop
    applies them (a value None deletes the key)."""
    out = {k: v for k, v in params.items() if k not in ("fallbacks", "routing")}
    for hop in hops:
        for key, value in hop["params"].items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
    return out


async def test_a_fallback_leaves_behind_what_it_does_not_take(
    client: httpx.AsyncClient, caller: Caller, state: State, tmp_path: Path
) -> None:
    """Options are model-specific and a seed or negative prompt is not every model's:
    a fallback gets what it takes, records what it left behind, and is not dropped from
    the chain because the job gave them. The job's own model still refuses them."""
    steps = {"num_inference_steps": {"type": "int", "min": 1, "max": 4}}
    models = {
        "fluxy": {**LOCAL, "options": steps, "fallbacks": ["narrow", "gpty", "open"]},
        # Takes the option, but not the value given: still checked, so skipped.
        "narrow": {**LOCAL, "options": {"num_inference_steps": {"type": "int", "max": 1}}},
        "gpty": {
            **LOCAL,
            "seed": False,
            "negative_prompt": False,
            "options": {"quality": {"type": "string", "values": ["low", "high"]}},
        },
        # Declares no options: every option passes through.
        "open": {**LOCAL},
    }
    await use_config(state, local_config(models), tmp_path)
    job = {
        "prompt": "a cover",
        "model": "fluxy",
        "width": 64,
        "height": 64,
        "seed": 7,
        "negative_prompt": "blurry",
        "options": {"num_inference_steps": 2},
    }
    [stored] = await jobs_of(client, caller, await submit(client, caller, {"jobs": [job]}))
    params = stored["params"]
    assert params["options"] == {"num_inference_steps": 2}
    assert params["negative_prompt"] == "blurry"
    gpty, opened = params["fallbacks"]
    assert gpty == {
        "model": "gpty",
        "params": {
            "options": None,
            "negative_prompt": None,
            "mapped": {
                "dropped_options": ["num_inference_steps"],
                "dropped": ["negative_prompt", "seed"],
            },
        },
    }
    # Every key another hop sets, set back: a hop does not depend on the one before it.
    assert opened == {
        "model": "open",
        "params": {
            "options": {"num_inference_steps": 2},
            "negative_prompt": "blurry",
            "mapped": None,
        },
    }
    assert hopped(params, gpty, opened) == hopped(params, opened)
    assert hopped(params, opened) == hopped(params)
    [skipped] = params["routing"]["skipped_fallbacks"]
    assert skipped["model"] == "narrow"
    assert skipped["reason"].startswith("cannot: options.num_inference_steps:")

    strict = [
        {"prompt": "a", "model": "gpty", "options": {"num_inference_steps": 2}},
        {"prompt": "a", "model": "gpty", "seed": 7, "negative_prompt": "blurry"},
    ]
    assert set(await refused(client, caller, strict)) == {
        "jobs[0].options.num_inference_steps",
        "jobs[1].seed",
        "jobs[1].negative_prompt",
    }
