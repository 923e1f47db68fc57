"""Text that cannot be stored, text that shows nothing, bodies not declared JSON and bad
Idempotency-Keys: each a 422 naming the field or header, and nothing created."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.state import State
from tests.batches.test_bad_input import assert_rejected, batch, job, stored
from tests.conftest import Caller

# What JSON can carry and Postgres cannot keep, in every text field: each body is sent
# as escaped JSON, as a client would send it (a lone surrogate cannot be encoded).
UNSTORABLE_TEXT = {
    "NUL": "a\x00b",
    "a lone high surrogate": "a\ud800b",
    "a lone low surrogate": "\udfff",
    "a reversed surrogate pair": "x\udc00\ud800",
}
TEXT_FIELDS: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "prompt": (lambda t: batch(job(), job(prompt=t)), "jobs[1].prompt"),
    "name": (lambda t: batch(name=t), "name"),
    "output_name": (lambda t: batch(job(output_name=t)), "jobs[0].output_name"),
    "model": (lambda t: batch(job(model=t)), "jobs[0].model"),
    "model in defaults": (lambda t: batch(defaults={"model": t}), "defaults.model"),
    "callback_url": (lambda t: batch(callback_url=f"https://example.com/{t}"), "callback_url"),
    "a metadata value": (lambda t: batch(metadata={"a": ["ok", {"b": t}]}), "metadata.a[1].b"),
    "a metadata key": (lambda t: batch(metadata={t: 1}), "metadata"),
    "a job metadata value": (lambda t: batch(job(metadata={"k": t})), "jobs[0].metadata.k"),
    "a job metadata key": (lambda t: batch(job(metadata={"k": {t: 1}})), "jobs[0].metadata.k"),
    "defaults metadata": (lambda t: batch(defaults={"metadata": {"a": t}}), "defaults.metadata.a"),
    "an unknown field's name": (lambda t: batch(**{t: 1}), "body"),
}


@pytest.mark.parametrize("text", UNSTORABLE_TEXT.values(), ids=UNSTORABLE_TEXT.keys())
@pytest.mark.parametrize(("make", "field"), TEXT_FIELDS.values(), ids=TEXT_FIELDS.keys())
async def test_unstorable_text_is_rejected_in_every_field(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    make: Callable[[str], dict[str, Any]],
    field: str,
    text: str,
) -> None:
    raw = json.dumps(make(text))  # ensure_ascii: \ud800 and \u0000 as escapes
    headers = {**caller.headers, "content-type": "application/json"}
    response = await client.post("/v1/batches", content=raw, headers=headers)
    error = assert_rejected(response, field)
    assert len(error["details"]) == 1, error
    assert await stored(state) == (0, 0)


async def test_the_reported_surrogate_is_rejected_as_sent(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    headers = {**caller.headers, "content-type": "application/json"}
    raw = rb'{"jobs":[{"prompt":"a\ud800b"}]}'
    response = await client.post("/v1/batches", content=raw, headers=headers)
    error = assert_rejected(response, "jobs[0].prompt")
    assert "\\ud800" in error["details"][0]["message"]
    assert await stored(state) == (0, 0)


async def test_escaped_surrogate_pairs_and_unicode_are_kept(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    body = batch(job(prompt="a cat 😀 猫", metadata={"😀": "\u00e9\U0001f600"}), name="tést 😀")
    headers = {**caller.headers, "content-type": "application/json"}
    response = await client.post("/v1/batches", content=json.dumps(body), headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "tést 😀"
    jobs = await client.get(f"/v1/batches/{response.json()['id']}/jobs", headers=caller.headers)
    item = jobs.json()["items"][0]
    assert (item["prompt"], item["metadata"]) == ("a cat 😀 猫", {"😀": "é😀"})


BLANK_PROMPTS = {
    "zero-width space": "\u200b",
    "zero-width joiners and a BOM": "\u200d\u200c\ufeff",
    "no-break and ideographic spaces": "\u00a0\u3000\u202f",
    "control characters": "\x01\x1f\x7f",
    "a soft hyphen between spaces": " \u00ad ",
}


@pytest.mark.parametrize("prompt", BLANK_PROMPTS.values(), ids=BLANK_PROMPTS.keys())
async def test_a_prompt_that_shows_nothing_is_empty(
    client: httpx.AsyncClient, caller: Caller, state: State, prompt: str
) -> None:
    response = await client.post(
        "/v1/batches", json=batch(job(prompt=prompt)), headers=caller.headers
    )
    assert_rejected(response, "jobs[0].prompt")
    assert await stored(state) == (0, 0)


NOT_JSON = {
    "no Content-Type": None,
    "text/plain": "text/plain",
    "a form, as curl -d sends": "application/x-www-form-urlencoded",
}
# multipart/form-data is a batch file's form now: tests/batches/files.


@pytest.mark.parametrize("content_type", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_a_body_that_is_not_declared_json_names_the_header(
    client: httpx.AsyncClient, caller: Caller, state: State, content_type: str | None
) -> None:
    headers = dict(caller.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    response = await client.post("/v1/batches", content=json.dumps(batch()), headers=headers)
    error = assert_rejected(response, "Content-Type", code="not_json")
    assert "Content-Type: application/json" in error["message"]
    assert await stored(state) == (0, 0)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/x+json"])
async def test_json_with_a_charset_or_a_json_suffix_is_accepted(
    client: httpx.AsyncClient, caller: Caller, content_type: str
) -> None:
    headers = {**caller.headers, "content-type": content_type}
    response = await client.post("/v1/batches", content=json.dumps(batch()), headers=headers)
    assert response.status_code == 202, response.text


BAD_IDEMPOTENCY_KEYS = {
    "empty": "",
    "spaces": "   ",
    "tabs": "\t\t",
    "a no-break space": b"\xa0",
    "256 characters": "k" * 256,
}


@pytest.mark.parametrize("key", BAD_IDEMPOTENCY_KEYS.values(), ids=BAD_IDEMPOTENCY_KEYS.keys())
async def test_a_bad_idempotency_key_is_rejected(
    client: httpx.AsyncClient, caller: Caller, state: State, key: str | bytes
) -> None:
    headers = {**caller.headers, "idempotency-key": key}
    response = await client.post("/v1/batches", json=batch(), headers=headers)
    assert_rejected(response, "Idempotency-Key")
    assert await stored(state) == (0, 0)


async def test_an_idempotency_key_of_255_characters_is_kept(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    headers = {**caller.headers, "idempotency-key": "k" * 255}
    first = await client.post("/v1/batches", json=batch(), headers=headers)
    again = await client.post("/v1/batches", json=batch(), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert first.json()["id"] == again.json()["id"]


async def test_output_names_with_nothing_usable_are_named_by_index(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """Found by the fuzzer: two names that sanitise to nothing are no clash."""
    body = batch(job(output_name="©"), job(output_name="\U000cb08b"), job(output_name="..."))
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
