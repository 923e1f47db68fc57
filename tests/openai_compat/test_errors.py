"""Errors under /openai/v1 come in OpenAI's shape with OpenAI's status codes, and only
there: the rest of the API keeps Darkroom's. In process (no worker): fast."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.state import State
from tests.conftest import Caller

GENERATIONS = "/openai/v1/images/generations"


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert "details" not in error
    assert error["message"]
    return dict(error)


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "x", "size": "huge"}, "size"),
    ({"prompt": "x", "size": "8192x8192"}, "size"),
    ({"prompt": "x", "size": "32x32"}, "size"),
    ({"prompt": "x", "n": 11}, "n"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "output_format": "gif"}, "output_format"),
    ({"prompt": "x", "response_format": "base64"}, "response_format"),
    ({"prompt": "x", "stream": True}, "stream"),
    ({"prompt": "x", "colour": "red"}, "colour"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "model": "gpt-image-1", "quality": "ultra"}, "quality"),
    ({"prompt": "x", "model": "gpt-image-1", "background": "plaid"}, "background"),
]


async def test_bad_parameters_are_400s_naming_the_param(
    client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # nothing is sent: every body is refused
    for body, param in BAD_BODIES:
        response = await client.post(GENERATIONS, json=body, headers=caller.headers)
        error = openai_error(response, 400)
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), (body, error)
        if param == "size":  # said in words, not as the schema's pattern
            assert "WIDTHxHEIGHT" in error["message"], error
            assert "(?:" not in error["message"], error
    # Nothing was created.
    batches = await client.get("/v1/batches", headers=caller.headers)
    assert batches.json()["items"] == []


async def test_unknown_model_is_404_model_not_found(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post(
        GENERATIONS, json={"prompt": "x", "model": "dall-e-9"}, headers=caller.headers
    )
    error = openai_error(response, 404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer dk_nope"}])
async def test_missing_or_bad_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(GENERATIONS, json={"prompt": "x"}, headers=headers)
    assert openai_error(response, 401)["code"] == "invalid_api_key"


async def test_what_the_middleware_refuses_is_in_openai_shape_too(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    # The body guard, before any route: NUL cannot be stored.
    response = await client.post(
        GENERATIONS,
        content=b'{"prompt": "a\\u0000b"}',
        headers=caller.headers | {"content-type": "application/json"},
    )
    assert openai_error(response, 400)["param"] == "prompt"
    # No such route.
    response = await client.get("/openai/v1/images/variations", headers=caller.headers)
    openai_error(response, 404)
    # Malformed JSON.
    response = await client.post(
        GENERATIONS, content=b"{", headers=caller.headers | {"content-type": "application/json"}
    )
    openai_error(response, 400)


async def test_the_rest_of_the_api_keeps_darkrooms_shape(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post("/v1/batches", json={"jobs": []}, headers=caller.headers)
    assert response.status_code == 422
    assert set(response.json()["error"]) == {"code", "message", "details"}
    response = await client.get("/v1/nothing-here")
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_a_wait_that_runs_out_names_the_batch_and_keeps_the_work(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.openai_wait_timeout_s = 0.2  # and no worker runs here
    response = await client.post(
        GENERATIONS, json={"prompt": "a fox", "size": "64x64"}, headers=caller.headers
    )
    error = openai_error(response, 504)
    assert error["code"] == "timeout"
    assert error["batch_id"] in error["message"]
    assert response.headers["x-should-retry"] == "false"  # a retry would make it twice
    batch = await client.get(f"/v1/batches/{error['batch_id']}", headers=caller.headers)
    assert batch.json()["counts"]["queued"] == 1
    assert batch.json()["priority"] == "realtime"


async def test_an_idempotency_key_waits_for_the_same_images(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.openai_wait_timeout_s = 0.1
    headers = caller.headers | {"Idempotency-Key": "fox-1"}
    first = await client.post(GENERATIONS, json={"prompt": "a fox"}, headers=headers)
    again = await client.post(GENERATIONS, json={"prompt": "a fox"}, headers=headers)
    assert first.json()["error"]["batch_id"] == again.json()["error"]["batch_id"]


async def test_an_edit_without_an_image_names_image(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    response = await client.post(
        "/openai/v1/images/edits", data={"prompt": "x"}, headers=caller.headers
    )
    assert openai_error(response, 400)["param"] == "image"
