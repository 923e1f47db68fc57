"""A provider's callback, validly signed, still gets a 422 naming the field for what
cannot be stored or parsed: a signature proves who sent a body, not that it is sound."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from service.kit.signing import new_webhook_secret, sign
from service.state import State
from tests.jobs.sim_accounts import use_config

SECRET_ENV = "DARKROOM_TEST_CALLBACK_SECRET"
CONFIG = {
    "providers": {
        "replicate": {
            "kind": "replicate",
            "base_url": "http://127.0.0.1:9",  # never called: the secret is in the environment
            "token_env": "DARKROOM_TEST_CALLBACK_TOKEN",
            "webhook_secret_env": SECRET_ENV,
        }
    },
    "models": {"flux": {"provider": "replicate", "ref": "black-forest-labs/flux-schnell"}},
}


@pytest.fixture
async def secret(state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    secret = new_webhook_secret()
    monkeypatch.setenv(SECRET_ENV, secret)
    await use_config(state, json.dumps(CONFIG), tmp_path)
    return secret


async def post_signed(client: httpx.AsyncClient, secret: str, body: bytes) -> httpx.Response:
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    return await client.post("/v1/callbacks/replicate", content=body, headers=headers)


def prediction(**fields: object) -> bytes:
    body = {"id": "p1", "status": "processing", "input": {"prompt": "x"}, **fields}
    return json.dumps(body).encode()  # ensure_ascii: surrogates and NUL as escapes


async def test_a_signed_sound_callback_is_answered(client: httpx.AsyncClient, secret: str) -> None:
    """The control: the signing in these tests is right, so a 422 below is the body's."""
    response = await post_signed(client, secret, prediction())
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ignored"}
    forged = await post_signed(client, new_webhook_secret(), prediction())
    assert forged.status_code == 401, forged.text


BAD_CALLBACKS = {
    "a lone surrogate as the id": (prediction(id="\ud800"), "id", "validation_error"),
    "NUL in the id": (prediction(id="p\x00"), "id", "validation_error"),
    "a lone surrogate in the input": (
        prediction(input={"prompt": "a\udc00"}),
        "input.prompt",
        "validation_error",
    ),
    "a lone surrogate in a key": (prediction(input={"\ud800": 1}), "input", "validation_error"),
    "NaN in the metrics": (
        prediction().replace(b'"input"', b'"metrics": {"predict_time": NaN}, "input"'),
        "metrics.predict_time",
        "validation_error",
    ),
    "an array 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "body", "invalid_json"),
    "an output 100,000 deep": (
        prediction().replace(
            b'"input"', b'"output": ' + b"[" * 100_000 + b"]" * 100_000 + b', "input"'
        ),
        "body",
        "invalid_json",
    ),
}


@pytest.mark.parametrize(
    ("body", "field", "code"), BAD_CALLBACKS.values(), ids=BAD_CALLBACKS.keys()
)
async def test_a_signed_unsound_callback_is_rejected(
    client: httpx.AsyncClient, secret: str, body: bytes, field: str, code: str
) -> None:
    response = await post_signed(client, secret, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"][0]["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error
