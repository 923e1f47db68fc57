"""One callback route per account, /v1/callbacks/{account}, dispatching on the account's
kind; /v1/callbacks/<kind> still answers for every account of that kind."""

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

SECRETS = {"studio": "DARKROOM_TEST_STUDIO_SECRET", "backup": "DARKROOM_TEST_BACKUP_SECRET"}


def account(secret_env: str) -> dict[str, object]:
    return {
        "kind": "replicate",
        "base_url": "http://127.0.0.1:9",  # never called: the secrets are in the environment
        "token_env": "DARKROOM_TEST_CALLBACK_TOKEN",
        "webhook_secret_env": secret_env,
    }


@pytest.fixture
async def secrets(state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {name: new_webhook_secret() for name in SECRETS}
    for name, env in SECRETS.items():
        monkeypatch.setenv(env, values[name])
    config = {
        "providers": {name: account(env) for name, env in SECRETS.items()},
        "models": {"flux": {"provider": "studio", "ref": "black-forest-labs/flux-schnell"}},
    }
    await use_config(state, json.dumps(config), tmp_path)
    return values


async def post_signed(client: httpx.AsyncClient, path: str, secret: str) -> httpx.Response:
    body = json.dumps({"id": "p1", "status": "processing"}).encode()
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    return await client.post(path, content=body, headers=headers)


async def test_each_account_verifies_its_own_callbacks(
    client: httpx.AsyncClient, secrets: dict[str, str]
) -> None:
    ok = await post_signed(client, "/v1/callbacks/studio", secrets["studio"])
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"status": "ignored"}  # no job waits for p1
    # The other account's secret does not pass on this account's route.
    forged = await post_signed(client, "/v1/callbacks/studio", secrets["backup"])
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "callback_rejected"


async def test_the_kind_route_still_takes_any_account_of_the_kind(
    client: httpx.AsyncClient, secrets: dict[str, str]
) -> None:
    for name in SECRETS:
        response = await post_signed(client, "/v1/callbacks/replicate", secrets[name])
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", ["nobody", "local"])
async def test_an_account_that_takes_no_callbacks_is_a_404(
    client: httpx.AsyncClient, secrets: dict[str, str], name: str
) -> None:
    response = await post_signed(client, f"/v1/callbacks/{name}", secrets["studio"])
    assert response.status_code == 404
    assert name in response.json()["error"]["message"]
