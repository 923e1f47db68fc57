"""JSONL (one job object per line) and YAML (the pipeline shape) batches, and the
multipart form that carries any of them: errors by line (and column), nothing created."""

from __future__ import annotations

import json

import httpx
import pytest

from service.state import State
from tests.batches.files.posting import (
    JSONL,
    YAML,
    assert_details_start,
    counts,
    post_form,
    post_raw,
    rejected,
    stored_batch,
    stored_jobs,
)
from tests.conftest import Caller


async def test_jsonl_is_one_job_per_line_and_may_carry_variables(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    lines = [
        {"prompt": "a red bicycle", "width": 512, "output_name": "bike"},
        {"variables": {"thing": "kite"}, "seed": 4},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    response = await post_form(
        client,
        caller,
        ("jobs.jsonl", body, None),
        {"template": json.dumps({"prompt": "a {{ thing }} in the sky"}), "name": "sky"},
    )
    assert response.status_code == 202, response.text
    first, second = await stored_jobs(state, response.json()["id"])
    assert (first.prompt, first.params["output_name"], first.variables) == (
        "a red bicycle",
        "bike.png",
        None,
    )
    assert (second.prompt, second.params["seed"], second.variables) == (
        "a kite in the sky",
        4,
        {"thing": "kite"},
    )
    assert (await stored_batch(state, response.json()["id"])).name == "sky"


BAD_JSONL = {
    "a bad width": (
        '{"prompt": "a"}\n{"prompt": "b", "width": 100}\n',
        {'line 2, field "width"': "Input should be a multiple of 8"},
    ),
    "malformed JSON": ('{"prompt": "a"}\n\n{"prompt": \n', {"line 3": "malformed JSON: "}),
    "not an object": ('[{"prompt": "a"}]\n', {"line 1": "each line must be one job object"}),
    "NaN": ('{"prompt": "a", "metadata": {"x": NaN}}\n', {"line 1": "NaN is not a number"}),
    "NUL": (
        '{"prompt": "a\\u0000b"}\n',
        {'line 1, field "prompt"': "must not contain NUL"},
    ),
    "an unknown field": (
        '{"prompt": "a", "widht": 512}\n',
        {'line 1, field "widht"': "Extra inputs are not permitted"},
    ),
    "empty": ("\n\n", {"line 1": "the file is empty"}),
}


@pytest.mark.parametrize(("body", "expected"), BAD_JSONL.values(), ids=BAD_JSONL.keys())
async def test_a_bad_jsonl_file_is_refused_by_line(
    client: httpx.AsyncClient, caller: Caller, state: State, body: str, expected: dict[str, str]
) -> None:
    assert_details_start(rejected(await post_raw(client, caller, body, JSONL)), expected)
    assert await counts(state) == (0, 0)


PIPELINE = """\
name: spring campaign
priority: realtime
budget_usd: 5
metadata: {team: social}
defaults:
  width: 512
  height: 512
templates:
  photo:
    prompt: "E-commerce photo: {{ name }}, {{ color }}, studio lighting"
    output_name: "{{ sku }}"
  clip:
    prompt: "A slow turn of the {{ name }}"
    output_name: "{{ sku }}-clip"
jobs:
  - {template: photo, sku: A-1, name: mug, color: red}
  - template: clip
    model: clip
    duration_s: 2
    fps: 8
    variables: {sku: A-1, name: mug}
  - prompt: a plain job, no template
    launched: 2026-03-01
"""


async def test_a_yaml_pipeline_mixes_templates_images_and_videos(
    client: httpx.AsyncClient, caller: Caller, local: State
) -> None:
    response = await post_raw(client, caller, PIPELINE, YAML)
    assert response.status_code == 202, response.text
    out = response.json()
    assert (out["name"], out["priority"], out["budget_usd"]) == ("spring campaign", "realtime", 5)
    assert out["metadata"] == {"team": "social"}
    photo, clip, plain = await stored_jobs(local, out["id"])
    assert photo.prompt == "E-commerce photo: mug, red, studio lighting"
    assert photo.params["output_name"] == "A-1.png"
    assert (clip.model, clip.prompt, clip.params["output_name"]) == (
        "clip",
        "A slow turn of the mug",
        "A-1-clip.mp4",
    )
    assert clip.params["media"] == "video"
    assert plain.prompt == "a plain job, no template"
    assert plain.variables == {"launched": "2026-03-01"}  # a YAML date, as text
    templates = (await stored_batch(local, out["id"])).templates
    assert templates is not None
    assert set(templates["templates"]) == {"photo", "clip"}


BAD_YAML = {
    "a syntax error": ("jobs:\n  - prompt: a\n   width: 512\n", "line 3, column 4"),
    "a bad field": (
        "defaults: {width: 512}\njobs:\n  - prompt: a\n  - prompt: b\n    height: 100\n",
        'line 5, column 5 ("height")',
    ),
    "an unknown template": (
        "jobs:\n  - {prompt: a}\n  - {template: nope, x: 1}\n",
        'line 3, column 6 ("template")',
    ),
    "a missing variable": (
        "template: {prompt: 'a {{ thing }}'}\njobs:\n  - {thing: cat}\n  - {other: dog}\n",
        "line 4, column 5",
    ),
    "an unknown batch key": (
        "colour: red\njobs:\n  - {prompt: a}\n",
        'line 1, column 1 ("colour")',
    ),
    "no jobs": ("name: x\n", "jobs"),
    "not a mapping": ("- prompt: a\n", "line 1, column 1"),
    "a template that does not parse": (
        "template: {prompt: 'a {{ thing '}\njobs:\n  - {thing: cat}\n",
        'line 1, column 1 ("template',
    ),
    "aliases that expand past the bound": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 10)}]\n"
            for n in range(7)
        )
        + "jobs: [{prompt: p}]\n",
        "line 1, column 1",
    ),
}


@pytest.mark.parametrize(("body", "where"), BAD_YAML.values(), ids=BAD_YAML.keys())
async def test_a_bad_yaml_file_is_refused_by_line_and_column(
    client: httpx.AsyncClient, caller: Caller, state: State, body: str, where: str
) -> None:
    details = rejected(await post_raw(client, caller, body, YAML))
    assert any(field.startswith(where) for field in details), details
    assert await counts(state) == (0, 0)


async def test_the_form_names_what_it_cannot_use(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    details = rejected(
        await post_form(client, caller, ("jobs.txt", "prompt\na\n", "text/plain"), {"colour": "x"})
    )
    assert details['form field "colour"'] == "not a field this form takes"
    assert details['form field "file"'].startswith("cannot tell the file's format")
    no_file = {"name": (None, "x")}  # multipart, with a field and no file
    details = rejected(await client.post("/v1/batches", files=no_file, headers=caller.headers))
    assert details == {'form field "file"': "the batch file is missing"}
    details = rejected(
        await post_form(client, caller, ("a.csv", "prompt\na\n", None), {"batch": "{"})
    )
    assert list(details) == ['form field "batch"']
    assert await counts(state) == (0, 0)


async def test_a_json_body_sent_as_a_form_is_a_malformed_form(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    headers = {**caller.headers, "content-type": "multipart/form-data; boundary=x"}
    response = await client.post("/v1/batches", content=b'{"jobs": []}', headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {"invalid_form", "invalid_file"}
    assert await counts(state) == (0, 0)


async def test_json_bodies_are_still_json(client: httpx.AsyncClient, caller: Caller) -> None:
    """The file route takes only file content types; JSON keeps its own errors."""
    response = await client.post(
        "/v1/batches",
        content=b"prompt\na\n",
        headers={**caller.headers, "content-type": "text/plain"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "not_json"
