"""Stored prompt templates (/v1/templates, versioned) and batch templates in JSON bodies:
rendered per job from its variables, the rendered prompt stored, the template kept."""

from __future__ import annotations

import httpx

from service.state import State
from tests.batches.files.posting import counts, rejected, stored_batch, stored_jobs
from tests.conftest import Caller, make_caller

PHOTO = {"prompt": "E-commerce photo: {{ name }}, {{ color }}", "output_name": "{{ sku }}"}


async def test_posting_a_name_again_makes_its_next_version(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    h = caller.headers
    first = await client.post("/v1/templates", json={"name": "photo", **PHOTO}, headers=h)
    assert first.status_code == 201, first.text
    assert (first.json()["version"], first.json()["ref"]) == (1, "photo@1")
    second_body = {
        "name": "photo",
        "prompt": "Studio shot of {{ name }}",
        "negative_prompt": "blur",
    }
    second = await client.post("/v1/templates", json=second_body, headers=h)
    assert (second.json()["version"], second.json()["ref"]) == (2, "photo@2")
    await client.post("/v1/templates", json={"name": "banner", "prompt": "{{ x }}"}, headers=h)

    latest = (await client.get("/v1/templates/photo", headers=h)).json()
    assert (latest["version"], latest["prompt"]) == (2, "Studio shot of {{ name }}")
    old = (await client.get("/v1/templates/photo/versions/1", headers=h)).json()
    assert (old["prompt"], old["output_name"]) == (PHOTO["prompt"], "{{ sku }}")
    versions = (await client.get("/v1/templates/photo/versions", headers=h)).json()
    assert [v["version"] for v in versions] == [1, 2]
    listing = (await client.get("/v1/templates", params={"limit": 1}, headers=h)).json()
    assert [t["ref"] for t in listing["items"]] == ["banner@1"]
    rest = await client.get("/v1/templates", params={"cursor": listing["next_cursor"]}, headers=h)
    assert [t["ref"] for t in rest.json()["items"]] == ["photo@2"]

    missing = await client.get("/v1/templates/photo/versions/3", headers=h)
    assert missing.status_code == 404
    other = await make_caller(state, "other")
    assert (await client.get("/v1/templates/photo", headers=other.headers)).status_code == 404


async def test_a_template_that_does_not_parse_is_refused_with_its_line(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    body = {"name": "broken", "prompt": "line one\n{{ name "}
    details = rejected(await client.post("/v1/templates", json=body, headers=caller.headers))
    assert "(line 2)" in details["prompt"], details
    bad_name = {"name": "a/b", "prompt": "x"}
    response = await client.post("/v1/templates", json=bad_name, headers=caller.headers)
    assert response.status_code == 422


async def test_a_json_batch_renders_each_job_from_its_variables(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "template": PHOTO,
        "templates": {"wide": {"prompt": "A banner of {{ name }}", "negative_prompt": "text"}},
        "jobs": [
            {"variables": {"sku": "A-1", "name": "mug", "color": "red"}},
            {"template": "wide", "variables": {"name": "cup"}, "output_name": "banner"},
            {"prompt": "my own prompt", "variables": {"sku": "A-3", "name": "x", "color": "y"}},
        ],
    }
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    mug, banner, own = await stored_jobs(state, response.json()["id"])
    assert (mug.prompt, mug.params["output_name"]) == ("E-commerce photo: mug, red", "A-1.png")
    assert mug.variables == {"sku": "A-1", "name": "mug", "color": "red"}
    assert (banner.prompt, banner.params["output_name"]) == ("A banner of cup", "banner.png")
    assert banner.params["negative_prompt"] == "text"
    assert (own.prompt, own.params["output_name"]) == ("my own prompt", "A-3.png")
    kept = (await stored_batch(state, response.json()["id"])).templates
    assert kept is not None
    assert kept["template"]["prompt"] == PHOTO["prompt"]
    assert kept["templates"]["wide"]["negative_prompt"] == "text"


async def test_a_batch_names_a_stored_template_by_version_or_latest(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    h = caller.headers
    await client.post("/v1/templates", json={"name": "photo", **PHOTO}, headers=h)
    await client.post("/v1/templates", json={"name": "photo", "prompt": "v2 {{ name }}"}, headers=h)
    variables = {"sku": "A-1", "name": "mug", "color": "red"}
    for ref, prompt, kept_ref in [
        ("photo@1", "E-commerce photo: mug, red", "photo@1"),
        ("photo", "v2 mug", "photo@2"),
    ]:
        body = {"template": ref, "jobs": [{"variables": variables}]}
        response = await client.post("/v1/batches", json=body, headers=h)
        assert response.status_code == 202, response.text
        (job,) = await stored_jobs(state, response.json()["id"])
        assert job.prompt == prompt
        kept = (await stored_batch(state, response.json()["id"])).templates
        assert kept is not None
        assert kept["template"]["ref"] == kept_ref


async def test_a_batch_that_cannot_render_is_refused_naming_each_job(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "template": PHOTO,
        "jobs": [
            {"variables": {"sku": "A-1", "name": "mug", "color": "red"}},
            {"variables": {"sku": "A-2", "name": "cup"}},
            {"template": "nope", "variables": {}},
            {"variables": {"sku": " ", "name": "a", "color": "b"}},
        ],
    }
    details = rejected(await client.post("/v1/batches", json=body, headers=caller.headers))
    assert details == {
        "jobs[1].variables": "prompt template: UndefinedError: 'color' is undefined",
        "jobs[2].template": "the batch has no template named 'nope'",
        "jobs[3].output_name": "the output_name template rendered nothing for this job's variables",
    }
    unknown = {"template": "nothing@4", "jobs": [{"variables": {}}]}
    details = rejected(await client.post("/v1/batches", json=unknown, headers=caller.headers))
    assert details == {"template": "no stored template 'nothing@4'"}
    dry = await client.post(
        "/v1/batches", json=body, params={"dry_run": "true"}, headers=caller.headers
    )
    assert dry.status_code == 422
    assert await counts(state) == (0, 0)


async def test_a_sandboxed_template_cannot_reach_python(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = {
        "template": {"prompt": "{{ name.__class__.__mro__ }}"},
        "jobs": [{"variables": {"name": "x"}}],
    }
    details = rejected(await client.post("/v1/batches", json=body, headers=caller.headers))
    assert list(details) == ["jobs[0].variables"]
    assert await counts(state) == (0, 0)
